// Package deliverylog records every delivery attempt in a JetStream stream
// that every webhookd instance writes and reads, so that a webhook's
// deliveries, one delivery's attempts and one event's deliveries give the
// same answer through any instance.
//
// # Layout
//
// One stream (WEBHOOKD_ATTEMPTS by default) holds one subject per webhook,
// <SubjectPrefix>.attempts.<workspace>.<webhookID>. Each message holds the
// attempts of one webhook made within one FlushInterval (at most MaxBatch),
// one JSON Attempt per line, each carrying the delivery's state after it
// (retrying, succeeded or failed). A delivery's view is the fold of its
// attempts; nothing is ever rewritten. Batching is what keeps the log off
// the hot path's bill: a webhook taking thousands of deliveries a second
// costs the server tens of stored messages a second, not thousands.
//
// # Bounds
//
// MaxPerWebhook messages per webhook (the server discards the webhook's
// oldest when a new one arrives; reads show the newest MaxPerWebhook
// attempts of them, so a busy webhook may keep up to MaxBatch times more
// on disk than it shows), MaxAge per attempt, MaxBytes for the
// whole stream (oldest first, whatever the webhook). A read of one webhook
// touches at most MaxPerWebhook messages, never the stream; a read of one
// event touches its workspace's subjects, at most MaxScan messages.
//
// # Cost on the hot path
//
// Record encodes the attempt and publishes it asynchronously on its own
// JetStream context: the delivery never waits for the log, and a bbolt
// fsync is never involved. When the server does not keep up (more than
// MaxPending records unacknowledged), records are dropped and counted in
// webhookd_delivery_log_dropped_total rather than slowing deliveries.
package deliverylog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// Defaults of the zero Config fields.
const (
	DefaultStream        = "WEBHOOKD_ATTEMPTS"
	DefaultSubjectPrefix = "webhookd"
	DefaultMaxPerWebhook = 1000
	DefaultMaxAge        = 7 * 24 * time.Hour
	DefaultMaxBytes      = 1 << 30
	DefaultMaxPending    = 8192
	DefaultFlushInterval = 50 * time.Millisecond
	DefaultMaxBatch      = 32
	// MaxPerWebhookLimit caps MaxPerWebhook: one read of a webhook's
	// deliveries moves up to that many attempts.
	MaxPerWebhookLimit = 100000
)

// Config configures a Log. Only JetStream is required.
type Config struct {
	// JetStream is the context the stream lives in. Required. Record
	// publishes through a context of its own on the same connection, so
	// its pending acknowledgements never stall the caller's.
	JetStream jetstream.JetStream
	// Stream names the stream. Zero means "WEBHOOKD_ATTEMPTS".
	Stream string
	// SubjectPrefix roots the subjects: webhook W of workspace S logs on
	// <SubjectPrefix>.attempts.S.W. Zero means "webhookd". It must not
	// be the events' subject prefix, whose stream captures <prefix>.>.
	SubjectPrefix string
	// MaxPerWebhook bounds the attempts kept per webhook; the oldest go
	// first. Zero means 1000; at most 100000.
	MaxPerWebhook int
	// MaxAge is how long an attempt is kept. Zero means 7 days, the
	// events stream's default retention: what can be replayed can be
	// inspected.
	MaxAge time.Duration
	// MaxBytes bounds the whole stream; at it the oldest attempts (of
	// any webhook) are discarded. Zero means 1 GiB.
	MaxBytes int64
	// MaxScan bounds the attempts one event look-up reads (all of its
	// workspace's). Zero means 20 × MaxPerWebhook.
	MaxScan int
	// MaxPending is how many records may await the server's
	// acknowledgement; beyond it new records are dropped and counted.
	// Zero means 8192.
	MaxPending int
	// FlushInterval is how long attempts wait to be published together
	// with the same webhook's others: the delay before a read sees an
	// attempt. Zero means 50ms.
	FlushInterval time.Duration
	// MaxBatch is the most attempts one message holds; a full batch is
	// published at once. Zero means 32.
	MaxBatch int
	// Replicas is the stream's replica count. Zero means 1.
	Replicas int
	// Logger receives operational logs (webhook ids, never URLs).
	// Nil discards them.
	Logger *slog.Logger
	// Registerer receives webhookd_delivery_log_records_total and
	// webhookd_delivery_log_dropped_total. Nil records nothing.
	Registerer prometheus.Registerer
}

// Log is the shared delivery log. Create it with New and drive it with
// Run; until Run has set the stream up, Record drops (and counts) and
// the reads return errors wrapping registry.ErrUnavailable.
type Log struct {
	cfg     Config
	root    string // "<prefix>.attempts."
	log     *slog.Logger
	pub     jetstream.JetStream
	metrics metrics

	mu     sync.RWMutex
	stream jetstream.Stream // nil until Run has set it up
	// batches holds each webhook's attempts not yet published, by subject.
	batches map[string][]byte
	counts  map[string]int
	// warned limits the log of dropped records to once a minute.
	warned time.Time
}

// ErrUnavailable wraps registry.ErrUnavailable: the stream is not set up
// yet or NATS cannot be reached.
var ErrUnavailable = fmt.Errorf("delivery log: %w", registry.ErrUnavailable)

// New validates cfg and fills in its defaults. It does not touch NATS.
func New(cfg Config) (*Log, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("deliverylog: Config.JetStream is required")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	def(&cfg.MaxPerWebhook, DefaultMaxPerWebhook)
	def(&cfg.MaxPending, DefaultMaxPending)
	def(&cfg.Replicas, 1)
	def(&cfg.MaxScan, 20*cfg.MaxPerWebhook)
	def(&cfg.MaxBatch, DefaultMaxBatch)
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	switch {
	case strings.ContainsAny(cfg.Stream, " .*>\t\r\n/\\"):
		return nil, fmt.Errorf("deliverylog: Config.Stream %q must be a name without spaces, dots, wildcards or slashes", cfg.Stream)
	case events.ValidatePrefix(cfg.SubjectPrefix) != nil:
		return nil, fmt.Errorf("deliverylog: Config.SubjectPrefix %q must be dot-separated tokens without wildcards or spaces", cfg.SubjectPrefix)
	case cfg.MaxPerWebhook < 0 || cfg.MaxPerWebhook > MaxPerWebhookLimit:
		return nil, fmt.Errorf("deliverylog: Config.MaxPerWebhook must be 1 to %d, got %d", MaxPerWebhookLimit, cfg.MaxPerWebhook)
	case cfg.MaxAge < 0:
		return nil, fmt.Errorf("deliverylog: Config.MaxAge must not be negative, got %s", cfg.MaxAge)
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("deliverylog: Config.MaxBytes must not be negative, got %d", cfg.MaxBytes)
	case cfg.MaxScan < 0:
		return nil, fmt.Errorf("deliverylog: Config.MaxScan must not be negative, got %d", cfg.MaxScan)
	case cfg.MaxBatch < 0 || cfg.MaxBatch > 1000 || cfg.FlushInterval < 0:
		return nil, fmt.Errorf("deliverylog: Config.MaxBatch must be 1 to 1000 and FlushInterval not negative")
	case cfg.MaxPending < 0:
		return nil, fmt.Errorf("deliverylog: Config.MaxPending must not be negative, got %d", cfg.MaxPending)
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return nil, fmt.Errorf("deliverylog: Config.Replicas must be 1 to 5, got %d", cfg.Replicas)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, root: cfg.SubjectPrefix + ".attempts.", log: lg.With("component", "deliverylog"), metrics: m,
		batches: make(map[string][]byte), counts: make(map[string]int)}
	l.pub, err = jetstream.New(cfg.JetStream.Conn(),
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			l.dropped(bytes.Count(m.Data, []byte{'\n'}), "not stored", err) // one attempt a line
		}))
	if err != nil {
		return nil, fmt.Errorf("deliverylog: jetstream: %w", err)
	}
	return l, nil
}

// Filter is the stream's subject filter, <SubjectPrefix>.attempts.*.*.
func (l *Log) Filter() string { return l.root + "*.*" }

func (l *Log) subject(workspace, webhookID string) string {
	return l.root + workspace + "." + webhookID
}

// Ready reports nil once the stream is set up.
func (l *Log) Ready() error {
	if _, err := l.handle(); err != nil {
		return err
	}
	return nil
}

func (l *Log) handle() (jetstream.Stream, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.stream == nil {
		return nil, ErrUnavailable
	}
	return l.stream, nil
}

// Run sets the stream up (creating or updating it) and sets it up again
// after every reconnect, and publishes the batched attempts every
// FlushInterval, until ctx ends.
func (l *Log) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTicker(l.cfg.FlushInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				l.publishAll()
				return
			case <-t.C:
				l.publishAll()
			}
		}
	})
	nc := l.cfg.JetStream.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	const first, most = 500 * time.Millisecond, 10 * time.Second
	for wait := first; ; {
		var retry <-chan time.Time
		if err := l.setup(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.log.Warn("delivery log stream setup failed; retrying", "stream", l.cfg.Stream, "err", err, "in", wait)
			retry = time.After(wait)
			wait = min(2*wait, most)
		} else {
			wait = first
		}
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
		case <-retry:
		}
	}
}

func (l *Log) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := l.cfg.JetStream.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        l.cfg.Stream,
		Description: "webhookd delivery attempts, shared by every instance",
		Subjects:    []string{l.Filter()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.cfg.Replicas,
		// The per-subject limit is the per-webhook bound.
		MaxMsgsPerSubject: int64(l.cfg.MaxPerWebhook),
		MaxAge:            l.cfg.MaxAge,
		MaxBytes:          l.cfg.MaxBytes,
		Discard:           jetstream.DiscardOld,
		// Records carry no Nats-Msg-Id: a dedupe window would only cost.
		Duplicates:  min(time.Minute, l.cfg.MaxAge),
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("deliverylog: stream %s: %w", l.cfg.Stream, err)
	}
	l.mu.Lock()
	l.stream = st
	l.mu.Unlock()
	return nil
}
