package dispatcher

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/signature"
)

// expand turns a bundle into jobs for the webhooks that can take one now
// and stores the others as a smaller bundle, scheduled for the soonest time
// one of them can; the acker acks the bundle once all of it is stored.
//
// A webhook can take a job now when its circuit is closed and its host's
// lane has room, or when its circuit is half-open and grants this job the
// probe. Re-bundling is not an attempt and costs one message per event,
// however many webhooks stay in it.
func (d *Dispatcher) expand(msg jetstream.Msg) {
	b, err := decodeBundle(msg.Headers(), msg.Data())
	if err != nil {
		d.m.dropped.WithLabelValues("invalid_job").Inc()
		d.log.Error("dropping malformed bundle", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	br := d.health.br
	now := time.Now()
	p := pendingEvent{msg: msg, eventType: string(b.EventType), stage: "delivery"}
	keep := make([]string, 0, len(b.Webhooks))
	var soonest time.Time
	// hold keeps id in the bundle, which comes back at the soonest time
	// any webhook held in it asked for.
	hold := func(id string, at time.Time) {
		keep = append(keep, id)
		if soonest.IsZero() || at.Before(soonest) {
			soonest = at
		}
	}
	for _, id := range b.Webhooks {
		t, ok, err := d.resolve(id)
		if err != nil {
			hold(id, now.Add(jitter(2*time.Second)))
			continue
		}
		if !ok {
			d.m.dropped.WithLabelValues("webhook_deleted").Inc()
			continue
		}
		probe, subject := false, d.trialSubject(id)
		if !t.wh.Disabled { // a disabled webhook's job is recorded as failed
			r, st, at := d.route(id, now)
			switch {
			case r == routeParked:
				hold(id, at)
				continue
			case r == routeHealthy:
				// It succeeded since it was bundled: the healthy subject.
				subject = d.jobSubject(id)
			case st.State != breaker.Closed:
				dec := br.Allow(id)
				if dec.HalfOpened {
					d.m.transitions.WithLabelValues("half_open").Inc()
				}
				if !dec.Allowed {
					hold(id, spread(dec.RetryAt, st.Cooldown))
					continue
				}
				probe = dec.Probe
			default:
				if ok, wait := d.reserve(t.url.Host); !ok {
					hold(id, now.Add(jitter(wait)))
					continue
				}
			}
		}
		j := b.jobFor(id, signature.DeliveryID(b.EventID, id))
		p.add(d.publishFirst(&j, subject, probe))
		p.jobs++
	}
	if len(keep) > 0 {
		nb := b
		nb.Gen++
		nb.Webhooks = keep
		p.add(d.publishBundle(&nb, soonest))
		p.parked = len(keep)
	}
	if len(p.futures) == 0 {
		// Every webhook in it was deleted.
		_ = msg.Ack()
		return
	}
	d.acks <- p
}
