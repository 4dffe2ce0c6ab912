package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Run binds (creating if needed) the bucket, then claims and runs jobs
// until ctx ends: at once when Start or a finishing job pokes it, and every
// StaleAfter/2 to pick up work queued elsewhere or left by a dead
// instance. It rebinds after a reconnect (the server may have lost the
// bucket). When ctx ends, its jobs stop and are handed back as queued;
// Run returns nil once every goroutine it started has ended.
func (m *Manager) Run(ctx context.Context) error {
	var jobs sync.WaitGroup
	defer jobs.Wait()
	nc := m.cfg.JetStream.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	scan := time.NewTicker(m.cfg.StaleAfter / 2)
	defer scan.Stop()
	const first, most = 500 * time.Millisecond, 10 * time.Second
	wait, bound := first, false
	for {
		var retry <-chan time.Time
		if !bound {
			if err := m.bind(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				m.log.Warn("replay bucket setup failed; retrying", "bucket", m.cfg.Bucket, "err", err, "in", wait)
				retry = time.After(wait)
				wait = min(2*wait, most)
			} else {
				bound, wait = true, first
			}
		}
		if bound {
			if err := m.schedule(ctx, &jobs); err != nil && ctx.Err() == nil {
				m.log.Warn("replay scan failed", "err", err)
				if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
					bound = false
					retry = time.After(first)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			bound = false
		case <-m.kick:
		case <-scan.C:
		case <-retry:
		}
	}
}

func (m *Manager) bind(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := m.cfg.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      m.cfg.Bucket,
		Description: "webhookd replay jobs and their progress, shared by every instance",
		// One value per key: progress overwrites itself; history would
		// only multiply the bucket by the number of heartbeats.
		History:  1,
		TTL:      m.cfg.Retention,
		MaxBytes: m.cfg.MaxBytes,
		Storage:  jetstream.FileStorage,
		Replicas: m.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("replay: bucket %s: %w", m.cfg.Bucket, err)
	}
	m.mu.Lock()
	fresh := m.kv == nil
	m.kv = kv
	m.mu.Unlock()
	if fresh {
		m.log.Info("replay bucket ready", "bucket", m.cfg.Bucket, "retention", m.cfg.Retention)
	}
	return nil
}

// poke asks Run to scan for claimable jobs now.
func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// schedule claims as many jobs as this instance has free slots.
func (m *Manager) schedule(ctx context.Context, jobs *sync.WaitGroup) error {
	m.mu.Lock()
	free := m.cfg.Concurrency - len(m.running)
	kv := m.kv
	m.mu.Unlock()
	if free <= 0 {
		return nil
	}
	cands, err := m.candidates(ctx, kv)
	for _, c := range cands {
		if free == 0 {
			break
		}
		m.mu.Lock()
		mine := m.running[c.rec.ID]
		m.mu.Unlock()
		if mine {
			continue // slow heartbeats of our own job: not a takeover
		}
		rec, rev, ok := m.claim(ctx, kv, c)
		if !ok {
			continue
		}
		free--
		m.mu.Lock()
		m.running[rec.ID] = true
		m.mu.Unlock()
		jobs.Add(1)
		go func() {
			defer jobs.Done()
			m.runJob(ctx, kv, rec, rev)
			m.mu.Lock()
			delete(m.running, rec.ID)
			m.mu.Unlock()
			m.poke() // a slot is free
		}()
	}
	return err
}

// claim makes c running on this instance, unless another instance changed
// it since it was read.
func (m *Manager) claim(ctx context.Context, kv jetstream.KeyValue, c candidate) (record, uint64, bool) {
	rec, prev := c.rec, c.rec.Owner
	now := m.now()
	rec.State, rec.Owner, rec.UpdatedAt = StateRunning, m.cfg.Instance, now
	if rec.StartedAt.IsZero() {
		rec.StartedAt = now
	}
	rev, err := kv.Update(ctx, jobKey(rec.Workspace, rec.ID), encode(rec), c.rev)
	if err != nil {
		if !conflict(err) && ctx.Err() == nil {
			m.log.Warn("could not claim a replay job", "job", rec.ID, "err", err)
		}
		return record{}, 0, false
	}
	if c.rec.State == StateRunning {
		m.log.Warn("took over a stale replay job", "job", rec.ID, "from", prev, "after_seq", rec.Cursor)
	} else {
		m.log.Info("replay running", "job", rec.ID, "webhook", rec.WebhookID, "after_seq", rec.Cursor)
	}
	return rec, rev, true
}
