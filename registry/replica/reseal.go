package replica

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// markerKey is the bucket's sealing marker: its value is the id of the key
// the bucket's entries were last all sealed with. While it exists, an
// instance with encryption on refuses plaintext entries; before it exists
// (encryption just turned on) plaintext ones are accepted so they can be
// re-sealed. It is not a webhook id, so no webhook can collide with it.
const markerKey = "_sealing"

// resealWorkers bounds the concurrent compare-and-swap rewrites of one
// re-sealing pass.
const resealWorkers = 8

func (r *Replica) observeMarker(e jetstream.KeyValueEntry) {
	id := ""
	if e.Operation() == jetstream.KeyValuePut {
		id = string(e.Value())
	}
	prev := r.sealedMarker.Swap(&id)
	if id != "" && r.cfg.Store.SealingKeyID() != "" {
		r.cfg.Store.RequireSealedFrom(1)
		r.markerArrived = r.markerArrived || prev == nil || *prev == ""
	}
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

// requireSealedAfter starts refusing plaintext entries written after
// revision last, the bucket's head when this process first followed it:
// the entries already there are the ones encryption was turned on over.
// It never moves the bound later, so a reconnect reopens no window.
func (r *Replica) requireSealedAfter(last uint64) {
	if r.cfg.Store.SealingKeyID() != "" && r.sealedFromSet.CompareAndSwap(false, true) && r.marker() == "" {
		r.cfg.Store.RequireSealedFrom(last + 1)
	}
}

func (r *Replica) marker() string {
	if p := r.sealedMarker.Load(); p != nil {
		return *p
	}
	return ""
}

// resealWhenSynced re-seals the bucket once this instance is in sync, when
// it has to: right after a key rotation or after encryption was turned on
// (Open re-sealed the local copy), or while the bucket has no sealing
// marker. Instances that were not rotated leave the bucket alone, so two
// key orders never fight over it.
func (r *Replica) resealWhenSynced(ctx context.Context) {
	keyID := r.cfg.Store.SealingKeyID()
	if keyID == "" {
		return
	}
	for !r.synced.Load() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if r.cfg.Store.ResealedAtOpen() == 0 && r.marker() != "" {
		return
	}
	for wait := time.Second; ctx.Err() == nil; wait = min(2*wait, time.Minute) {
		n, err := r.resealBucket(ctx)
		if err == nil {
			r.log.Info("shared registry re-sealed with the current encryption key", "rewritten", n, "key_id", keyID)
			return
		}
		r.log.Warn("re-sealing the shared registry failed; retrying", "err", err, "rewritten", n, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
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
	if _, err := kv.PutString(wctx, markerKey, r.cfg.Store.SealingKeyID()); err != nil {
		return n, err
	}
	return n, nil
}
