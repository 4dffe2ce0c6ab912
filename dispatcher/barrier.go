package dispatcher

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The read-your-writes barrier. A registration is acknowledged only once
// it is stored in the shared registry's stream, so every registration
// acknowledged before an event was stored is in that stream before the
// event reaches fan-out. A Sync begun after a message arrived asks the
// server for the registry's latest revision at that moment (later, in real
// time, than the message's storing) and waits for the local copy to apply
// it: once it returns, the index holds every such registration. One Sync
// covers every message already received, so it costs one round trip per
// run of messages, not per event, and needs no clock shared between
// machines.

// joinGate blocks until the registry has synced once, so an instance that
// is catching up (a new one, or one back from downtime) takes no event
// that its partial index would match against nothing. It reports false
// when ctx ended first.
func (d *Dispatcher) joinGate(ctx context.Context) bool {
	start := time.Now()
	var warned time.Time
	for ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.cfg.Registry.Sync(sctx)
		cancel()
		if err == nil {
			if waited := time.Since(start); waited > time.Second {
				d.log.Info("fan-out starts: the registry caught up", "waited", waited.Round(time.Millisecond))
			}
			return true
		}
		if ctx.Err() == nil {
			if time.Since(warned) >= 10*time.Second {
				warned = time.Now()
				d.log.Warn("fan-out waits for the registry to catch up", "err", err, "waited", time.Since(start).Round(time.Second))
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return false
}

// handleSynced hands msgs to handle in runs: it takes every message
// already received, syncs the registry, then handles the run. A run whose
// sync fails is handed back with a short delay, unmatched and unacked. It
// reports whether every run synced.
func (d *Dispatcher) handleSynced(ctx context.Context, msgs <-chan jetstream.Msg, handle func(jetstream.Msg)) bool {
	synced := true
	run := make([]jetstream.Msg, 0, d.cfg.FetchBatch)
	for msg := range msgs {
		run = append(run[:0], msg)
		open := true
	more:
		for open && len(run) < cap(run) {
			select {
			case m, ok := <-msgs:
				if !ok {
					open = false
					break more
				}
				run = append(run, m)
			default:
				break more
			}
		}
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, d.cfg.RegistrySyncTimeout)
		err := d.cfg.Registry.Sync(sctx)
		cancel()
		d.m.syncWait.Observe(time.Since(start).Seconds())
		if err != nil {
			synced = false
			d.m.syncFailed.Inc()
			d.log.Warn("fan-out hands events back: the registry is not confirmed current", "events", len(run), "err", err)
			for _, m := range run {
				_ = m.NakWithDelay(d.cfg.RegistrySyncRetry)
			}
		} else {
			for _, m := range run {
				handle(m)
			}
		}
		if !open {
			return synced
		}
	}
	return synced
}
