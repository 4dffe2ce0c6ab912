package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/health"
	"github.com/webhookd/webhookd/registry/replay"
)

// Dispatcher runs the fan-out and delivery stages. Create it with New and
// drive it with Run.
type Dispatcher struct {
	cfg     Config
	js      jetstream.JetStream
	log     *slog.Logger
	m       *metrics
	decoder events.Decoder

	// The fan-out callback's scratch; it runs on one goroutine.
	matchBuf          []*registry.Webhook
	trialBuf, parkBuf []string

	mu      sync.Mutex       // guards lanes and lane.workers
	lanes   map[string]*lane // by destination host
	workers sync.WaitGroup   // lane workers
	slots   chan struct{}    // attempts for healthy webhooks on proven hosts
	trial   chan struct{}    // failing webhooks, probes, hosts that time out: the probation pool
	fresh   chan struct{}    // first attempts to hosts not tried yet
	slow    chan struct{}    // healthy-pool attempts unanswered after SlowAfter (stall.go)
	onTrial int              // jobs queued in lanes of unproven hosts; guarded by mu
	health  *tracker
	acks    chan pendingEvent // publishes whose acks settle a message; set by Run
	// background runs auto-disables; Run waits for them.
	background sync.WaitGroup
	targets    sync.Map // webhook id -> *target; pruned by Run (pruneTargets)
	// directs counts direct deliveries not yet settled (DirectMax);
	// directTimers their deadlines not yet stopped or run, which Run
	// waits for.
	directs      atomic.Int64
	directTimers sync.WaitGroup
	// deliveries is the deliveries stream, set by setup: direct
	// deliveries delete their continuations through it.
	deliveries atomic.Pointer[jetstream.Stream]
	gate       gate // closed while the deliveries stream is nearly full
	stopping   atomic.Bool
	ready      atomic.Bool
	running    atomic.Bool
}

// New validates cfg and builds a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	// A publish whose ack never comes must fail rather than stall the
	// fan-out's acker forever.
	js, err := jetstream.New(cfg.Conn,
		jetstream.WithPublishAsyncMaxPending(8192),
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("dispatcher: jetstream: %w", err)
	}
	d := &Dispatcher{
		cfg:     cfg,
		js:      js,
		log:     cfg.Logger.With("component", "dispatcher"),
		m:       m,
		decoder: events.Decoder{Subjects: cfg.EventStream.Subjects, MaxBytes: cfg.MaxEventBytes},
		lanes:   make(map[string]*lane),
		slots:   make(chan struct{}, cfg.Workers),
		trial:   make(chan struct{}, cfg.ProbationWorkers),
		fresh:   make(chan struct{}, cfg.FreshWorkers),
		slow:    make(chan struct{}, cfg.SlowWorkers),
	}
	if d.health, err = newTracker(d); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	return d, nil
}

// Ready reports nil once both streams and consumers exist and deliveries
// are flowing, so an event published after a successful Ready is captured.
func (d *Dispatcher) Ready() error {
	if !d.ready.Load() {
		return errors.New("streams and consumers are not set up yet")
	}
	if !d.cfg.Conn.IsConnected() {
		return errors.New("NATS is disconnected")
	}
	return nil
}

// Run sets up the streams and consumers (retrying while NATS is
// unreachable), then fans out and delivers until ctx ends. On return, no
// consumer is active, every attempt in progress has finished, and every job
// not attempted has been handed back to JetStream.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("dispatcher: Run called twice")
	}
	var fan, del, trial jetstream.Consumer
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		fan, del, trial, err = d.setup(setupCtx)
		cancel()
		if err == nil {
			break
		}
		d.log.Warn("setting up streams failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}

	acks := make(chan pendingEvent, 1024)
	d.acks = acks
	var ackerDone sync.WaitGroup
	ackerDone.Go(func() { d.acker(acks) })
	flushCtx, stopFlushing := context.WithCancel(context.Background())
	var flusher sync.WaitGroup
	flusher.Go(func() { d.health.flush(flushCtx) })

	// One fan-out loop (fanout reuses a match buffer), two delivery loops
	// so one round's request overlaps the other's handling.
	pullCtx, stopPulling := context.WithCancel(context.Background())
	var pulling sync.WaitGroup
	pulling.Go(func() { d.fanoutLoop(pullCtx, fan, acks) })
	for range 2 {
		pulling.Go(func() { d.pullLoop(pullCtx, "delivery", del, false, d.receive) })
	}
	pulling.Go(func() { d.pullLoop(pullCtx, "probation", trial, false, d.receive) })
	d.ready.Store(true)
	d.log.Info("dispatcher running", "events_stream", d.cfg.EventStream.Name, "deliveries_stream", d.cfg.DeliveriesStream,
		"deliveries_max_bytes", d.cfg.DeliveriesMaxBytes, "max_deliveries", d.cfg.MaxDeliveries)
	d.warnIfEventsCannotFit()

	// Room in the deliveries stream is checked every second, the rest
	// every 5 s; cached targets are pruned every 30 s (each prune reads
	// the registry once per cached webhook).
	tick, room := time.NewTicker(5*time.Second), time.NewTicker(time.Second)
	d.sample(ctx, del)
	d.checkRoom(ctx)
loop:
	for n := 1; ; {
		select {
		case <-ctx.Done():
			break loop
		case <-room.C:
			d.checkRoom(ctx)
			d.shedStalled(time.Now())
		case <-tick.C:
			d.sample(ctx, del)
			d.pruneLanes(time.Now())
			if n++; n%6 == 0 {
				d.pruneTargets()
			}
		}
	}
	tick.Stop()
	room.Stop()

	// Stop taking work: the fan-out finishes the round it holds (it is fast
	// and only publishes), deliveries not yet started are handed back.
	d.ready.Store(false)
	d.stopping.Store(true)
	stopPulling()
	pulling.Wait()
	close(acks)
	ackerDone.Wait()
	d.workers.Wait()
	d.directTimers.Wait()
	d.background.Wait()
	stopFlushing()
	flusher.Wait()
	d.log.Info("dispatcher stopped")
	return nil
}

// jobHeadroom is what a job or bundle adds to its event's bytes at most:
// the job headers, a last error and a schedule, or a bundle's webhook ids.
const jobHeadroom = 16 << 10

// warnIfEventsCannotFit says so at start when the largest event accepted
// could not travel as a delivery job under the server's max payload: such
// deliveries end as failures with reason too_large.
func (d *Dispatcher) warnIfEventsCannotFit() {
	if !d.copiesFit(d.cfg.MaxEventBytes) {
		mp := d.cfg.Conn.MaxPayload()
		d.log.Warn("events near the size limit cannot all become delivery jobs: the NATS server's max payload leaves too little room for a job's headers; their deliveries are recorded as failed (too_large)",
			"max_event_bytes", d.cfg.MaxEventBytes, "max_payload", mp, "max_event_bytes_that_always_fit", max(mp-jobHeadroom, 0))
	}
}

// ErrDeliveriesFull is returned by Redeliver, Resend and Replay while
// fan-out is paused because the deliveries stream is nearly full: a manual
// retry or a replay must not fill what fan-out keeps room in. It carries
// RetryAfter, which the management API turns into a 503 with Retry-After.
var ErrDeliveriesFull error = deliveriesFull{}

type deliveriesFull struct{}

func (deliveriesFull) Error() string {
	return "dispatcher: the deliveries stream is nearly full; new deliveries wait until it drains"
}

// RetryAfter is how soon asking again may succeed.
func (deliveriesFull) RetryAfter() time.Duration { return 30 * time.Second }

// Redeliver queues a recorded failure for a fresh round of attempts. It
// satisfies the management API's Redeliverer.
func (d *Dispatcher) Redeliver(ctx context.Context, f registry.Failure) error {
	if !f.EventType.Valid() || f.ID == "" || f.WebhookID == "" || f.EventID == "" {
		return errors.New("dispatcher: failure record is incomplete")
	}
	if d.gate.paused() {
		return fmt.Errorf("dispatcher: redeliver %s: %w", f.ID, ErrDeliveriesFull)
	}
	j := job{
		DeliveryID: f.ID, WebhookID: f.WebhookID, Workspace: f.Workspace, EventID: f.EventID,
		EventType: f.EventType, Subject: f.Subject, Published: time.Now(), Attempt: 1,
	}
	msgID := f.ID + ".manual." + strconv.FormatInt(time.Now().UnixNano(), 10)
	_, err := d.js.PublishMsg(ctx, &nats.Msg{Subject: d.trialSubject(f.WebhookID), Header: j.header(msgID), Data: f.Body})
	if err != nil {
		return fmt.Errorf("dispatcher: redeliver %s: %w", f.ID, err)
	}
	return nil
}

// Resend queues a fresh delivery of ev to one webhook, as the management
// API's retry of a delivery and replays need: attempt 1, a fresh retry
// budget, the same webhook-id (receivers deduplicate on it). trigger is
// "retry" or "replay:<id>": a replay's copies are deduplicated per replay
// (a replay resumed elsewhere queues none twice), a manual retry's never.
func (d *Dispatcher) Resend(ctx context.Context, ev events.Event, webhookID, trigger string) error {
	wh, ok := d.cfg.Subscriptions.Get(webhookID)
	if !ok || wh.Workspace != ev.Workspace {
		return fmt.Errorf("dispatcher: resend to webhook %s: %w", webhookID, registry.ErrNotFound)
	}
	if d.gate.paused() {
		return fmt.Errorf("dispatcher: resend to webhook %s: %w", webhookID, ErrDeliveriesFull)
	}
	id := signature.DeliveryID(ev.ID, webhookID)
	j := job{
		DeliveryID: id, WebhookID: webhookID, Workspace: ev.Workspace, EventID: ev.ID, EventType: ev.Type,
		Subject: ev.Subject, Published: ev.Timestamp, Attempt: 1, Trigger: trigger,
	}
	msgID := id + "." + trigger
	if !strings.HasPrefix(trigger, "replay:") {
		msgID += "." + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	if _, err := d.js.PublishMsg(ctx, &nats.Msg{Subject: d.trialSubject(webhookID), Header: j.header(msgID), Data: ev.Body}); err != nil {
		return fmt.Errorf("dispatcher: resend %s: %w", id, err)
	}
	return nil
}

// Replay queues one delivery of a replay (replay.Enqueuer): Resend with
// the replay's trigger, deduplicated per replay.
func (d *Dispatcher) Replay(ctx context.Context, r replay.Delivery) error {
	return d.Resend(ctx, r.Event, r.WebhookID, "replay:"+r.ReplayID)
}

// ObserveHealth applies a health record written by any instance (pass it
// as health.Config.OnChange): a circuit another instance opened is honoured
// here within the watch's delay, and a success seen elsewhere closes it.
func (d *Dispatcher) ObserveHealth(r health.Record) { d.health.observe(r) }

// Health returns the webhook's health as this instance knows it: its own
// latest outcome if not yet shared, else the shared record. With the
// management API's Reset it satisfies api.HealthSource.
func (d *Dispatcher) Health(id string) health.Record { return d.health.current(id) }

// Reset closes the webhook's circuit and forgets its failures, here and
// (through the shared health bucket) on every instance.
func (d *Dispatcher) Reset(ctx context.Context, id string) error { return d.health.reset(ctx, id) }
