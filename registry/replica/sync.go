package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// Sync returns nil once this Store has applied every entry the bucket
// held when Sync was called: it reads the bucket's latest revision (one
// round trip) and waits, until ctx ends, for the watch to apply it. Any
// write acknowledged by any instance before the call is then in the Store,
// and, after reading the whole bucket, no webhook it no longer has is.
// It fails at once while an entry cannot be applied (see Ready).
func (r *Replica) Sync(ctx context.Context) error {
	if err := r.stuck(); err != nil {
		return err
	}
	if !r.cfg.JetStream.Conn().IsConnected() {
		return fmt.Errorf("%w: NATS is not connected", registry.ErrUnavailable)
	}
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	last, err := lastRevision(ctx, kv)
	if err != nil {
		return err
	}
	// While a whole-bucket read settles the local copy, entries up to
	// last are applied but webhooks deleted meanwhile may still be
	// indexed: not caught up yet.
	caughtUp := func() bool { return !r.settling.Load() && r.watched.Load() >= last }
	if !r.waitApplied(ctx, caughtUp) {
		return fmt.Errorf("replica: registry at revision %d, shared registry at %d: %w", r.watched.Load(), last, ctx.Err())
	}
	return r.stuck()
}

// lastRevision is the bucket's latest revision: the sequence of the last
// message in its stream. The compactor never removes that message, so the
// watch always reaches it.
func lastRevision(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: bucket status: %v", registry.ErrUnavailable, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, errors.New("replica: bucket status carries no stream state")
	}
	return bs.StreamInfo().State.LastSeq, nil
}
