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
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        d.cfg.DeliveriesStream,
		Description: "webhookd delivery jobs and scheduled retries",
		Subjects:    []string{root + ".job.>", root + ".sched.>"},
		// Work-queue retention removes a job once it is acked; scheduled
		// retries are removed by the server when they fire.
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          d.cfg.Replicas,
		Discard:           jetstream.DiscardOld,
		Duplicates:        2 * time.Minute,
		AllowMsgSchedules: true,
		AllowRollup:       true,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dispatcher: deliveries stream %s (message schedules need nats-server >= 2.12): %w", d.cfg.DeliveriesStream, err)
	}
	fan, err = js.CreateOrUpdateConsumer(ctx, evName, jetstream.ConsumerConfig{
		Durable:       d.cfg.FanoutConsumer,
		Description:   "webhookd fan-out: events to delivery jobs",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 4096,
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
