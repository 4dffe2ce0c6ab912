package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// Defaults of the zero Config fields.
const (
	DefaultBucket          = "WEBHOOKD_REPLAYS"
	DefaultRate            = 100.0
	DefaultConcurrency     = 2
	DefaultMaxPerWorkspace = 4
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultHeartbeat       = time.Second
	DefaultStaleAfter      = 30 * time.Second
)

// Job states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCanceled  = "canceled"
)

// Request statuses: which matching events a job re-delivers.
const (
	StatusAll    = "all"    // every matching event ("" means this too)
	StatusFailed = "failed" // only those whose delivery is currently failed
)

// Request asks for a replay. Workspace is the caller's (from its API key).
type Request struct {
	Workspace, WebhookID string
	Since, Until         time.Time
	Status               string
}

// Job is a replay job as stored and as the API returns it.
type Job struct {
	ID        string    `json:"id"`
	Workspace string    `json:"workspace"`
	WebhookID string    `json:"webhookId"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	Status    string    `json:"status"` // "all" or "failed"
	State     string    `json:"state"`
	// Scanned counts the events of the webhook's workspace and event type
	// read within the window; Matched those that match the webhook (its
	// workflowId rule); Enqueued those re-delivered; Skipped those matching
	// but not re-delivered because their delivery is not failed (status
	// "failed"); Malformed those the decoder rejects (as fan-out does).
	Scanned    int64     `json:"scanned"`
	Matched    int64     `json:"matched"`
	Enqueued   int64     `json:"enqueued"`
	Skipped    int64     `json:"skipped"`
	Malformed  int64     `json:"malformed"`
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	UpdatedAt  time.Time `json:"updatedAt"`
	// Owner is the instance running the job; "" while queued.
	Owner string `json:"owner,omitempty"`
	// Cursor is the last events-stream sequence done: a successor resumes
	// after it. Stored, but no business of API clients.
	Cursor uint64 `json:"-"`
}

// Finished reports whether the job has ended.
func (j Job) Finished() bool {
	return j.State == StateSucceeded || j.State == StateFailed || j.State == StateCanceled
}

// Delivery is one event to re-deliver to one webhook.
type Delivery struct {
	ReplayID  string
	Event     events.Event
	WebhookID string
	Workspace string
}

// Enqueuer stores a fresh delivery job (fresh retry budget, the same
// webhook-id as the original delivery). It returns nil only once the job
// is durably stored; the replay resumes after the last event it returned
// nil for. The dispatcher implements it and may deduplicate on
// <ReplayID>.<deliveryID>.
type Enqueuer interface {
	Replay(ctx context.Context, d Delivery) error
}

// FailedSource lists what is currently failed for one webhook. It returns
// event ids rather than delivery ids (signature.DeliveryID(eventID,
// webhookID)) because within one webhook the two are one-to-one and
// registry packages do not import dispatcher; the dispatcher builds the
// set from its failure records' EventID.
type FailedSource interface {
	FailedEventIDs(ctx context.Context, workspace, webhookID string) (map[string]bool, error)
}

// WebhookSource is the registry's index (registry.Index satisfies it).
type WebhookSource interface {
	Get(id string) (*registry.Webhook, bool)
}

// Errors, checked with errors.Is. ErrNotFound and ErrUnavailable wrap the
// registry's, so the API maps them to 404 and 503 as it does for webhooks.
var (
	ErrNotFound    = fmt.Errorf("replay: not found: %w", registry.ErrNotFound)
	ErrInvalid     = errors.New("replay: invalid request")
	ErrTooMany     = errors.New("replay: too many unfinished replays in this workspace")
	ErrUnavailable = fmt.Errorf("replay: the shared replay bucket is unavailable: %w", registry.ErrUnavailable)
)

// Config configures a Manager.
type Config struct {
	// JetStream is the context the bucket and the events stream live in.
	// Required.
	JetStream jetstream.JetStream
	// Bucket names the key-value bucket. Zero means "WEBHOOKD_REPLAYS".
	Bucket string
	// Replicas is the bucket's replica count. Zero means 1.
	Replicas int
	// EventStream names the events stream. Zero means
	// events.DefaultStreamName ("WEBHOOKD_EVENTS"), cmd/webhookd's default.
	EventStream string
	// Decoder decodes each event as fan-out does (same subject prefix and
	// size limit); its Subjects also build the subject a job reads.
	Decoder events.Decoder
	// Webhooks, Enqueuer: required. Failed may be nil; then a request with
	// status "failed" is refused.
	Webhooks WebhookSource
	Enqueuer Enqueuer
	Failed   FailedSource
	// Rate is re-deliveries per second per job. Zero means 100.
	Rate float64
	// Concurrency is the jobs running at once on this instance; others
	// wait as queued for a free slot on any instance. Zero means 2.
	Concurrency int
	// MaxPerWorkspace bounds a workspace's unfinished (queued or running)
	// jobs across all instances; Start beyond it returns ErrTooMany. Zero
	// means 4.
	MaxPerWorkspace int
	// Retention is how long a record nobody rewrites stays (the bucket's
	// TTL): finished jobs are readable that long. It also bounds how long
	// a job may wait queued (or run) while its workspace starts no other
	// replay: its place in the active list expires then. Zero means 7 days.
	Retention time.Duration
	// MaxBytes bounds the bucket (records are about 600 bytes); the
	// daemon gives it its capacity.Budget share (1% of the store, at most
	// 256 MiB), so that looping start-and-cancel cannot fill the store.
	// Once it is full, Start fails with ErrUnavailable until Retention
	// frees room. Zero means no byte limit.
	MaxBytes int64
	// Heartbeat is how often a running job writes its progress. Zero
	// means 1s. It must be well under StaleAfter.
	Heartbeat time.Duration
	// StaleAfter is the age of a running job's record after which another
	// instance takes it over; schedulers also scan every StaleAfter/2.
	// Zero means 30s.
	StaleAfter time.Duration
	// Instance names this instance in Job.Owner. Zero means a random name.
	Instance string
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives webhookd_replays_total{outcome} and
	// webhookd_replay_deliveries_total. Nil records nothing.
	Registerer prometheus.Registerer
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Manager starts, runs, and reports replay jobs. Create it with New and
// drive it with Run; until Run has bound the bucket, Start and Get return
// ErrUnavailable.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	m    metrics
	kick chan struct{} // asks the scheduler to scan now

	mu      sync.Mutex
	kv      jetstream.KeyValue
	running map[string]bool // jobs this instance runs now
}

// New validates cfg and fills in its defaults. It does not touch NATS.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.JetStream == nil:
		return nil, errors.New("replay: Config.JetStream is required")
	case cfg.Webhooks == nil:
		return nil, errors.New("replay: Config.Webhooks is required")
	case cfg.Enqueuer == nil:
		return nil, errors.New("replay: Config.Enqueuer is required")
	}
	defs(&cfg.Bucket, DefaultBucket)
	defs(&cfg.EventStream, events.DefaultStreamName)
	defs(&cfg.Replicas, 1)
	defs(&cfg.Rate, DefaultRate)
	defs(&cfg.Concurrency, DefaultConcurrency)
	defs(&cfg.MaxPerWorkspace, DefaultMaxPerWorkspace)
	defs(&cfg.Retention, DefaultRetention)
	defs(&cfg.Heartbeat, DefaultHeartbeat)
	defs(&cfg.StaleAfter, DefaultStaleAfter)
	switch {
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return nil, fmt.Errorf("replay: Config.Replicas must be 1 to 5, got %d", cfg.Replicas)
	case cfg.Rate < 0 || cfg.Concurrency < 0 || cfg.MaxPerWorkspace < 0 || cfg.Retention < 0 || cfg.MaxBytes < 0:
		return nil, errors.New("replay: Rate, Concurrency, MaxPerWorkspace, Retention and MaxBytes must not be negative")
	case cfg.Heartbeat < 0 || cfg.StaleAfter < 2*cfg.Heartbeat:
		return nil, fmt.Errorf("replay: StaleAfter (%s) must be at least twice Heartbeat (%s)", cfg.StaleAfter, cfg.Heartbeat)
	case strings.ContainsAny(cfg.Bucket, " .*>\t\r\n/\\"):
		return nil, fmt.Errorf("replay: Config.Bucket %q must be a name without spaces, dots, wildcards or slashes", cfg.Bucket)
	}
	if p := cfg.Decoder.Subjects.Prefix; p != "" {
		if err := events.ValidatePrefix(p); err != nil {
			return nil, fmt.Errorf("replay: Config.Decoder.Subjects: %w", err)
		}
	}
	if cfg.Instance == "" {
		cfg.Instance = "replay-" + randHex(6)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, log: lg.With("component", "replay", "instance", cfg.Instance), m: m,
		kick: make(chan struct{}, 1), running: make(map[string]bool)}, nil
}

func defs[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func (m *Manager) now() time.Time { return m.cfg.Now().UTC() }

func (m *Manager) bucket() (jetstream.KeyValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.kv == nil {
		return nil, ErrUnavailable
	}
	return m.kv, nil
}

// Ready reports nil once Run has bound the bucket.
func (m *Manager) Ready() error {
	_, err := m.bucket()
	return err
}

// Start validates r, records a queued job and returns it; an instance with
// a free slot (this one first) runs it. An unknown webhook, or another
// workspace's, is ErrNotFound.
func (m *Manager) Start(ctx context.Context, r Request) (Job, error) {
	kv, err := m.bucket()
	if err != nil {
		return Job{}, err
	}
	wh, ok := m.cfg.Webhooks.Get(r.WebhookID)
	if !ok || wh.Workspace != r.Workspace || events.ValidateWorkspace(r.Workspace) != nil {
		return Job{}, fmt.Errorf("replay: webhook %q: %w", r.WebhookID, ErrNotFound)
	}
	now := m.now()
	r, err = m.validate(r, now)
	if err != nil {
		return Job{}, err
	}
	if wh.Disabled {
		// Its deliveries would only be recorded as failed again.
		return Job{}, &FieldError{Fields: map[string]string{"webhook": "is disabled; enable it before replaying"}}
	}
	now = now.Truncate(time.Millisecond)
	rec := record{Job: Job{
		ID: newID(now), Workspace: r.Workspace, WebhookID: r.WebhookID, Since: r.Since, Until: r.Until,
		Status: r.Status, State: StateQueued, CreatedAt: now, UpdatedAt: now,
	}, EventType: wh.EventType}
	if err := m.reserve(ctx, kv, rec.Workspace, rec.ID, now); err != nil {
		return Job{}, err
	}
	if _, err := kv.Create(ctx, jobKey(rec.Workspace, rec.ID), encode(rec)); err != nil {
		m.release(context.WithoutCancel(ctx), kv, rec.Workspace, rec.ID)
		return Job{}, wrap(err, "create job")
	}
	m.log.Info("replay queued", "job", rec.ID, "webhook", rec.WebhookID, "since", rec.Since, "until", rec.Until,
		"status", rec.Status)
	m.poke()
	return rec.Job, nil
}

// Get returns the job with this id in the caller's workspace; another
// workspace's job is ErrNotFound.
func (m *Manager) Get(ctx context.Context, workspace, id string) (Job, error) {
	kv, err := m.bucket()
	if err != nil {
		return Job{}, err
	}
	rec, _, err := m.load(ctx, kv, workspace, id)
	if err != nil {
		return Job{}, err
	}
	return rec.job(), nil
}

// Cancel ends an unfinished job as canceled; its owner notices at its
// next progress write. A finished job is returned unchanged.
func (m *Manager) Cancel(ctx context.Context, workspace, id string) (Job, error) {
	kv, err := m.bucket()
	if err != nil {
		return Job{}, err
	}
	for range casAttempts {
		rec, rev, err := m.load(ctx, kv, workspace, id)
		if err != nil || rec.Finished() {
			return rec.job(), err
		}
		now := m.now()
		rec.State, rec.Owner, rec.FinishedAt, rec.UpdatedAt = StateCanceled, "", now, now
		if _, err := kv.Update(ctx, jobKey(workspace, id), encode(rec), rev); err != nil {
			if conflict(err) {
				continue
			}
			return Job{}, wrap(err, "cancel job")
		}
		m.m.outcome(StateCanceled)
		m.release(ctx, kv, workspace, id)
		return rec.job(), nil
	}
	return Job{}, fmt.Errorf("replay: cancel %s: the job kept changing: %w", id, ErrUnavailable)
}
