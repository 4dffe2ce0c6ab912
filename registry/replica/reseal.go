package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// markerKey is the bucket's sealing marker. "<key id>" says every entry is
// sealed with that key: an instance with encryption on then refuses any
// plaintext entry. "<key id>@<revision>" says encryption was turned on
// when the bucket stood at that revision and its entries are being
// re-sealed: plaintext entries up to it are accepted (to be re-sealed),
// later ones refused. The first instance with a key writes the second form
// before it follows the bucket, so no instance, early or late, trusts a
// plaintext entry planted after encryption was turned on. It is not a
// webhook id, so no webhook can collide with it.
const markerKey = "_sealing"

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

// parseMarker splits a marker value; since is 0 for a sealed bucket.
func parseMarker(v string) (keyID string, since uint64, migrating bool) {
	id, rev, ok := strings.Cut(v, "@")
	if !ok {
		return v, 0, false
	}
	n, err := strconv.ParseUint(rev, 10, 64)
	if err != nil {
		return id, 0, false // unreadable: the strict reading
	}
	return id, n, true
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
	if _, since, migrating := parseMarker(v); migrating {
		if !wasSealed {
			r.cfg.Store.RequireSealedFrom(since + 1)
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
	_, _, migrating := parseMarker(*p)
	return !migrating
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
	if r.cfg.Store.ResealedAtOpen() == 0 && r.sealed() {
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
