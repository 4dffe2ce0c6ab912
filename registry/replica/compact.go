package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// compactLoop removes delete markers older than the tombstone grace every
// CompactInterval (with jitter, so instances rarely run it at once; running
// it twice is harmless).
func (r *Replica) compactLoop(ctx context.Context) {
	if r.cfg.CompactInterval < 0 {
		return
	}
	for {
		wait := r.cfg.CompactInterval/2 + rand.N(r.cfg.CompactInterval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !r.synced.Load() {
			continue
		}
		n, err := r.compact(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("compacting the shared registry's delete markers failed", "err", err, "removed", n)
		} else if n > 0 {
			r.log.Info("compacted the shared registry's delete markers", "removed", n)
		}
	}
}

// compact removes the markers of deletions older than the grace: by then
// every running instance has applied them, and one that was away longer
// rebuilds its copy instead of resuming (see start). It reads headers only,
// and it never removes the bucket's last message, whose sequence is what
// Sync waits for.
func (r *Replica) compact(ctx context.Context) (int, error) {
	kv, err := r.bucket()
	if err != nil {
		return 0, err
	}
	last, err := lastRevision(ctx, kv)
	if err != nil {
		return 0, err
	}
	stream, err := r.cfg.JetStream.Stream(ctx, "KV_"+r.cfg.Bucket)
	if err != nil {
		return 0, fmt.Errorf("bucket stream: %w", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return 0, fmt.Errorf("watch: %w", err)
	}
	limit := time.Now().Add(-r.cfg.TombstoneGrace)
	var old []jetstream.KeyValueEntry
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if op := e.Operation(); (op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge) &&
			e.Created().Before(limit) && e.Revision() < last {
			old = append(old, e)
		}
	}
	_ = w.Stop()
	n := 0
	for _, e := range old {
		// Up to and including the marker only: were the key written again
		// meanwhile, the newer entry stays.
		err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+r.cfg.Bucket+"."+e.Key()),
			jetstream.WithPurgeSequence(e.Revision()+1))
		if err != nil {
			return n, fmt.Errorf("purge %s: %w", e.Key(), err)
		}
		n++
		r.m.compacted.Inc()
	}
	return n, nil
}
