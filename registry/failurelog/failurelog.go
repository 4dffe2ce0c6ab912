// Package failurelog keeps the records of deliveries the retry policy gave
// up on in a JetStream stream that every webhookd instance writes and
// reads, so that listing a webhook's failures and retrying one give the
// same answer through any instance behind a load balancer.
//
// # Layout
//
// One stream (WEBHOOKD_FAILURES by default) holds one subject per webhook,
// <SubjectPrefix>.failures.<webhookID>. Each message is one record: its
// metadata (ids, attempts, last status and error, times) as JSON in the
// Webhookd-Failure header, the event body as published in the payload.
// Keeping the metadata in a header lets lists and look-ups read headers
// only, so a list of 100 records does not move 100 event bodies.
//
// # Bounds
//
// MaxPerWebhook records per webhook (the oldest are discarded by the
// server), MaxAge per record, MaxBytes for the whole stream (oldest
// first, whatever the webhook). Every read filters on one webhook's
// subject, so it touches at most MaxPerWebhook messages, never the stream.
package failurelog

import (
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
	DefaultStream        = "WEBHOOKD_FAILURES"
	DefaultSubjectPrefix = "webhookd"
	DefaultMaxPerWebhook = 100
	DefaultMaxAge        = 30 * 24 * time.Hour
	DefaultMaxBytes      = 1 << 30
	// MaxPerWebhookLimit caps MaxPerWebhook: it is also the largest number
	// of message headers one read asks the server for.
	MaxPerWebhookLimit = 10000
)

// Config configures a Log. Only JetStream is required.
type Config struct {
	// JetStream is the context the stream lives in. Required.
	JetStream jetstream.JetStream
	// Stream names the stream. Zero means "WEBHOOKD_FAILURES".
	Stream string
	// SubjectPrefix roots the records' subjects: webhook W's records are
	// on <SubjectPrefix>.failures.W. Zero means "webhookd", beside the
	// deliveries stream's default root webhookd.deliveries. It must not
	// be (or start with) the events' subject prefix, whose stream captures
	// <prefix>.>; JetStream refuses overlapping streams and Run logs it.
	SubjectPrefix string
	// MaxPerWebhook bounds the records kept per webhook; the oldest go
	// first. Zero means 100; at most 10000.
	MaxPerWebhook int
	// MaxAge is how long a record is kept. Zero means 30 days.
	MaxAge time.Duration
	// MaxBytes bounds the whole stream; when it is full the oldest records
	// (of any webhook) are discarded. Zero means 1 GiB.
	MaxBytes int64
	// MaxBodyBytes bounds the event body kept per record. Zero keeps
	// bodies whole: they are already bounded by the dispatcher's largest
	// accepted event (--max-event-bytes, 256 KiB by default). A body over
	// the bound, or one that would make the record exceed the NATS
	// server's max_payload, is left out: the record can still be listed
	// but not retried, which beats a record that can never be written
	// (the dispatcher would keep retrying it).
	MaxBodyBytes int
	// Replicas is the stream's replica count. Zero means 1.
	Replicas int
	// Logger receives operational logs (webhook ids, never URLs or
	// secrets). Nil discards them.
	Logger *slog.Logger
	// Registerer receives webhookd_failurelog_malformed_total. Nil
	// records nothing.
	Registerer prometheus.Registerer
}

// Log is the shared failure log. Create it with New and drive it with
// Run; until Run has set the stream up, every method returns an error
// wrapping registry.ErrUnavailable. It is safe for concurrent use.
type Log struct {
	cfg       Config
	root      string // "<prefix>.failures."
	log       *slog.Logger
	malformed prometheus.Counter
	// kick asks Run to set the stream up again (a method found it gone).
	kick chan struct{}

	mu     sync.RWMutex
	stream jetstream.Stream // nil until Run has set it up
}

// New validates cfg and fills in its defaults. It does not touch NATS.
func New(cfg Config) (*Log, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("failurelog: Config.JetStream is required")
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if cfg.MaxPerWebhook == 0 {
		cfg.MaxPerWebhook = DefaultMaxPerWebhook
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	switch {
	case strings.ContainsAny(cfg.Stream, " .*>\t\r\n/\\"):
		return nil, fmt.Errorf("failurelog: Config.Stream %q must be a name without spaces, dots, wildcards or slashes", cfg.Stream)
	case events.ValidatePrefix(cfg.SubjectPrefix) != nil:
		return nil, fmt.Errorf("failurelog: Config.SubjectPrefix %q must be dot-separated tokens without wildcards or spaces", cfg.SubjectPrefix)
	case cfg.MaxPerWebhook < 0 || cfg.MaxPerWebhook > MaxPerWebhookLimit:
		return nil, fmt.Errorf("failurelog: Config.MaxPerWebhook must be 1 to %d, got %d", MaxPerWebhookLimit, cfg.MaxPerWebhook)
	case cfg.MaxAge < 0:
		return nil, fmt.Errorf("failurelog: Config.MaxAge must not be negative, got %s", cfg.MaxAge)
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("failurelog: Config.MaxBytes must not be negative, got %d", cfg.MaxBytes)
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("failurelog: Config.MaxBodyBytes must not be negative, got %d", cfg.MaxBodyBytes)
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return nil, fmt.Errorf("failurelog: Config.Replicas must be 1 to 5, got %d", cfg.Replicas)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	malformed := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "webhookd", Subsystem: "failurelog", Name: "malformed_total",
		Help: "Messages in the shared failure stream that could not be read as failure records and were skipped (counted on every read that meets them).",
	})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(malformed); err != nil {
			// A second Log in one process (tests, a restart of the
			// component) shares the first one's counter.
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("failurelog: register metrics: %w", err)
			}
			c, ok := are.ExistingCollector.(prometheus.Counter)
			if !ok {
				return nil, fmt.Errorf("failurelog: register metrics: %w", err)
			}
			malformed = c
		}
	}
	return &Log{
		cfg: cfg, root: cfg.SubjectPrefix + ".failures.", log: lg.With("component", "failurelog"),
		malformed: malformed, kick: make(chan struct{}, 1),
	}, nil
}

// Filter is the subject filter of the stream, <SubjectPrefix>.failures.*.
func (l *Log) Filter() string { return l.root + "*" }

func (l *Log) subject(webhookID string) string { return l.root + webhookID }

// Ready reports nil once the stream is set up.
func (l *Log) Ready() error {
	_, err := l.handle()
	return err
}

func (l *Log) handle() (jetstream.Stream, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.stream == nil {
		return nil, fmt.Errorf("failurelog: stream %s is not set up yet: %w", l.cfg.Stream, registry.ErrUnavailable)
	}
	return l.stream, nil
}

// Run creates or updates the stream, retrying while NATS is unreachable,
// and sets it up again after every reconnect (the server may have lost
// it) until ctx ends. It returns nil when ctx ends and leaves no
// goroutine behind.
func (l *Log) Run(ctx context.Context) error {
	nc := l.cfg.JetStream.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	const first, most = 500 * time.Millisecond, 10 * time.Second
	wait := first
	for {
		err := l.setup(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var retry <-chan time.Time // nil once set up: wait for a reconnect or a kick
		var t *time.Timer
		if err != nil {
			if isOverlap(err) {
				l.log.Error("failure stream subjects overlap another stream; set another subject prefix",
					"stream", l.cfg.Stream, "subjects", l.Filter(), "err", err)
			} else {
				l.log.Warn("failure stream setup failed; retrying", "stream", l.cfg.Stream, "err", err, "in", wait)
			}
			t = time.NewTimer(wait)
			retry = t.C
			wait = min(2*wait, most)
		} else {
			wait = first
		}
		select {
		case <-ctx.Done():
		case <-reconnected:
		case <-l.kick:
		case <-retry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (l *Log) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := l.cfg.JetStream.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        l.cfg.Stream,
		Description: "webhookd deliveries that ran out of retries, shared by every instance",
		Subjects:    []string{l.Filter()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.cfg.Replicas,
		// Per-subject limit = per-webhook bound; the server drops the
		// webhook's oldest record when a new one arrives.
		MaxMsgsPerSubject: int64(l.cfg.MaxPerWebhook),
		MaxAge:            l.cfg.MaxAge,
		MaxBytes:          l.cfg.MaxBytes,
		Discard:           jetstream.DiscardOld,
		// Records carry no Nats-Msg-Id (a replaced record is removed
		// explicitly), so the window only has to fit within MaxAge.
		Duplicates: min(time.Minute, l.cfg.MaxAge),
	})
	if err != nil {
		return fmt.Errorf("failurelog: stream %s: %w", l.cfg.Stream, err)
	}
	l.mu.Lock()
	fresh := l.stream == nil
	l.stream = st
	l.mu.Unlock()
	if fresh {
		l.log.Info("failure stream ready", "stream", l.cfg.Stream, "subjects", l.Filter(),
			"max_per_webhook", l.cfg.MaxPerWebhook, "max_age", l.cfg.MaxAge, "max_bytes", l.cfg.MaxBytes)
	}
	return nil
}

// JetStream's error code for a stream whose subjects overlap another's.
const errCodeSubjectOverlap = 10065

func isOverlap(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == errCodeSubjectOverlap
}

// wrap adds context to a NATS error and marks the transient ones with
// registry.ErrUnavailable, so the API answers 503 (retry later) rather
// than 500, and a stream deleted under us is set up again.
func (l *Log) wrap(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	if unavailable(err) {
		return fmt.Errorf("failurelog: %s: %w: %w", msg, registry.ErrUnavailable, err)
	}
	return fmt.Errorf("failurelog: %s: %w", msg, err)
}

func unavailable(err error) bool {
	for _, e := range []error{
		nats.ErrTimeout, context.DeadlineExceeded, nats.ErrNoResponders, nats.ErrConnectionClosed,
		nats.ErrConnectionDraining, nats.ErrConnectionReconnecting, nats.ErrDisconnected,
		jetstream.ErrNoStreamResponse, jetstream.ErrStreamNotFound, jetstream.ErrJetStreamNotEnabled,
		jetstream.ErrNoHeartbeat,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
