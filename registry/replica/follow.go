package replica

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// errReconnected ends a watch so that a fresh one replaces it.
var errReconnected = errors.New("reconnected to NATS")

// maxBatch bounds the changes applied in one bbolt transaction while
// catching up.
const maxBatch = 4096

// markCurrentEvery is how often a caught-up instance records that it is
// current, which a restart compares with the tombstone grace.
const markCurrentEvery = time.Minute

// How a watch starts, decided from the Store's resume point.
type startMode int

const (
	resume      startMode = iota // from the revision after the last applied
	firstSync                    // whole bucket; publish what only we have (first replication)
	rebuildCopy                  // whole bucket; drop what only we have (away too long)
)

// start decides where follow begins, and why.
func (r *Replica) start(ctx context.Context, kv jetstream.KeyValue) (uint64, startMode, error) {
	store := r.cfg.Store
	rev, err := store.JournalRevision()
	if err != nil {
		return 0, resume, err
	}
	last, err := lastRevision(ctx, kv)
	if err != nil {
		return 0, resume, err
	}
	// The sealing marker is read before the watch, which would reach it
	// only after older entries it must already judge by it.
	if err := r.readMarker(ctx, kv, last); err != nil {
		return 0, resume, err
	}
	switch {
	case rev == 0:
		return 0, firstSync, nil
	case rev > last:
		// The bucket is younger than our copy (recreated or purged): read
		// it whole, and republish what only we still have.
		r.log.Warn("the shared registry is behind this instance's copy; resynchronising",
			"applied_revision", rev, "bucket_revision", last)
		return 0, firstSync, nil
	}
	at, err := store.JournalCurrentAt()
	if err != nil {
		return 0, resume, err
	}
	// Delete markers older than the grace are compacted away, so after a
	// long absence resuming could miss deletions: rebuild from the bucket.
	// Half the grace leaves room for clock skew between machines.
	if away := time.Since(at); at.IsZero() || away > r.cfg.TombstoneGrace/2 {
		r.log.Info("this instance was away longer than half the tombstone grace; reading the whole shared registry",
			"away", away.Round(time.Second), "tombstone_grace", r.cfg.TombstoneGrace)
		return 0, rebuildCopy, nil
	}
	return rev, resume, nil
}

// follow applies the bucket's changes from the Store's last applied
// revision on, until the watch ends or ctx does.
func (r *Replica) follow(ctx context.Context, kv jetstream.KeyValue) error {
	store := r.cfg.Store
	rev, mode, err := r.start(ctx, kv)
	if err != nil {
		return err
	}
	r.applyMu.Lock()
	// Reading the whole bucket is not caught up until the webhooks only
	// the local copy has are settled (a rebuild drops the deleted ones):
	// set before watched moves, so Sync never sees one without the other.
	r.settling.Store(mode != resume)
	r.watched.Store(rev)
	for id, ahead := range r.ahead {
		if ahead <= rev || rev == 0 {
			delete(r.ahead, id) // reached already, or a different bucket's revision
		}
	}
	r.applyMu.Unlock()
	var opts []jetstream.WatchOpt
	if rev > 0 {
		opts = append(opts, jetstream.ResumeFromRevision(rev+1))
	}
	// A watch does not always notice that the server it watched restarted;
	// after any reconnect, start a fresh one from the revision applied.
	nc := r.cfg.JetStream.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	w, err := kv.WatchAll(ctx, opts...)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer func() { _ = w.Stop() }()

	// Reading the whole bucket, remember every key it knows and whether it
	// holds a value, to settle the keys only the local copy has.
	var seen map[string]bool
	if mode != resume {
		seen = make(map[string]bool)
	}
	caughtUp := false
	var markedAt time.Time
	updates := w.Updates()
	batch := make([]registry.Change, 0, maxBatch)
	add := func(e jetstream.KeyValueEntry) {
		c := r.change(e)
		batch = append(batch, c)
		if seen != nil && c.ID != "" {
			seen[c.ID] = c.Value != nil
		}
	}
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-reconnected:
			return errReconnected
		case e, ok = <-updates:
		}
		if !ok {
			return errors.New("watch closed")
		}
		reached := e == nil
		if !reached {
			add(e)
		}
		// Take whatever else is already waiting into the same transaction.
	drain:
		for !reached && len(batch) < maxBatch {
			select {
			case e, ok = <-updates:
				if !ok {
					break drain
				}
				if e == nil {
					reached = true
					break drain
				}
				add(e)
			default:
				break drain
			}
		}
		if err := r.apply(batch); err != nil {
			return err
		}
		batch = batch[:0]
		if r.markerArrived {
			r.markerArrived = false
			if err := r.dropUnsealed(); err != nil {
				return err
			}
		}
		if reached && !caughtUp {
			caughtUp = true
			if err := r.settleLocalOnly(ctx, kv, mode, seen); err != nil {
				return err
			}
			seen = nil
			if !r.synced.Swap(true) {
				r.log.Info("registry in sync with the shared registry", "bucket", r.cfg.Bucket, "subscriptions", store.Count())
			}
			if r.settling.Swap(false) {
				r.notify() // Sync waiters check again, now that the copy is settled
			}
		}
		if caughtUp && time.Since(markedAt) >= markCurrentEvery {
			if err := store.MarkJournalCurrent(time.Now()); err != nil {
				return err
			}
			markedAt = time.Now()
		}
	}
}

// change turns a bucket entry into a Store change; the sealing marker
// changes no webhook (its revision still counts as applied).
func (r *Replica) change(e jetstream.KeyValueEntry) registry.Change {
	if e.Key() == markerKey {
		r.observeMarker(e)
		return registry.Change{Revision: e.Revision()}
	}
	c := registry.Change{ID: e.Key(), Revision: e.Revision()}
	if e.Operation() == jetstream.KeyValuePut {
		c.Value = e.Value()
	}
	return c
}

// apply applies a batch in one Store transaction, passing over the
// entries this instance already has newer states of, and records what the
// Store refused.
func (r *Replica) apply(batch []registry.Change) error {
	if len(batch) == 0 {
		return nil
	}
	defer r.notify()
	r.applyMu.Lock()
	defer r.applyMu.Unlock() // before notify: waiters see watched moved
	for i, c := range batch {
		if r.skip(c) || r.behind(c) {
			batch[i] = registry.Change{Revision: c.Revision} // no change; the revision still counts
		}
	}
	// An entry this instance could not open keeps the resume point below
	// it, so that a restart reads it again and stays not ready.
	refused, err := r.cfg.Store.ApplyChangesHolding(batch, r.hold(batch))
	if err != nil {
		return err
	}
	r.judge(batch, refused)
	if last := batch[len(batch)-1].Revision; last > r.watched.Load() {
		r.watched.Store(last)
	}
	for id, rev := range r.ahead {
		if rev <= r.watched.Load() {
			delete(r.ahead, id)
		}
	}
	return nil
}

// behind reports whether the watch should pass over c because this
// instance applied a newer entry of the same webhook out of order
// (applyDirect); r.applyMu is held.
func (r *Replica) behind(c registry.Change) bool {
	rev, ok := r.ahead[c.ID]
	return ok && c.Revision < rev
}

// settleLocalOnly handles, after reading the whole bucket, the webhooks
// only the local copy has: on a first sync they are published (the first
// start of replication on an existing data dir, or a bucket that was
// lost); after a long absence they are dropped, because the bucket's
// deletion of them may have been compacted away.
func (r *Replica) settleLocalOnly(ctx context.Context, kv jetstream.KeyValue, mode startMode, seen map[string]bool) error {
	if mode == resume {
		return nil
	}
	var publish, drop []string
	values := make(map[string][]byte)
	err := r.cfg.Store.IDs(func(id string, value []byte) error {
		hasValue, known := seen[id]
		switch {
		case mode == firstSync && !known:
			publish = append(publish, id)
			values[id] = value
		case mode == rebuildCopy && !hasValue:
			drop = append(drop, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range publish {
		if _, err := kv.Create(ctx, id, values[id]); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("publish %s: %w", id, err)
		}
	}
	if len(publish) > 0 {
		r.log.Info("published local subscriptions to the shared registry", "count", len(publish))
	}
	if len(drop) == 0 {
		return nil
	}
	changes := make([]registry.Change, len(drop))
	for i, id := range drop {
		changes[i] = registry.Change{ID: id}
	}
	r.applyMu.Lock()
	_, err = r.cfg.Store.ApplyChanges(changes)
	r.applyMu.Unlock()
	if err != nil {
		return err
	}
	r.log.Info("dropped local subscriptions the shared registry no longer has", "count", len(drop))
	return nil
}
