package dispatcher

import (
	"time"

	"github.com/nats-io/nats.go"
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
	later := func(at time.Time) {
		if soonest.IsZero() || at.Before(soonest) {
			soonest = at
		}
	}
	for _, id := range b.Webhooks {
		t, ok, err := d.resolve(id)
		if err != nil {
			keep = append(keep, id)
			later(now.Add(jitter(2 * time.Second)))
			continue
		}
		if !ok {
			d.m.dropped.WithLabelValues("webhook_deleted").Inc()
			continue
		}
		probe := false
		if !t.wh.Disabled { // a disabled webhook's job is recorded as failed
			if at, open := d.parkedUntil(id, now); open {
				keep = append(keep, id)
				later(at)
				continue
			}
			if d.healthy(id) {
				// It succeeded since it was bundled: the healthy subject.
				j := b.jobFor(id, signature.DeliveryID(b.EventID, id))
				p.add(d.js.PublishMsgAsync(&nats.Msg{Subject: d.jobSubject(id), Header: j.header(j.DeliveryID), Data: b.Body},
					jetstream.WithStallWait(10*time.Second)))
				p.jobs++
				continue
			}
			if st := br.Status(id); st.State != breaker.Closed {
				dec := br.Allow(id)
				if dec.HalfOpened {
					d.m.transitions.WithLabelValues("half_open").Inc()
				}
				if !dec.Allowed {
					keep = append(keep, id)
					later(spread(dec.RetryAt, st.Cooldown))
					continue
				}
				probe = dec.Probe
			} else if ok, wait := d.reserve(t.url.Host); !ok {
				keep = append(keep, id)
				later(now.Add(jitter(wait)))
				continue
			}
		}
		j := b.jobFor(id, signature.DeliveryID(b.EventID, id))
		h := j.header(j.DeliveryID)
		if probe {
			h[hdrProbe] = []string{"1"}
		}
		p.add(d.js.PublishMsgAsync(&nats.Msg{Subject: d.trialSubject(id), Header: h, Data: b.Body},
			jetstream.WithStallWait(10*time.Second)))
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
