package apikeys

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
)

// Created is Create's answer: the record, and the key itself, which is
// shown this once and stored nowhere.
type Created struct {
	Record Record
	Key    string
}

// maxCASAttempts bounds Revoke's read-modify-write retries under
// concurrent writers of one record.
const maxCASAttempts = 5

// Create issues a key for workspace. expiry 0 means it never expires;
// otherwise it expires that long from now. It fails with ErrInvalid for a
// bad workspace or a negative expiry, and with ErrTooManyKeys when the
// workspace has Config.MaxActivePerWorkspace active keys already (a
// check against a fresh read of the bucket; two concurrent creations can
// overshoot it by one).
func (s *Store) Create(ctx context.Context, workspace string, expiry time.Duration) (Created, error) {
	if err := events.ValidateWorkspace(workspace); err != nil {
		return Created{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if expiry < 0 {
		return Created{}, fmt.Errorf("%w: expiry must not be negative, got %s", ErrInvalid, expiry)
	}
	kv, err := s.bucket(ctx)
	if err != nil {
		return Created{}, err
	}
	existing, err := s.list(ctx, kv, workspace)
	if err != nil {
		return Created{}, err
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	active := 0
	for _, r := range existing {
		if r.StateAt(now) == Active {
			active++
		}
	}
	if active >= s.cfg.MaxActivePerWorkspace {
		return Created{}, fmt.Errorf("%w: %s has %d (limit %d)", ErrTooManyKeys, workspace, active, s.cfg.MaxActivePerWorkspace)
	}
	for attempt := 0; ; attempt++ {
		id, key, err := newKey()
		if err != nil {
			return Created{}, err
		}
		h := hashKey(key)
		rec := Record{ID: id, Workspace: workspace, Hash: hex.EncodeToString(h[:]), CreatedAt: now}
		if expiry > 0 {
			rec.ExpiresAt = now.Add(expiry)
		}
		val, err := rec.encode()
		if err != nil {
			return Created{}, err
		}
		rev, err := kv.Create(ctx, id, val)
		if errors.Is(err, jetstream.ErrKeyExists) && attempt < 2 {
			continue // a 64-bit id collision: draw again
		}
		if err != nil {
			return Created{}, fmt.Errorf("apikeys: create %s: %w", id, unavailable(err))
		}
		s.applyLocal(rec, rev)
		expires := "never"
		if !rec.ExpiresAt.IsZero() {
			expires = rec.ExpiresAt.Format(time.RFC3339)
		}
		s.log.Info("api key created", "key_id", id, "workspace", workspace, "expires_at", expires)
		return Created{Record: rec, Key: key}, nil
	}
}

// List returns the records of workspace ("" lists every workspace),
// oldest first, whatever their state. It reads the bucket, not the index,
// so it is current even without Run.
func (s *Store) List(ctx context.Context, workspace string) ([]Record, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return nil, err
	}
	return s.list(ctx, kv, workspace)
}

func (s *Store) list(ctx context.Context, kv jetstream.KeyValue, workspace string) ([]Record, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", unavailable(err))
	}
	defer func() { _ = w.Stop() }()
	var out []Record
	for {
		var e jetstream.KeyValueEntry
		ok := true
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("apikeys: list: %w", unavailable(ctx.Err()))
		case e, ok = <-w.Updates():
		}
		if !ok {
			return nil, fmt.Errorf("apikeys: list: %w", unavailable(errors.New("watch closed")))
		}
		if e == nil {
			break // every record seen
		}
		rec, err := ParseRecord(e.Key(), e.Value())
		if err != nil {
			continue // counted and logged by the watch; not a key
		}
		if workspace == "" || rec.Workspace == workspace {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Get returns the record of key id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return Record{}, err
	}
	rec, _, err := get(ctx, kv, id)
	return rec, err
}

func get(ctx context.Context, kv jetstream.KeyValue, id string) (Record, uint64, error) {
	if !ValidID(id) {
		return Record{}, 0, fmt.Errorf("%w: %q is not a key id", ErrNotFound, id)
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("apikeys: get %s: %w", id, unavailable(err))
	}
	rec, err := ParseRecord(id, e.Value())
	if err != nil {
		return Record{}, 0, err
	}
	return rec, e.Revision(), nil
}

// Revoke revokes key id for good; it stops authenticating on every
// instance within a second (on this one at once). Revoking a revoked key
// changes nothing and returns its record. Unknown ids are ErrNotFound.
func (s *Store) Revoke(ctx context.Context, id string) (Record, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return Record{}, err
	}
	for attempt := 1; ; attempt++ {
		rec, rev, err := get(ctx, kv, id)
		if err != nil {
			return Record{}, err
		}
		if rec.Revoked {
			return rec, nil
		}
		rec.Revoked = true
		rec.RevokedAt = s.now().UTC().Truncate(time.Millisecond)
		if !rec.RevokedAt.After(rec.CreatedAt) {
			rec.RevokedAt = rec.CreatedAt.Add(time.Millisecond) // a skewed clock must not make the record invalid
		}
		val, err := rec.encode()
		if err != nil {
			return Record{}, err
		}
		newRev, err := kv.Update(ctx, id, val, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			if attempt < maxCASAttempts {
				continue
			}
		}
		if err != nil {
			return Record{}, fmt.Errorf("apikeys: revoke %s: %w", id, unavailable(err))
		}
		s.applyLocal(rec, newRev)
		s.log.Info("api key revoked", "key_id", id, "workspace", rec.Workspace)
		return rec, nil
	}
}

// bucket returns the bound bucket, binding it on first use: it looks the
// bucket up and creates it only if it does not exist, so that a command
// run with other flags than the daemon's never rewrites its configuration.
func (s *Store) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.bindMu.Lock()
	defer s.bindMu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.cfg.JetStream.KeyValue(ctx, s.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.cfg.JetStream.CreateKeyValue(ctx, s.bucketConfig())
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.cfg.JetStream.KeyValue(ctx, s.cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("apikeys: bucket %s: %w", s.cfg.Bucket, unavailable(err))
	}
	s.kv = kv
	return kv, nil
}

// unavailable marks transport failures with ErrUnavailable, keeping the
// cause in the chain.
func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
