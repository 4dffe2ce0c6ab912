package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// resealWorkers bounds the concurrent compare-and-swap rewrites of one
// re-sealing pass.
const resealWorkers = 8

// readMarker reads the sealing marker before the watch (which would reach
// it only after older entries it must already judge by it) and, with
// encryption on and no marker yet, writes the migrating one at last.
func (r *Replica) readMarker(ctx context.Context, kv jetstream.KeyValue, last uint64) error {
	e, err := kv.Get(ctx, markerKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) && r.cfg.Store.SealingKeyID() != "" {
		value := r.cfg.Store.SealingKeyID() + "@" + strconv.FormatUint(last, 10)
		if _, err = kv.Create(ctx, markerKey, []byte(value)); err == nil || errors.Is(err, jetstream.ErrKeyExists) {
			e, err = kv.Get(ctx, markerKey)
		}
	}
	switch {
	case err == nil:
		r.observeMarker(e)
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("%w: sealing marker: %v", registry.ErrUnavailable, err)
	}
	return nil
}

func (r *Replica) observeMarker(e jetstream.KeyValueEntry) {
	v := ""
	if e.Operation() == jetstream.KeyValuePut {
		v = string(e.Value())
	}
	wasSealed := r.sealed()
	r.sealedMarker.Store(&v)
	if v == "" || r.cfg.Store.SealingKeyID() == "" {
		return
	}
	if m := parseMarker(v); m.migrating {
		if !wasSealed {
			r.cfg.Store.RequireSealedFrom(m.since + 1)
		}
		return
	}
	r.cfg.Store.RequireSealedFrom(1)
	r.markerArrived = r.markerArrived || !wasSealed
}

// sealed reports whether the bucket's marker says every entry is sealed.
func (r *Replica) sealed() bool {
	p := r.sealedMarker.Load()
	if p == nil || *p == "" {
		return false
	}
	return !parseMarker(*p).migrating
}

// dropUnsealed runs when the watch has applied a new sealing marker: the
// pass that wrote it re-sealed every legitimate entry before it, so a
// plaintext secret still in the copy was accepted only in the migration
// window and never vouched for. It is dropped like any refused entry.
func (r *Replica) dropUnsealed() error {
	ids, err := r.cfg.Store.UnsealedIDs()
	if err != nil || len(ids) == 0 {
		return err
	}
	changes := make([]registry.Change, len(ids))
	for i, id := range ids {
		changes[i] = registry.Change{ID: id}
		r.m.refused.WithLabelValues(registry.RefusedPlaintext).Inc()
		r.log.Error("dropping a webhook whose secret was never sealed; the shared registry is sealed now", "webhook_id", id)
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	_, err = r.cfg.Store.ApplyChanges(changes)
	return err
}

// resealWhenSynced re-seals the bucket once this instance is ready (in
// sync, and able to open every entry: one that cannot must not claim in
// the marker that all are sealed with its key), when resealReason says it
// has to.
func (r *Replica) resealWhenSynced(ctx context.Context) {
	keyID := r.cfg.Store.SealingKeyID()
	if keyID == "" {
		return
	}
	for r.Ready() != nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	why, err := r.resealReason()
	if err != nil {
		r.log.Warn("could not tell whether the shared registry needs re-sealing; leaving it", "err", err)
		return
	}
	if why == "" {
		return
	}
	r.log.Info("re-sealing the shared registry with this instance's first encryption key", "key_id", keyID, "because", why)
	for wait := time.Second; ctx.Err() == nil; wait = min(2*wait, time.Minute) {
		n, err := r.resealBucket(ctx)
		if err == nil {
			r.log.Info("shared registry re-sealed with the current encryption key", "rewritten", n, "key_id", keyID)
			return
		}
		if errors.Is(err, errRotatedPast) {
			r.log.Warn("not re-sealing the shared registry: another instance rotated it to a newer key; put that key first in --encryption-key", "err", err)
			return
		}
		r.log.Warn("re-sealing the shared registry failed; retrying", "err", err, "rewritten", n, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// resealReason says why this instance must re-seal the bucket with its
// first key, or "" when it must not. The rule: the bucket ends sealed with
// the newest first key. An instance re-seals when the marker is missing or
// still migrating (encryption was turned on), when it names another key
// (a rotation, whether this instance's data dir was empty, or an earlier
// pass stopped half way), or when an entry may still be sealed with
// another key (Open re-sealed the local copy, or the copy holds one). It
// never does when the marker lists its first key as retired: then this
// instance is behind a rotation another instance finished, and re-sealing
// would undo it.
func (r *Replica) resealReason() (string, error) {
	keyID := r.cfg.Store.SealingKeyID()
	var m marker
	if p := r.sealedMarker.Load(); p != nil && *p != "" {
		m = parseMarker(*p)
	}
	switch {
	case m.retires(keyID):
		r.log.Warn("this instance's first encryption key was retired from the shared registry by a rotation; put the newer key first in --encryption-key",
			"key_id", keyID, "bucket_key_id", m.keyID)
		return "", nil
	case m.keyID == "" || m.migrating:
		return "encryption was turned on", nil
	case m.keyID != keyID:
		return "the shared registry is sealed with key " + m.keyID, nil
	case r.cfg.Store.ResealedAtOpen() > 0:
		return "this instance's copy held secrets sealed with another key", nil
	}
	other, err := r.sealedWithOtherKey()
	if err != nil || other == "" {
		return "", err
	}
	return "webhook " + other + " is sealed with another key", nil
}

// sealedWithOtherKey names a webhook of the local copy, which holds the
// bucket's bytes once in sync, sealed with a key other than the first;
// "" when none is.
func (r *Replica) sealedWithOtherKey() (string, error) {
	errFound := errors.New("found")
	var found string
	err := r.cfg.Store.IDs(func(id string, value []byte) error {
		if r.cfg.Store.SealedWithOtherKey(value) {
			found = id
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return "", err
	}
	return found, nil
}

// resealBucket rewrites every entry not sealed with the first key, each a
// compare-and-swap of the bucket's bytes (a concurrent change is re-sealed
// in its newer form, a deletion stays one), then sets the marker.
func (r *Replica) resealBucket(ctx context.Context) (int, error) {
	kv, err := r.bucket()
	if err != nil {
		return 0, err
	}
	ids := make(chan string)
	var rewritten atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range resealWorkers {
		wg.Go(func() {
			for id := range ids {
				err := r.Update(ctx, id, func(cur []byte) ([]byte, error) {
					out, changed, err := r.cfg.Store.Reseal(cur)
					if err != nil || !changed {
						return nil, err
					}
					rewritten.Add(1)
					return out, nil
				})
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	// Collect first: a bbolt read transaction held open across the
	// rewrites would stall the write transactions that apply them.
	var all []string
	err = r.cfg.Store.IDs(func(id string, _ []byte) error {
		all = append(all, id)
		return nil
	})
feed:
	for _, id := range all {
		select {
		case ids <- id:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(ids)
	wg.Wait()
	n := int(rewritten.Load())
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return n, err
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.WriteTimeout)
	defer cancel()
	if err := writeMarker(wctx, kv, r.cfg.Store.SealingKeyID()); err != nil {
		return n, fmt.Errorf("sealing marker: %w", err)
	}
	return n, nil
}
