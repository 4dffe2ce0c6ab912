package dispatcher

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/events"
)

// Config configures a Dispatcher. Fields marked required must be set; every
// other zero value picks the documented default.
type Config struct {
	// Conn is webhookd's NATS connection. Required. The dispatcher makes its
	// own JetStream context on it, with bounded async publishing.
	Conn *nats.Conn
	// Subscriptions finds the webhooks an event goes to. Required.
	Subscriptions Subscriptions
	// Failures records deliveries the retry policy gave up on. Required.
	Failures FailureRecorder
	// Lookup, when set, is asked about a job whose webhook Subscriptions
	// does not know: with several instances, the job may have arrived before
	// the registration did. Nil treats an unknown webhook as deleted.
	Lookup Lookup
	// Registry, when set, is the shared registry's freshness barrier: fan-out
	// takes no event before it has synced once (the join gate), and matches
	// each fetched batch only after a Sync that began after the batch
	// arrived, so every registration acknowledged by any instance before an
	// event was stored is matched. Nil (a registry local to this instance)
	// matches at once.
	Registry RegistrySync
	// RegistrySyncTimeout bounds one batch's wait for Registry; a batch that
	// waits longer is handed back (NAK) and fanned out again after
	// RegistrySyncRetry. Zero means 5s; it must stay well below the events
	// consumer's ack wait.
	RegistrySyncTimeout time.Duration
	// RegistrySyncRetry is the redelivery delay of such a batch. Zero means 1s.
	RegistrySyncRetry time.Duration
	// Client performs the HTTP attempts; build it with dispatcher/transport so
	// it carries the SSRF guard, timeouts and no-redirect policy. Required.
	Client *http.Client

	// EventStream configures the stream that captures published events.
	EventStream events.StreamConfig
	// MaxEventBytes is the largest event accepted. Zero means 256 KiB.
	MaxEventBytes int

	// DeliveriesStream names the stream holding delivery jobs and scheduled
	// retries. Zero means "WEBHOOKD_DELIVERIES".
	DeliveriesStream string
	// DeliveriesSubject is the subject root of that stream; jobs go to
	// <root>.job.<webhookId> and retries wait on <root>.sched.<webhookId>.<n>.
	// It must not overlap the event subjects. Zero means "webhookd.deliveries".
	DeliveriesSubject string
	// FanoutConsumer and DeliveryConsumer name the durable consumers that all
	// instances share. Zero means "webhookd-fanout" and "webhookd-deliver".
	FanoutConsumer   string
	DeliveryConsumer string
	// ProbationConsumer names the durable consumer of the probation
	// subjects (jobs of new, failing and parked webhooks). Zero means
	// DeliveryConsumer + "-probation".
	ProbationConsumer string
	// Replicas is the deliveries stream's replica count. Zero means 1.
	Replicas int

	// DeliveriesMaxBytes bounds the deliveries stream (capacity.Budget's
	// Deliveries share). Fan-out enforces it, not the server: JetStream
	// refuses "discard new" on a stream with message schedules, and a
	// server byte limit that discards old messages would silently drop the
	// oldest pending jobs. So the stream has no server-side byte limit,
	// and once it holds FanoutPauseAt of this, fan-out stops taking events
	// (they wait, durably, in the events stream) until deliveries, retries
	// and give-ups have made room. Zero means no bound.
	DeliveriesMaxBytes int64
	// FanoutPauseAt is the fill of DeliveriesMaxBytes at which fan-out
	// pauses; it resumes 5 points below. The rest is headroom for work
	// already taken, which re-stores jobs (retries, parked and deferred
	// jobs, bundle expansion) and needs room to do so. The fill is sampled
	// every second. Zero means 0.9.
	FanoutPauseAt float64
	// MaxDeliveries bounds how often JetStream may hand one message of the
	// deliveries stream (a job or a bundle) to the dispatcher without it
	// being settled. A message delivered more often is a poison: it is
	// recorded as a failed delivery (reason max_deliveries) and terminated
	// rather than handed out forever. Attempts do not count against it (a
	// retry is a new message), nor do parking and deferring (so are they);
	// what counts is a delivery that ends in a crash or an ack timeout, or
	// in a hand-back because the job's next state could not be stored. A
	// job handed back for reasons that are not its own (its host is busy,
	// the shared registry is unreachable) is stored again as a fresh
	// message once it has used half of the bound, so a slow path cannot
	// exhaust it. Hand-backs also wait longer each time (up to a minute),
	// so 50 deliveries span tens of minutes, not seconds. Zero means 50.
	MaxDeliveries int

	// Retry is the retry policy (zero value: 5s initial, 4h cap, 72h age).
	Retry retry.Policy
	// DeliveryTimeout bounds one HTTP attempt. Zero means 15s. It must match
	// the Client's timeout; the ack deadline is derived from it.
	DeliveryTimeout time.Duration
	// MaxConnsPerHost caps concurrent attempts to one destination host, so a
	// slow receiver only ever slows itself. Zero means 64.
	MaxConnsPerHost int
	// HostQueue is how many jobs may wait for one host's free connection
	// before further jobs for it are handed back to JetStream for a moment.
	// It should absorb a fetch batch for a fast host yet stay well below
	// MaxAckPending, so a hanging host cannot hold every unacked slot.
	// Zero means 4096.
	HostQueue int
	// DeferDelay is how long a job whose busy host has no room waits, stored
	// again as a scheduled message, before it is offered again (plus up to
	// half as much jitter); a host that is timing out waits a
	// DeliveryTimeout instead, and one not tried yet twice its first
	// attempt's age so far, between FreshDeferMin and a second. Zero means
	// 2s.
	DeferDelay time.Duration
	// FreshDeferMin is the shortest wait of a job set aside for a host not
	// tried yet: a burst to a new, quick endpoint comes back this soon.
	// Zero means 100ms.
	FreshDeferMin time.Duration
	// Workers caps concurrent attempts across all hosts. Zero means 2048.
	Workers int
	// FetchBatch is how many messages each consumer keeps buffered. Zero
	// means 512.
	FetchBatch int
	// MaxAckPending bounds unacknowledged delivery jobs per consumer across
	// all instances. Zero means 20000.
	MaxAckPending int
	// FanoutAckPending bounds the fan-out consumer's events taken and not
	// yet acked, across all instances: the events whose jobs are being
	// stored, and those waiting for their direct deliveries (DirectMax).
	// Zero means 4096.
	FanoutAckPending int
	// PullWait is how long one pull request stays open on the server. It
	// bounds how long a lost request can stall a consumer, and how long
	// shutdown waits for the round in progress; jobs a stopping instance
	// hands back wait twice this. An idle consumer costs 1/PullWait
	// requests a second. Zero means 250ms.
	PullWait time.Duration
	// LanePushBack is how long a job for a proven host whose lane is full
	// but progressing waits for room before it is set aside: a busy
	// healthy host slows intake rather than bouncing jobs. Zero means 1s.
	LanePushBack time.Duration

	// Isolation: how failing destinations are kept from the capacity that
	// healthy ones need. A destination host is "proven" while its latest
	// attempt got an HTTP answer within a second; a webhook is healthy while
	// its circuit is closed with no failures since its last success.
	// Attempts for healthy webhooks or proven hosts use the Workers pool;
	// the first attempts to a host never tried use the FreshWorkers pool;
	// every other attempt (failing webhooks, probes, hosts that time out)
	// shares the smaller probation pool. Jobs of webhooks that are not
	// healthy travel on their own subjects, consumer and ack window, and
	// when many webhooks are not, as one bundle per event. So dead
	// destinations can never take the workers, connections, queue or ack
	// slots healthy ones need.

	// Breaker tunes the per-webhook circuit breaker (see dispatcher/breaker:
	// 5 failures or 2 timeouts in a row open a circuit for 5s, doubling on
	// every failed probe up to 5m).
	Breaker breaker.Config
	// ProvenLatency is how quickly a host must answer (any status) for its
	// attempt to count as progress: such a host is proven and its busy lane
	// pushes back on the consumer; one that hangs until the timeout does
	// not, however many of its attempts end. Zero means 1s.
	ProvenLatency time.Duration
	// ProbationWorkers caps concurrent attempts outside the healthy pool.
	// Zero means Workers/4.
	ProbationWorkers int
	// FreshWorkers caps concurrent attempts to hosts not tried yet (with
	// ProbationConnsPerHost each), apart from both other pools. Zero means
	// Workers.
	FreshWorkers int
	// SlowWorkers caps attempts that left the healthy pool because they
	// had run for SlowAfter without an answer: a host that stops answering
	// keeps the attempts it had started, but not the healthy workers, for
	// the DeliveryTimeout they take to fail (see stall.go). When it is
	// full, further such attempts keep their healthy worker. Zero means
	// Workers.
	SlowWorkers int
	// SlowAfter is how long an attempt holds its healthy worker before it
	// moves to the SlowWorkers pool. Moving costs nothing to the attempt;
	// it only frees the healthy worker. Only attempts that took their
	// worker while the healthy pool was more than half taken move (below
	// half there is room to spare), so at worst half of it waits on hosts
	// that stopped answering. Zero means ProvenLatency/10.
	SlowAfter time.Duration
	// ProbationConnsPerHost caps concurrent attempts to a host that is not
	// proven, so a hanging host holds at most this many connections before
	// its circuits open. Zero means 2.
	ProbationConnsPerHost int
	// HangingConnsPerHost caps concurrent attempts to a host whose latest
	// attempt timed out, so the attempts running when its first timeout
	// came end without others starting behind them. Zero means 1.
	HangingConnsPerHost int
	// ProbationHostQueue is how many jobs may wait for a host that is not
	// proven. Zero means 64.
	ProbationHostQueue int
	// ProbationAckPending bounds the probation consumer's unacknowledged
	// jobs, apart from the healthy consumer's MaxAckPending. Zero means
	// MaxAckPending/4.
	ProbationAckPending int
	// ProbationQueued caps jobs waiting in the lanes of all hosts that are
	// not proven together, so hanging hosts cannot fill the consumer's
	// ack-pending window; further jobs are handed back for a few seconds
	// until their circuits open and they are parked instead. Zero means
	// MaxAckPending/4.
	ProbationQueued int

	// Direct delivery (see direct.go): a healthy webhook's first attempt
	// is made straight from its event, with no job stored, while the event
	// stays unacked. A delivery goes direct when its webhook's circuit is
	// closed with no failures, its host answered within ProvenLatency
	// lately, and the host's lane has room.

	// DirectDeadline is how long an event waits for its direct deliveries:
	// one still queued then is stored as a job, one still being attempted
	// gets a stored continuation. Zero means 1s; negative turns direct
	// delivery off (every delivery is stored as a job first).
	DirectDeadline time.Duration
	// DirectPerHost caps one host's direct deliveries not yet settled, and
	// the length of its lane beyond which a delivery is stored as a job
	// instead: a direct delivery should start at once, not wait behind a
	// backlog until its deadline stores it after all. Zero means
	// 2*MaxConnsPerHost.
	DirectPerHost int
	// DirectMax caps direct deliveries not yet settled in this process, so
	// they hold at most this share of the fan-out consumer's window
	// (FanoutAckPending). Zero means FanoutAckPending/4.
	DirectMax int

	// LaneIdle is how long a host's lane, and with it the host's standing
	// (proven or not), outlives its last attempt. Zero means 1m.
	LaneIdle time.Duration

	// Health, when set, shares each webhook's health and circuit with every
	// instance (registry/health.Store). Nil keeps it in this process.
	Health HealthStore
	// Attempts, when set, receives every attempt and every give-up
	// (registry/deliverylog.Log, shared by every instance). Nil logs
	// none: only failures are kept, in Failures.
	Attempts AttemptLog
	// HealthSuccessInterval is how often a healthy webhook's last success
	// time is rewritten in Health; other changes are written within
	// HealthFlushInterval. Zero means 1m.
	HealthSuccessInterval time.Duration
	// HealthFlushInterval is how often changed health records are written
	// to Health (a circuit that opens or closes is written at once). Zero
	// means 1s.
	HealthFlushInterval time.Duration
	// HealthWriters is how many health records one flush writes at once.
	// Zero means 16.
	HealthWriters int
	// Disabler turns webhooks off (registry.Store satisfies it). Nil never
	// disables anything.
	Disabler Disabler
	// DisableAfter disables a webhook whose attempts have failed, without a
	// single success, for this long. Zero never disables on age.
	DisableAfter time.Duration
	// DisableOnGone disables a webhook whose receiver answers 410 Gone.
	DisableOnGone bool
	// AnnounceRetry is the first wait before the webhook.disabled event is
	// published again after a failed publish; it doubles up to 8 times
	// this, until the event is stored or the dispatcher stops. Zero means
	// 500ms.
	AnnounceRetry time.Duration

	// BeforeAck, when set, runs after a 2xx and before the job is acked.
	// It exists for fault-injection tests (crash between delivery and ack);
	// leave it nil in production.
	BeforeAck func(deliveryID string)

	// UserAgent is sent with every attempt. Zero means "webhookd".
	UserAgent string
	// Logger receives operational logs. Nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the dispatcher's metrics. Nil means none.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.Conn == nil || c.Subscriptions == nil || c.Failures == nil || c.Client == nil {
		return errors.New("dispatcher: Conn, Subscriptions, Failures and Client are required")
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = 256 << 10
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defs := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	defs(&c.EventStream.Name, events.DefaultStreamName)
	defs(&c.DeliveriesStream, "WEBHOOKD_DELIVERIES")
	defs(&c.DeliveriesSubject, "webhookd.deliveries")
	defs(&c.FanoutConsumer, "webhookd-fanout")
	defs(&c.DeliveryConsumer, "webhookd-deliver")
	defs(&c.UserAgent, "webhookd")
	def(&c.Replicas, 1)
	def(&c.MaxConnsPerHost, 64)
	def(&c.HostQueue, 4096)
	def(&c.Workers, 2048)
	def(&c.FetchBatch, 512)
	def(&c.MaxAckPending, 20000)
	def(&c.MaxDeliveries, 50)
	def(&c.FanoutAckPending, 4096)
	def(&c.HangingConnsPerHost, 1)
	def(&c.HealthWriters, 16)
	if c.FanoutPauseAt == 0 {
		c.FanoutPauseAt = 0.9
	}
	if c.DeliveriesMaxBytes < 0 || c.FanoutPauseAt <= resumeGap || c.FanoutPauseAt > 1 {
		return fmt.Errorf("dispatcher: DeliveriesMaxBytes must not be negative and FanoutPauseAt must be in (%g, 1]", resumeGap)
	}
	def(&c.ProbationWorkers, max(c.Workers/4, 1))
	def(&c.ProbationConnsPerHost, 2)
	def(&c.FreshWorkers, c.Workers)
	def(&c.SlowWorkers, c.Workers)
	def(&c.ProbationHostQueue, 64)
	def(&c.ProbationQueued, max(c.MaxAckPending/4, 1))
	def(&c.ProbationAckPending, max(c.MaxAckPending/4, 1))
	defs(&c.ProbationConsumer, c.DeliveryConsumer+"-probation")
	if c.ProvenLatency <= 0 {
		c.ProvenLatency = time.Second
	}
	if c.SlowAfter <= 0 {
		c.SlowAfter = max(c.ProvenLatency/10, time.Millisecond)
	}
	if c.RegistrySyncTimeout <= 0 {
		c.RegistrySyncTimeout = 5 * time.Second
	}
	if c.RegistrySyncRetry <= 0 {
		c.RegistrySyncRetry = time.Second
	}
	if c.DirectDeadline == 0 {
		c.DirectDeadline = time.Second
	}
	def(&c.DirectPerHost, 2*c.MaxConnsPerHost)
	def(&c.DirectMax, max(c.FanoutAckPending/4, 1))
	if c.LaneIdle <= 0 {
		c.LaneIdle = time.Minute
	}
	if c.PullWait <= 0 {
		c.PullWait = 250 * time.Millisecond
	}
	if c.LanePushBack <= 0 {
		c.LanePushBack = time.Second
	}
	if c.FreshDeferMin <= 0 {
		c.FreshDeferMin = 100 * time.Millisecond
	}
	if c.HealthFlushInterval <= 0 {
		c.HealthFlushInterval = time.Second
	}
	if c.DeferDelay <= 0 {
		c.DeferDelay = 2 * time.Second
	}
	if c.AnnounceRetry <= 0 {
		c.AnnounceRetry = 500 * time.Millisecond
	}
	if c.HealthSuccessInterval == 0 {
		c.HealthSuccessInterval = time.Minute
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 15 * time.Second
	}
	if c.Breaker.ProbeTimeout == 0 {
		// A probe job may wait in its lane and then run for a delivery
		// timeout; it is lost only if its instance is.
		c.Breaker.ProbeTimeout = 2 * c.ackWait()
	}
	for name, v := range map[string]int{"MaxConnsPerHost": c.MaxConnsPerHost, "HostQueue": c.HostQueue,
		"Workers": c.Workers, "FetchBatch": c.FetchBatch, "MaxAckPending": c.MaxAckPending, "Replicas": c.Replicas,
		"ProbationWorkers": c.ProbationWorkers, "ProbationConnsPerHost": c.ProbationConnsPerHost,
		"ProbationHostQueue": c.ProbationHostQueue, "ProbationQueued": c.ProbationQueued,
		"ProbationAckPending": c.ProbationAckPending, "FreshWorkers": c.FreshWorkers, "SlowWorkers": c.SlowWorkers, "MaxDeliveries": c.MaxDeliveries,
		"DirectPerHost": c.DirectPerHost, "DirectMax": c.DirectMax, "FanoutAckPending": c.FanoutAckPending,
		"HangingConnsPerHost": c.HangingConnsPerHost, "HealthWriters": c.HealthWriters} {
		if v < 0 {
			return fmt.Errorf("dispatcher: %s must not be negative", name)
		}
	}
	if c.DisableAfter < 0 || c.HealthSuccessInterval < 0 {
		return errors.New("dispatcher: DisableAfter and HealthSuccessInterval must not be negative")
	}
	if c.DeliveryTimeout < 0 {
		return errors.New("dispatcher: DeliveryTimeout must not be negative")
	}
	if err := c.Retry.Validate(); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := events.ValidatePrefix(c.DeliveriesSubject); err != nil {
		return fmt.Errorf("dispatcher: deliveries subject: %w", err)
	}
	prefix := c.EventStream.Subjects.Prefix
	if prefix == "" {
		prefix = "events"
	}
	if overlaps(prefix, c.DeliveriesSubject) {
		return fmt.Errorf("dispatcher: deliveries subject %q overlaps event prefix %q", c.DeliveriesSubject, prefix)
	}
	return nil
}

// ackWait is how long JetStream waits for an ack before redelivering. It
// must outlast one attempt plus a queueing margin, and stay short enough that
// work in flight at a crash comes back within 30 s of a restart.
func (c *Config) ackWait() time.Duration {
	return max(30*time.Second, c.DeliveryTimeout+15*time.Second)
}

// overlaps reports whether one dot-separated subject root is a prefix of
// the other, token-wise.
func overlaps(a, b string) bool {
	short, long := a, b
	if len(short) > len(long) {
		short, long = long, short
	}
	return long == short || len(long) > len(short) && long[:len(short)] == short && long[len(short)] == '.'
}
