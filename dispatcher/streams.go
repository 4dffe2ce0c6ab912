package dispatcher

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
)

// Subject layout of the deliveries stream:
//
//	<root>.job.<webhook>            jobs of healthy webhooks (delivery consumer)
//	<root>.job.p.<webhook>          jobs of new, failing or parked webhooks (probation consumer)
//	<root>.job.p.park               bundles to expand (probation consumer)
//	<root>.sched.<webhook>.<delivery>  a scheduled retry or parked job
//	<root>.sched.park.<bundle>      a scheduled bundle
//
// Two consumers with disjoint filters mean a healthy webhook's job never
// waits behind the jobs of dead destinations in one queue.
func (d *Dispatcher) jobSubject(webhookID string) string {
	return d.cfg.DeliveriesSubject + ".job." + webhookID
}

func (d *Dispatcher) trialSubject(webhookID string) string {
	return d.cfg.DeliveriesSubject + ".job.p." + webhookID
}

func (d *Dispatcher) bundleSubject() string { return d.cfg.DeliveriesSubject + ".job.p.park" }

func (d *Dispatcher) schedSubject(webhookID, deliveryID string) string {
	return d.cfg.DeliveriesSubject + ".sched." + webhookID + "." + deliveryID
}

func (d *Dispatcher) bundleSchedSubject(id string) string {
	return d.cfg.DeliveriesSubject + ".sched.park." + id
}

// setup creates or updates both streams and the three durable consumers.
// It is idempotent, so every instance runs it at start.
func (d *Dispatcher) setup(ctx context.Context) (fan, del, trial jetstream.Consumer, err error) {
	js := d.js
	evCfg := d.cfg.EventStream
	if _, err := events.EnsureStream(ctx, js, evCfg); err != nil {
		return nil, nil, nil, err
	}
	evName := evCfg.Name
	root := d.cfg.DeliveriesSubject
	deliveries, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        d.cfg.DeliveriesStream,
		Description: "webhookd delivery jobs and scheduled retries",
		Subjects:    []string{root + ".job.>", root + ".sched.>"},
		// Work-queue retention removes a job once it is acked; scheduled
		// retries are removed by the server when they fire.
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  d.cfg.Replicas,
		// No byte limit here: message schedules require DiscardOld, and
		// at a byte limit DiscardOld would drop the oldest pending jobs
		// without a word. With no size, count or age limit it discards
		// nothing; fan-out keeps the stream within DeliveriesMaxBytes
		// (see checkRoom), and past that only the store's own total
		// stops writes, refusing them, dropping none.
		Discard:           jetstream.DiscardOld,
		Duplicates:        2 * time.Minute,
		AllowMsgSchedules: true,
		AllowRollup:       true,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dispatcher: deliveries stream %s (message schedules need nats-server >= 2.12): %w", d.cfg.DeliveriesStream, err)
	}
	d.deliveries.Store(&deliveries)
	// MaxDeliver stays unbounded on all three consumers. Events are never
	// given up; jobs are, after Config.MaxDeliveries, by the dispatcher
	// itself (see receive), which records them first. A server-side bound
	// would leave such a job in the work queue, undelivered and unrecorded.
	fan, err = js.CreateOrUpdateConsumer(ctx, evName, jetstream.ConsumerConfig{
		Durable:       d.cfg.FanoutConsumer,
		Description:   "webhookd fan-out: events to delivery jobs",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: d.cfg.FanoutAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: evCfg.Subjects.Filter(),
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dispatcher: fan-out consumer on %s: %w", evName, err)
	}
	del, err = js.CreateOrUpdateConsumer(ctx, d.cfg.DeliveriesStream, jetstream.ConsumerConfig{
		Durable:       d.cfg.DeliveryConsumer,
		Description:   "webhookd delivery: jobs to HTTP attempts",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.ackWait(),
		MaxDeliver:    -1,
		MaxAckPending: d.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// One token: <root>.job.<webhook>, not the probation subjects.
		FilterSubject: root + ".job.*",
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dispatcher: delivery consumer on %s: %w", d.cfg.DeliveriesStream, err)
	}
	trial, err = js.CreateOrUpdateConsumer(ctx, d.cfg.DeliveriesStream, jetstream.ConsumerConfig{
		Durable:       d.cfg.ProbationConsumer,
		Description:   "webhookd probation delivery: jobs of new, failing and parked webhooks, and bundles",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.ackWait(),
		MaxDeliver:    -1,
		MaxAckPending: d.cfg.ProbationAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: root + ".job.p.*",
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dispatcher: probation consumer on %s: %w", d.cfg.DeliveriesStream, err)
	}
	return fan, del, trial, nil
}

// sample refreshes the stream-wide backlog gauges. In a multi-instance
// deployment every instance reports the same values; aggregate with max().
func (d *Dispatcher) sample(ctx context.Context, del jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := d.js.Stream(ctx, d.cfg.DeliveriesStream)
	if err != nil {
		return
	}
	si, err := s.Info(ctx)
	if err != nil {
		return
	}
	ci, err := del.Info(ctx)
	if err != nil {
		return
	}
	jobs := ci.NumPending + uint64(ci.NumAckPending)
	d.m.backlog.Set(float64(ci.NumPending))
	if si.State.Msgs >= jobs {
		d.m.pendingRetry.Set(float64(si.State.Msgs - jobs))
	} else {
		d.m.pendingRetry.Set(0)
	}
}

// resumeGap is how far below FanoutPauseAt the deliveries stream must fall
// before fan-out resumes, so it does not flap at the mark.
const resumeGap = 0.05

// checkRoom samples the deliveries stream's size and pauses or resumes
// fan-out. A sample that fails keeps the last decision.
func (d *Dispatcher) checkRoom(ctx context.Context) {
	if d.cfg.DeliveriesMaxBytes <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := d.js.Stream(ctx, d.cfg.DeliveriesStream)
	if err != nil {
		return
	}
	used := s.CachedInfo().State.Bytes
	fill := float64(used) / float64(d.cfg.DeliveriesMaxBytes)
	paused := d.gate.paused()
	switch {
	case !paused && fill >= d.cfg.FanoutPauseAt:
		d.gate.set(true)
		d.m.fanoutPaused.Set(1)
		d.log.Warn("fan-out paused: the deliveries stream is nearly full; events wait in the events stream",
			"stream", d.cfg.DeliveriesStream, "bytes", used, "limit_bytes", d.cfg.DeliveriesMaxBytes, "fill", fill)
	case paused && fill < d.cfg.FanoutPauseAt-resumeGap:
		d.gate.set(false)
		d.m.fanoutPaused.Set(0)
		d.log.Info("fan-out resumed: the deliveries stream has room again",
			"stream", d.cfg.DeliveriesStream, "bytes", used, "limit_bytes", d.cfg.DeliveriesMaxBytes, "fill", fill)
	}
}
