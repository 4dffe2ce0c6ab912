package dispatcher

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/breaker"
)

// Parking: a job whose webhook's circuit is open is not attempted. It is
// stored again as a JetStream scheduled message that fires when the
// circuit half-opens, and the copy in hand is acked, so while the outage
// lasts the job holds no worker, no connection and no ack-pending slot.
// Parking is not an attempt: the job keeps its attempt number and its
// first-attempt time. The retry policy's age limit is checked only when an
// attempt fails, so a parked job is always attempted again after its
// circuit closes before it can run out of age; a webhook whose outage
// outlasts --disable-after is disabled instead, and its parked jobs are
// then recorded as failed.
//
// Parked jobs fire spread over the first half of the cool-down after the
// circuit's half-open time, so the first to arrive is the probe and, once
// it succeeds, the rest follow within one cool-down instead of all at once.

// parkedUntil reports whether the webhook's circuit is open now, and until
// when its jobs should wait.
func (d *Dispatcher) parkedUntil(webhookID string, now time.Time) (time.Time, bool) {
	return parkedAt(d.health.br.Status(webhookID), now)
}

func parkedAt(st breaker.Status, now time.Time) (time.Time, bool) {
	if st.State != breaker.Open || !st.OpenUntil.After(now) {
		return time.Time{}, false
	}
	return spread(st.OpenUntil, st.Cooldown), true
}

// route is where a webhook's next delivery goes.
type route uint8

const (
	routeTrial   route = iota // new or failing: the probation subject, or a bundle
	routeHealthy              // succeeded and not failed since: the healthy subject
	routeParked               // circuit open: wait until the returned time
)

// route decides, reading the webhook's circuit once, where its next
// delivery goes; fan-out and bundle expansion both ask it.
func (d *Dispatcher) route(webhookID string, now time.Time) (route, breaker.Status, time.Time) {
	st := d.health.br.Status(webhookID)
	if at, open := parkedAt(st, now); open {
		return routeParked, st, at
	}
	if st.State == breaker.Closed && st.Failures == 0 && d.health.succeeding(webhookID) {
		return routeHealthy, st, time.Time{}
	}
	return routeTrial, st, time.Time{}
}

// spread returns a time in [at, at+cooldown/2).
func spread(at time.Time, cooldown time.Duration) time.Time {
	if cooldown <= 0 {
		return at
	}
	return at.Add(time.Duration(rand.Int64N(int64(cooldown)/2 + 1)))
}

// parkMsg is j stored as a scheduled message that turns back into a job at
// `at`. Its dedupe id names the attempt and the wake-up time, so a copy
// parked twice (a crash between publish and ack) is stored once.
func (d *Dispatcher) parkMsg(j *job, at time.Time) *nats.Msg {
	at = at.UTC()
	h := j.header(j.DeliveryID + ".a" + strconv.Itoa(j.Attempt) + ".p" + strconv.FormatInt(at.UnixMilli(), 10))
	h[hdrSchedule] = []string{"@at " + at.Format(time.RFC3339Nano)}
	h[hdrSchedTarget] = []string{d.trialSubject(j.WebhookID)}
	return &nats.Msg{Subject: d.schedSubject(j.WebhookID, j.DeliveryID), Header: h, Data: j.Body}
}

// parkAsync parks a job taken from the deliveries consumer without
// blocking the pull loop: the acker acks msg once the parked copy is
// stored. stage is "delivery" for an open circuit, "defer" for a job set
// aside because its host had no room.
func (d *Dispatcher) parkAsync(msg jetstream.Msg, j *job, at time.Time, stage string) {
	f, err := d.js.PublishMsgAsync(d.parkMsg(j, at), jetstream.WithStallWait(10*time.Second))
	if err != nil {
		d.log.Warn("park job failed, handing it back", "webhook", j.WebhookID, "delivery", j.DeliveryID, "err", err)
		d.handBack(msg, jitter(2*time.Second))
		return
	}
	d.acks <- pendingEvent{msg: msg, futures: []jetstream.PubAckFuture{f}, parked: 1, stage: stage}
}

// parkSync parks a job from a lane worker, whose circuit opened while it
// waited in the lane.
func (d *Dispatcher) parkSync(q queued, at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.js.PublishMsg(ctx, d.parkMsg(&q.job, at)); err != nil {
		d.log.Warn("park job failed, handing it back", "webhook", q.job.WebhookID, "delivery", q.job.DeliveryID, "err", err)
		d.handBack(q.msg, jitter(2*time.Second))
		return
	}
	d.m.parked.WithLabelValues("delivery").Inc()
	if err := q.msg.Ack(); err != nil {
		d.log.Warn("ack parked job", "webhook", q.job.WebhookID, "delivery", q.job.DeliveryID, "err", err)
	}
}
