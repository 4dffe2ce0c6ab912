package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// errReconnected ends a watch so that a fresh one replaces it.
var errReconnected = errors.New("reconnected to NATS")

// maxBatch bounds the changes applied in one bbolt transaction while
// catching up.
const maxBatch = 4096

// follow applies the bucket's changes from the Store's last applied
// revision on, until the watch ends or ctx does.
func (r *Replica) follow(ctx context.Context, kv jetstream.KeyValue) error {
	store := r.cfg.Store
	rev, err := store.JournalRevision()
	if err != nil {
		return err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("bucket status: %w", err)
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && rev > bs.StreamInfo().State.LastSeq {
		// The bucket is younger than our copy (recreated or purged): read
		// it whole, and republish what only we still have.
		r.log.Warn("the shared registry is behind this instance's copy; resynchronising",
			"applied_revision", rev, "bucket_revision", bs.StreamInfo().State.LastSeq)
		rev = 0
	}
	r.applyMu.Lock()
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

	// On a first sync, remember every key the bucket knows (values and
	// deletions alike), so the local-only ones can be published after.
	var seen map[string]struct{}
	if rev == 0 {
		seen = make(map[string]struct{})
	}
	updates := w.Updates()
	batch := make([]registry.Change, 0, maxBatch)
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
		caughtUp := e == nil
		if !caughtUp {
			batch = append(batch, change(e))
			if seen != nil {
				seen[e.Key()] = struct{}{}
			}
		}
		// Take whatever else is already waiting into the same transaction.
	drain:
		for !caughtUp && len(batch) < maxBatch {
			select {
			case e, ok = <-updates:
				if !ok {
					break drain
				}
				if e == nil {
					caughtUp = true
					break drain
				}
				batch = append(batch, change(e))
				if seen != nil {
					seen[e.Key()] = struct{}{}
				}
			default:
				break drain
			}
		}
		if err := r.apply(batch); err != nil {
			return err
		}
		batch = batch[:0]
		if caughtUp && !r.synced.Load() {
			if seen != nil {
				if err := r.publishLocalOnly(ctx, kv, seen); err != nil {
					return err
				}
				seen = nil
			}
			r.synced.Store(true)
			r.log.Info("registry in sync with the shared registry", "bucket", r.cfg.Bucket, "subscriptions", store.Count())
		}
	}
}

func change(e jetstream.KeyValueEntry) registry.Change {
	c := registry.Change{ID: e.Key(), Revision: e.Revision()}
	if e.Operation() == jetstream.KeyValuePut {
		c.Value = e.Value()
	}
	return c
}

// apply applies a batch; when the batch is refused (an entry that does not
// decode, e.g. written by hand), it applies the entries one by one and
// skips, with a log line, the ones that cannot be applied.
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
	if err := r.cfg.Store.ApplyChanges(batch); err != nil {
		for _, c := range batch {
			if err := r.cfg.Store.ApplyChanges([]registry.Change{c}); err != nil {
				r.log.Error("skipping a shared-registry entry that cannot be applied", "key", c.ID, "revision", c.Revision, "err", err)
			}
		}
	}
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

// publishLocalOnly writes the Store's webhooks that the bucket has never
// seen: the first start of replication on an existing data dir.
func (r *Replica) publishLocalOnly(ctx context.Context, kv jetstream.KeyValue, seen map[string]struct{}) error {
	n := 0
	err := r.cfg.Store.IDs(func(id string, value []byte) error {
		if _, ok := seen[id]; ok {
			return nil
		}
		if _, err := kv.Create(ctx, id, value); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("publish %s: %w", id, err)
		}
		n++
		return nil
	})
	if n > 0 {
		r.log.Info("published local subscriptions to the shared registry", "count", n)
	}
	return err
}
