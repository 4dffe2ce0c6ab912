package registry

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/webhookd/webhookd/events"
)

// Failure is a delivery the retry policy gave up on, kept for inspection
// and manual retry.
type Failure struct {
	ID             string      `json:"id"` // the delivery id (webhook-id header)
	WebhookID      string      `json:"webhookId"`
	Workspace      string      `json:"-"`
	EventID        string      `json:"eventId"`
	EventType      events.Type `json:"eventType"`
	Subject        string      `json:"subject"`
	Attempts       int         `json:"attempts"`
	LastStatus     int         `json:"lastStatus"` // 0: no HTTP response
	LastError      string      `json:"lastError"`
	Reason         string      `json:"reason"` // max_attempts, max_age or gone
	FirstAttemptAt time.Time   `json:"firstAttemptAt"`
	LastAttemptAt  time.Time   `json:"lastAttemptAt"`
	Body           []byte      `json:"body"` // the event as published
}

// DefaultFailureRetention is how long a failure record is kept when
// Config.FailureRetention is zero: failurelog's default, so that local and
// shared records age alike.
const DefaultFailureRetention = 30 * 24 * time.Hour

// failureKey orders a webhook's failures by time, then id.
func failureKey(f Failure) []byte {
	k := make([]byte, 8, 8+len(f.ID))
	binary.BigEndian.PutUint64(k, uint64(f.LastAttemptAt.UnixNano()))
	return append(k, f.ID...)
}

// failureCutoff is the oldest last-attempt time (in failureKey's form)
// a record may have and still be kept.
func (s *Store) failureCutoff() int64 { return time.Now().Add(-s.failureTTL).UnixNano() }

// expired reports whether the record under key k is past the retention.
func expired(k []byte, cutoff int64) bool {
	return len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) < cutoff
}

// pruneExpired deletes b's records past the retention: the first ones, as
// keys sort by time. It returns how many went.
func pruneExpired(b *bolt.Bucket, cutoff int64) (int, error) {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil && expired(k, cutoff); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// RecordFailure keeps f, dropping the webhook's records past the retention
// and its oldest beyond the bound. Writes are batched (bbolt Batch) so a
// burst of give-ups costs few fsyncs. A webhook deleted meanwhile makes
// this a no-op. A zero LastAttemptAt is taken as now.
func (s *Store) RecordFailure(ctx context.Context, f Failure) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.LastAttemptAt.IsZero() {
		f.LastAttemptAt = time.Now()
	}
	cutoff := s.failureCutoff()
	v, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("registry: encode failure: %w", err)
	}
	err = s.db.Batch(func(tx *bolt.Tx) error {
		ws := tx.Bucket(bucketWebhooks).Bucket([]byte(f.Workspace))
		if ws == nil || ws.Get([]byte(f.WebhookID)) == nil {
			return nil
		}
		b, err := tx.Bucket(bucketFailures).CreateBucketIfNotExists([]byte(f.WebhookID))
		if err != nil {
			return err
		}
		// The same delivery failing again (after a manual retry) replaces
		// its older record.
		if err := deleteFailureByID(b, f.ID); err != nil {
			return err
		}
		if err := b.Put(failureKey(f), v); err != nil {
			return err
		}
		if _, err := pruneExpired(b, cutoff); err != nil {
			return err
		}
		// Count with a cursor: Bucket.Stats does not see this
		// transaction's own writes.
		n := 0
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		for k, _ := c.First(); k != nil && n > s.maxFailures; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
			n--
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: record failure %s: %w", f.ID, err)
	}
	return nil
}

func deleteFailureByID(b *bolt.Bucket, id string) error {
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) > 8 && string(k[8:]) == id {
			return c.Delete()
		}
	}
	return nil
}

// Failures lists the webhook's failures, newest first.
func (s *Store) Failures(ctx context.Context, workspace, webhookID string, limit int) ([]Failure, error) {
	if _, err := s.Get(ctx, workspace, webhookID); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	var out []Failure
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFailures).Bucket([]byte(webhookID))
		if b == nil {
			return nil
		}
		cutoff := s.failureCutoff()
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit && !expired(k, cutoff); k, v = c.Prev() {
			var f Failure
			if err := json.Unmarshal(v, &f); err != nil {
				return err
			}
			f.Workspace = workspace
			out = append(out, f)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: failures of %s: %w", webhookID, err)
	}
	return out, nil
}

// Failure returns one failure record of the workspace's webhook.
func (s *Store) Failure(ctx context.Context, workspace, webhookID, failureID string) (Failure, error) {
	if _, err := s.Get(ctx, workspace, webhookID); err != nil {
		return Failure{}, err
	}
	var f Failure
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFailures).Bucket([]byte(webhookID))
		if b == nil {
			return nil
		}
		cutoff := s.failureCutoff()
		return b.ForEach(func(k, v []byte) error {
			if found || len(k) <= 8 || !bytes.Equal(k[8:], []byte(failureID)) || expired(k, cutoff) {
				return nil
			}
			found = true
			return json.Unmarshal(v, &f)
		})
	})
	if err != nil {
		return Failure{}, fmt.Errorf("registry: failure %s: %w", failureID, err)
	}
	if !found {
		return Failure{}, fmt.Errorf("registry: failure %s: %w", failureID, ErrNotFound)
	}
	f.Workspace = workspace
	return f, nil
}

// DeleteFailure removes one failure record (after a manual retry).
func (s *Store) DeleteFailure(ctx context.Context, workspace, webhookID, failureID string) error {
	if _, err := s.Failure(ctx, workspace, webhookID, failureID); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFailures).Bucket([]byte(webhookID))
		if b == nil {
			return nil
		}
		return deleteFailureByID(b, failureID)
	})
	if err != nil {
		return fmt.Errorf("registry: delete failure %s: %w", failureID, err)
	}
	return nil
}

// PruneFailures deletes every webhook's failure records past the
// retention, and reports how many went. Reads never show such records
// anyway: this frees their room in the bbolt file for webhooks that have
// stopped failing. Open runs it once; RunFailurePruning runs it
// periodically.
func (s *Store) PruneFailures(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cutoff := s.failureCutoff()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFailures)
		var empty [][]byte
		err := fb.ForEachBucket(func(hook []byte) error {
			b := fb.Bucket(hook)
			pruned, err := pruneExpired(b, cutoff)
			n += pruned
			if err != nil {
				return err
			}
			if k, _ := b.Cursor().First(); k == nil {
				empty = append(empty, bytes.Clone(hook))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, hook := range empty {
			if err := fb.DeleteBucket(hook); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("registry: prune failures: %w", err)
	}
	return n, nil
}

// RunFailurePruning runs PruneFailures every tenth of the retention, at
// most hourly, until ctx ends; errors go to log. Expired records are
// hidden from reads at once, so the sweep only has to free their bytes
// eventually. A daemon keeping failure records in bbolt runs it.
func (s *Store) RunFailurePruning(ctx context.Context, log *slog.Logger) {
	tick := time.NewTicker(min(s.failureTTL/10, time.Hour))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n, err := s.PruneFailures(ctx); err != nil {
			if ctx.Err() == nil {
				log.Warn("pruning expired failure records failed", "err", err)
			}
		} else if n > 0 {
			log.Debug("expired failure records pruned", "records", n, "retention", s.failureTTL)
		}
	}
}

// DrainFailures hands every failure record stored in this bbolt file to
// fn, oldest first within each webhook, and deletes each record fn
// accepted (returned nil for). It moves the records of an instance
// upgraded from local to shared failure records (registry/failurelog)
// into the shared log; a later call resumes where an interrupted one
// stopped, and fn sees a record again only if it was not accepted.
//
// fn runs outside any bbolt transaction (it may take a network round
// trip), one webhook's records at a time. Its first error stops the
// drain and is returned, wrapped; the records not accepted stay. Records
// of a webhook no longer in the registry are deleted without calling fn:
// no API could show them.
func (s *Store) DrainFailures(ctx context.Context, fn func(Failure) error) error {
	var hooks [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFailures).ForEachBucket(func(k []byte) error {
			hooks = append(hooks, bytes.Clone(k))
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("registry: drain failures: %w", err)
	}
	for _, hook := range hooks {
		if err := s.drainWebhook(ctx, hook, fn); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) drainWebhook(ctx context.Context, hook []byte, fn func(Failure) error) error {
	type stored struct {
		key []byte
		f   Failure
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("registry: drain failures: %w", err)
	}
	var recs []stored
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFailures).Bucket(hook)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var f Failure
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("failure %q of webhook %s: %w", k, hook, err)
			}
			recs = append(recs, stored{bytes.Clone(k), f})
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("registry: drain failures: %w", err)
	}
	// The bbolt form leaves the workspace out (it is the webhook's).
	w, live := s.ix.Get(string(hook))
	var done [][]byte
	var fnErr error
	for _, r := range recs {
		if !live {
			done = append(done, r.key)
			continue
		}
		if err := ctx.Err(); err != nil {
			fnErr = err
			break
		}
		r.f.Workspace = w.Workspace
		if err := fn(r.f); err != nil {
			fnErr = fmt.Errorf("registry: drain failure %s of webhook %s: %w", r.f.ID, hook, err)
			break
		}
		done = append(done, r.key)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFailures)
		b := fb.Bucket(hook)
		if b == nil {
			return nil
		}
		for _, k := range done {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if k, _ := b.Cursor().First(); k == nil {
			return fb.DeleteBucket(hook)
		}
		return nil
	})
	if err != nil {
		return errors.Join(fnErr, fmt.Errorf("registry: drain failures of webhook %s: %w", hook, err))
	}
	return fnErr
}
