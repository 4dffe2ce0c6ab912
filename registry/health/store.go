package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Store.
type Config struct {
	// JetStream is the context the bucket lives in. Required.
	JetStream jetstream.JetStream
	// Bucket names the key-value bucket. Zero means "WEBHOOKD_HEALTH".
	Bucket string
	// Replicas is the bucket's replica count. Zero means 1.
	Replicas int
	// TTL is how long a record that nobody rewrites is kept: health of a
	// webhook that receives nothing for that long is forgotten (it shows
	// healthy again), which bounds the bucket and every instance's copy
	// of it by the webhooks active within TTL. Zero means 7 days.
	TTL time.Duration
	// MaxBytes bounds the bucket (capacity.Budget's Health share). Once it
	// is full, new records are refused: Put fails, the dispatcher keeps
	// the change and tries again, and circuits keep working on each
	// instance meanwhile; TTL frees room as idle webhooks expire. Zero
	// means no byte limit.
	MaxBytes int64
	// OnChange, when set, is called from the watch goroutine with every
	// record written by any instance (this one included), and with a zero
	// Record carrying only WebhookID when a record is deleted. The
	// dispatcher uses it to honour circuits opened elsewhere.
	OnChange func(Record)
	// Logger receives operational logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Store is the shared health bucket and an in-memory copy of it that is
// read without a network round trip. Create it with New, drive it with Run.
type Store struct {
	cfg Config
	log *slog.Logger

	mu    sync.RWMutex
	cache map[string]cached
	kv    jetstream.KeyValue // nil until Run has bound the bucket
	ready bool
}

// New validates cfg.
func New(cfg Config) (*Store, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("health: JetStream is required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = "WEBHOOKD_HEALTH"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.TTL == 0 {
		cfg.TTL = 7 * 24 * time.Hour
	}
	if cfg.Replicas < 0 || cfg.TTL < 0 || cfg.MaxBytes < 0 {
		return nil, errors.New("health: Replicas, TTL and MaxBytes must not be negative")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Store{cfg: cfg, log: cfg.Logger.With("component", "health"), cache: make(map[string]cached)}, nil
}

// ErrUnavailable: the bucket is not bound yet or NATS is unreachable.
var ErrUnavailable = errors.New("health: the shared health bucket is unavailable")

// Health returns the webhook's record from the local copy; the zero
// Record (state "") is a healthy webhook with no history.
func (s *Store) Health(id string) Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cache[id].rec
}

// cached is the local copy of one key: its newest record and the bucket
// revision it came from. A write updates the copy at once, before its own
// watch echo arrives, so the echo of an earlier write (or a put overtaken
// by a reset) must not replace it: only a higher revision does. A reset's
// copy is a tombstone until the watch delivers the deletion itself.
type cached struct {
	rec  Record
	rev  uint64
	gone bool
}

// keep stores c for id unless the copy already holds a newer revision.
// The caller holds s.mu.
func (s *Store) keep(id string, c cached) {
	if cur, ok := s.cache[id]; ok && cur.rev > c.rev {
		return
	}
	s.cache[id] = c
}

// Put writes r (UpdatedAt set now) for every instance to see.
func (s *Store) Put(ctx context.Context, r Record) error {
	kv := s.bucket()
	if kv == nil {
		return ErrUnavailable
	}
	r.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("health: encode %s: %w", r.WebhookID, err)
	}
	rev, err := kv.Put(ctx, r.WebhookID, b)
	if err != nil {
		return fmt.Errorf("health: put %s: %w", r.WebhookID, err)
	}
	s.mu.Lock()
	s.keep(r.WebhookID, cached{rec: r, rev: rev})
	s.mu.Unlock()
	return nil
}

// Reset forgets the webhook's health on every instance: its circuit
// closes and its run of failures starts again from nothing. The API calls
// it when a webhook is re-enabled.
func (s *Store) Reset(ctx context.Context, id string) error {
	kv := s.bucket()
	if kv == nil {
		return ErrUnavailable
	}
	if err := kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("health: reset %s: %w", id, err)
	}
	// Delete does not say which revision it wrote; the bucket's last
	// revision right after it is at least that one.
	var rev uint64
	if st, err := kv.Status(ctx); err == nil {
		if js, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			rev = js.StreamInfo().State.LastSeq
		}
	}
	s.mu.Lock()
	s.keep(id, cached{rec: Record{WebhookID: id}, rev: rev, gone: true})
	s.mu.Unlock()
	return nil
}

// Ready reports nil once the bucket is bound and its contents loaded.
func (s *Store) Ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.ready {
		return ErrUnavailable
	}
	return nil
}

func (s *Store) bucket() jetstream.KeyValue {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.kv
}

// Run binds (creating if needed) the bucket and keeps the local copy in
// step with it until ctx ends, rebinding after errors and reconnects.
func (s *Store) Run(ctx context.Context) error {
	for wait := 500 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 10*time.Second) {
		err := s.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("health watch ended; restarting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

func (s *Store) watch(ctx context.Context) error {
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	kv, err := s.cfg.JetStream.CreateOrUpdateKeyValue(setupCtx, jetstream.KeyValueConfig{
		Bucket:      s.cfg.Bucket,
		Description: "webhookd endpoint health and circuit state, shared by every instance",
		History:     1,
		TTL:         s.cfg.TTL,
		MaxBytes:    s.cfg.MaxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("health: bucket %s: %w", s.cfg.Bucket, err)
	}
	nc := s.cfg.JetStream.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("health: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	s.mu.Lock()
	s.kv = kv
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			return errors.New("reconnected to NATS")
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				s.mu.Lock()
				s.ready = true
				s.mu.Unlock()
				continue
			}
			s.apply(e)
		}
	}
}

func (s *Store) apply(e jetstream.KeyValueEntry) {
	id := e.Key()
	var r Record
	if e.Operation() == jetstream.KeyValuePut {
		if err := json.Unmarshal(e.Value(), &r); err != nil || r.WebhookID != id {
			s.log.Warn("ignoring an unreadable health record", "webhook", id, "err", err)
			return
		}
		s.mu.Lock()
		stale := s.cache[id].rev > e.Revision()
		if !stale {
			s.cache[id] = cached{rec: r, rev: e.Revision()}
		}
		s.mu.Unlock()
		if stale {
			return
		}
	} else {
		r.WebhookID = id
		s.mu.Lock()
		stale := s.cache[id].rev > e.Revision()
		if !stale {
			// Nothing older than a deletion follows it in the watch, so
			// the tombstone is no longer needed.
			delete(s.cache, id)
		}
		s.mu.Unlock()
		if stale {
			return
		}
	}
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(r)
	}
}
