// Package capacity keeps webhookd's JetStream streams inside their byte
// bounds and makes their fill visible.
//
// Budget splits one store size (the embedded server's JetStream max store,
// or what the operator gives webhookd on an external NATS) between the
// streams and buckets. A Monitor samples every stream's size into
// webhookd_store_bytes and webhookd_store_limit_bytes, reports streams
// that are nearly full through Ready, and trims the events stream: when it
// is above TrimAt of its limit, it purges the oldest events that fan-out
// has already acknowledged, so storage pressure shortens the replay window
// rather than refusing new events; and it purges the events older than
// Retention that fan-out has acknowledged, which is how the events stream's
// retention is kept (the stream has no server-side MaxAge, see
// events.StreamConfig.MaxAge). It never purges an event fan-out has not
// finished with, however old: such events wait, and once they fill the
// stream, publishers are refused (the stream discards new messages, never
// old).
package capacity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Stream is one stream the Monitor watches besides the events stream.
type Stream struct {
	// Name of the stream; a key-value bucket B's stream is "KV_B".
	Name string
	// Limit is the stream's bound when webhookd enforces it instead of
	// the server: the deliveries stream, whose bound fan-out keeps
	// (dispatcher.Config.DeliveriesMaxBytes). Zero: the stream's own
	// MaxBytes.
	Limit int64
}

// Config configures a Monitor. Only JetStream is required.
type Config struct {
	// JetStream reaches the streams. Required.
	JetStream jetstream.JetStream
	// EventsStream names the events stream, which the Monitor samples and
	// trims. Zero means "WEBHOOKD_EVENTS".
	EventsStream string
	// FanoutConsumer is the durable consumer that fans events out; only
	// events below its ack floor are ever trimmed. Zero means
	// "webhookd-fanout".
	FanoutConsumer string
	// Streams are the other streams to sample: in the daemon the
	// deliveries stream, WEBHOOKD_FAILURES, WEBHOOKD_ATTEMPTS and the
	// buckets KV_WEBHOOKD_REGISTRY, KV_WEBHOOKD_HEALTH, KV_WEBHOOKD_KEYS
	// and KV_WEBHOOKD_REPLAYS, every one capacity.Budget bounds. They are
	// only ever read.
	Streams []Stream
	// Interval between samples. Zero means 5s.
	Interval time.Duration
	// TrimAt is the fill of the events stream (a fraction of its
	// MaxBytes) above which fanned-out events are purged; 1 or more never
	// trims. Zero means 0.8, where the 80% alert fires too.
	TrimAt float64
	// TrimTo is the fill a trim aims for, so that trims come seldom and
	// each frees a good part of the stream. Zero means 0.6; it must be
	// below TrimAt.
	TrimTo float64
	// ReadyAt is the fill at which Ready reports a stream (one whose limit
	// refuses writes, not one that drops its oldest). Zero means 0.95.
	ReadyAt float64
	// Retention is how long the events stream keeps an event once fanned
	// out (--event-retention): each sample purges the fanned-out events
	// older than this, by their stored time. Events fan-out has not
	// acknowledged stay, whatever their age. Zero means 7 days, the
	// events.StreamConfig default.
	Retention time.Duration
	// Now is the clock event ages are judged by. Nil means time.Now.
	Now func() time.Time
	// Logger receives operational logs. Nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics. Nil means none.
	Registerer prometheus.Registerer
}

// ErrNearlyFull is what Ready's error wraps.
var ErrNearlyFull = errors.New("stream nearly full")

// Policy label values: what reaching a stream's limit does.
const (
	policyRefuse     = "refuse"      // new writes fail (or fan-out pauses)
	policyDropOldest = "drop_oldest" // the oldest messages make room
)

// usage is one stream's latest sample.
type usage struct {
	bytes, limit int64
	policy       string
	failing      bool // the last sample failed; logged once per streak
}

// Monitor samples and trims. Create it with New, drive it with Run.
type Monitor struct {
	cfg     Config
	log     *slog.Logger
	bytes   *prometheus.GaugeVec
	limit   *prometheus.GaugeVec
	trimmed prometheus.Counter
	expired prometheus.Counter
	running atomic.Bool

	mu    sync.Mutex
	usage map[string]*usage
	order []string // events stream first, then Streams
	stuck bool     // events stream over TrimAt with nothing to trim; logged once
	aging bool     // events past Retention that fan-out still holds; logged once
}

// New validates cfg and registers the metrics.
func New(cfg Config) (*Monitor, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("capacity: Config.JetStream is required")
	}
	if cfg.EventsStream == "" {
		cfg.EventsStream = "WEBHOOKD_EVENTS"
	}
	if cfg.FanoutConsumer == "" {
		cfg.FanoutConsumer = "webhookd-fanout"
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.TrimAt == 0 {
		cfg.TrimAt = 0.8
	}
	if cfg.TrimTo == 0 {
		cfg.TrimTo = min(0.6, cfg.TrimAt*0.75)
	}
	if cfg.ReadyAt == 0 {
		cfg.ReadyAt = 0.95
	}
	if cfg.Retention == 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Retention < 0:
		return nil, fmt.Errorf("capacity: Config.Retention must not be negative, got %s", cfg.Retention)
	case cfg.Interval < 0:
		return nil, fmt.Errorf("capacity: Config.Interval must not be negative, got %s", cfg.Interval)
	case cfg.TrimAt < 0 || cfg.TrimTo <= 0 || cfg.TrimTo >= cfg.TrimAt:
		return nil, fmt.Errorf("capacity: need 0 < TrimTo < TrimAt, got TrimTo %g and TrimAt %g", cfg.TrimTo, cfg.TrimAt)
	case cfg.ReadyAt <= 0 || cfg.ReadyAt > 1:
		return nil, fmt.Errorf("capacity: Config.ReadyAt must be in (0, 1], got %g", cfg.ReadyAt)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	const ns = "webhookd"
	m := &Monitor{
		cfg: cfg,
		log: cfg.Logger.With("component", "capacity"),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "store_bytes",
			Help: "Bytes stored in each of webhookd's JetStream streams, sampled (shared state: aggregate with max() by stream)."},
			[]string{"stream"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "store_limit_bytes",
			Help: "Byte bound of each stream, 0 for none; policy refuse: at the bound new writes are refused (deliveries: fan-out pauses), drop_oldest: the oldest messages make room."},
			[]string{"stream", "policy"}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "events_trimmed_total",
			Help: "Events purged from the events stream under storage pressure after they had been fanned out (the replay window shrank)."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "events_expired_total",
			Help: "Events purged from the events stream because they were older than the retention (--event-retention), after they had been fanned out."}),
		usage: make(map[string]*usage),
	}
	for _, name := range append([]string{cfg.EventsStream}, streamNames(cfg.Streams)...) {
		if name == "" || m.usage[name] != nil {
			return nil, fmt.Errorf("capacity: stream names must be non-empty and distinct, got %q twice or empty", name)
		}
		m.usage[name] = &usage{policy: policyRefuse}
		m.order = append(m.order, name)
		// Every family is present from the first scrape.
		m.bytes.WithLabelValues(name)
		m.limit.WithLabelValues(name, policyRefuse)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.bytes, m.limit, m.trimmed, m.expired} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("capacity: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func streamNames(s []Stream) []string {
	out := make([]string, len(s))
	for i, st := range s {
		out[i] = st.Name
	}
	return out
}

// Run samples every Interval (the first time at once) and trims the events
// stream when it must, until ctx ends. It starts no goroutine.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("capacity: Run called twice")
	}
	tick := time.NewTicker(m.cfg.Interval)
	defer tick.Stop()
	for {
		m.Sample(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Sample reads every stream's size once and trims the events stream if it
// is above TrimAt. Run calls it; tests may too.
func (m *Monitor) Sample(ctx context.Context) {
	limits := map[string]int64{}
	for _, s := range m.cfg.Streams {
		limits[s.Name] = s.Limit
	}
	for _, name := range m.order {
		info, st, err := m.info(ctx, name)
		m.record(name, info, limits[name], err)
		if err == nil && name == m.cfg.EventsStream {
			m.trim(ctx, st, info)
		}
	}
}

func (m *Monitor) info(ctx context.Context, name string) (*jetstream.StreamInfo, jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := m.cfg.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("capacity: stream %s: %w", name, err)
	}
	return st.CachedInfo(), st, nil
}

// record stores one sample and updates the gauges.
func (m *Monitor) record(name string, info *jetstream.StreamInfo, override int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.usage[name]
	if err != nil {
		// Keep the last sample: an unreachable NATS says nothing about
		// the fill, and its own alert covers it.
		if !u.failing {
			m.log.Warn("sampling a stream's size failed; keeping the last sample", "stream", name, "err", err)
		}
		u.failing = true
		return
	}
	u.failing = false
	u.bytes = int64(min(info.State.Bytes, math.MaxInt64))
	policy := policyRefuse
	switch {
	case override > 0:
		u.limit = override
	case info.Config.MaxBytes > 0:
		u.limit = info.Config.MaxBytes
		if info.Config.Discard == jetstream.DiscardOld {
			policy = policyDropOldest
		}
	default:
		u.limit = 0
	}
	if policy != u.policy {
		m.limit.DeleteLabelValues(name, u.policy)
		u.policy = policy
	}
	m.bytes.WithLabelValues(name).Set(float64(u.bytes))
	m.limit.WithLabelValues(name, u.policy).Set(float64(u.limit))
}

// Ready reports nil while every stream whose limit refuses writes is below
// ReadyAt of it, and otherwise an error wrapping ErrNearlyFull that names
// each such stream and its fill, e.g. "stream nearly full:
// WEBHOOKD_EVENTS at 96.2% (3.4 GiB of 3.5 GiB)". Streams that drop their
// oldest messages at the limit (the failure records) and streams not
// sampled yet never count.
func (m *Monitor) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var full []string
	for _, name := range m.order {
		u := m.usage[name]
		if u.policy != policyRefuse || u.limit <= 0 {
			continue
		}
		if fill := float64(u.bytes) / float64(u.limit); fill >= m.cfg.ReadyAt {
			full = append(full, fmt.Sprintf("%s at %s (%s of %s)", name, pct(fill), size(u.bytes), size(u.limit)))
		}
	}
	if len(full) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNearlyFull, strings.Join(full, "; "))
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// size formats a byte count the way operators read it.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
