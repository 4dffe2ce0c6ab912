package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pullLoop feeds handle with cons's messages, one bounded pull request
// (Fetch) at a time, until ctx ends; it returns once the round in progress
// is handled.
//
// We do not use Consume: its client-side count of messages still owed by
// the server can drift from the server's view under load (the consumer
// then shows pending messages and no waiting request, and nothing moves
// until the idle-heartbeat check fires 30 s later). A Fetch round owns its
// request outright: it ends when the batch is full or the server expires
// it, and the next round asks afresh.
//
// With gated set (the fan-out stage of a shared registry), no request is
// made before the registry has synced once, and each run of messages is
// handled only after a registry sync (see barrier.go).
func (d *Dispatcher) pullLoop(ctx context.Context, stage string, cons jetstream.Consumer, gated bool, handle func(jetstream.Msg)) {
	gated = gated && d.cfg.Registry != nil
	if gated && !d.joinGate(ctx) {
		return
	}
	retry := 100 * time.Millisecond
	for ctx.Err() == nil {
		batch, err := cons.Fetch(d.cfg.FetchBatch, jetstream.FetchMaxWait(d.cfg.PullWait))
		if err != nil {
			// Disconnected or the consumer is gone for now; the connection
			// reconnects by itself and Run's readiness reports it. Say so
			// loudly once it has failed for a few seconds in a row.
			level := slog.LevelDebug
			if retry >= 2*time.Second {
				level = slog.LevelWarn
			}
			d.log.Log(ctx, level, "pull request failed", "stage", stage, "err", err, "retry_in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, 2*time.Second)
			continue
		}
		retry = 100 * time.Millisecond
		if gated {
			// A registry that cannot be confirmed current (NATS trouble, or
			// an entry this instance cannot open) hands its events back; until
			// it can be, this instance pulls no more of them, so the other
			// instances fan them out instead of it bouncing its share.
			if !d.handleSynced(ctx, batch.Messages(), handle) && !d.joinGate(ctx) {
				return
			}
		} else {
			for msg := range batch.Messages() {
				handle(msg)
			}
		}
		if err := batch.Error(); err != nil && !quietPullErr(err) {
			d.log.Warn("pull request ended early", "stage", stage, "err", err)
		}
	}
}

// quietPullErr reports errors that end a round in normal operation.
func quietPullErr(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrConnectionClosed)
}
