package dispatcher

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// pendingEvent is an event whose jobs are published but not yet all
// acknowledged by the server.
type pendingEvent struct {
	msg       jetstream.Msg
	eventType string // set by fan-out: count its jobs as created
	futures   []jetstream.PubAckFuture
	// parked of the futures are jobs parked by an open circuit, at stage
	// "fanout" or "delivery".
	parked int
	stage  string
}

// fanout is the consume callback of the events consumer. It runs on one
// goroutine; it never waits for the server, handing the publish futures to
// the acker instead so that many events' jobs are in flight at once.
func (d *Dispatcher) fanout(msg jetstream.Msg, acks chan<- pendingEvent) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack, nothing to lose.
		d.log.Error("fan-out: message without JetStream metadata", "subject", msg.Subject(), "err", err)
		return
	}
	if d.cfg.EventStream.Subjects.IsOperational(msg.Subject()) {
		// Our own webhook.disabled announcements: kept in the events
		// stream for subscribers, delivered to no webhook.
		if err := msg.Ack(); err != nil {
			d.log.Error("fan-out: ack operational event", "seq", meta.Sequence.Stream, "err", err)
		}
		return
	}
	ev, err := d.decoder.Decode(events.Message{
		Subject:   msg.Subject(),
		MsgID:     msg.Headers().Get(hdrMsgID),
		StreamSeq: meta.Sequence.Stream,
		Timestamp: meta.Timestamp,
		Data:      msg.Data(),
	})
	if err != nil {
		reason := events.Reason("invalid")
		var de *events.DecodeError
		if errors.As(err, &de) {
			reason = de.Reason
		}
		d.m.eventsRejected.WithLabelValues(string(reason)).Inc()
		// Terminated messages are never redelivered, so this logs once.
		d.log.Warn("dropping malformed event", "subject", msg.Subject(), "seq", meta.Sequence.Stream,
			"reason", reason, "err", err)
		if err := msg.Term(); err != nil {
			d.log.Error("fan-out: term malformed event", "seq", meta.Sequence.Stream, "err", err)
		}
		return
	}
	d.m.eventsReceived.WithLabelValues(string(ev.Type)).Inc()

	d.matchBuf = d.cfg.Subscriptions.Match(ev.Workspace, ev.Type, ev.WorkflowID, d.matchBuf[:0])
	if len(d.matchBuf) == 0 {
		if err := msg.Ack(); err != nil {
			d.log.Error("fan-out: ack event", "seq", meta.Sequence.Stream, "err", err)
		}
		return
	}
	p := pendingEvent{msg: msg, eventType: string(ev.Type), futures: make([]jetstream.PubAckFuture, 0, len(d.matchBuf)), stage: "fanout"}
	now := time.Now()
	for _, wh := range d.matchBuf {
		// A webhook whose circuit is open gets its job parked straight
		// away: one stored message, no trip through the delivery queue.
		at, parked := d.parkedUntil(wh.ID, now)
		f, err := d.publishJob(ev, wh, at, parked)
		if err != nil {
			// Already-published jobs are deduplicated when the event comes
			// back, so handing the event back is safe.
			d.log.Error("fan-out: publish job", "event", ev.ID, "webhook", wh.ID, "err", err)
			p.futures = append(p.futures, failedFuture{err: err})
			break
		}
		p.futures = append(p.futures, f)
		if parked {
			p.parked++
		}
	}
	acks <- p
}

// publishJob stores the delivery job for (ev, wh), or when parked its
// scheduled copy that becomes the job at `at`.
func (d *Dispatcher) publishJob(ev events.Event, wh *registry.Webhook, at time.Time, parked bool) (jetstream.PubAckFuture, error) {
	j := job{
		DeliveryID: signature.DeliveryID(ev.ID, wh.ID),
		WebhookID:  wh.ID,
		Workspace:  ev.Workspace,
		EventID:    ev.ID,
		EventType:  ev.Type,
		Subject:    ev.Subject,
		Published:  ev.Timestamp,
		Attempt:    1,
		Body:       ev.Body,
	}
	m := &nats.Msg{
		Subject: d.jobSubject(wh.ID),
		Header:  j.header(j.DeliveryID),
		Data:    ev.Body,
	}
	if parked {
		m = d.parkMsg(&j, at)
	}
	// When too many publishes await their acks, wait for room (back-pressure
	// on the events consumer) rather than fail and re-run the fan-out.
	return d.js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
}

// acker acknowledges each event once all its jobs are stored, in arrival
// order, and hands it back for a later retry if any publish failed. It
// returns when acks is closed and drained.
func (d *Dispatcher) acker(acks <-chan pendingEvent) {
	for p := range acks {
		var failed error
		for _, f := range p.futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				failed = err
			}
		}
		if failed != nil {
			d.log.Warn("fan-out: job not stored, event handed back", "subject", p.msg.Subject(), "err", failed)
			if err := p.msg.NakWithDelay(time.Second); err != nil {
				d.log.Error("fan-out: nak event", "err", err)
			}
			continue
		}
		if p.eventType != "" {
			d.m.jobsCreated.WithLabelValues(p.eventType).Add(float64(len(p.futures)))
		}
		switch {
		case p.parked == 0:
		case p.stage == "defer":
			d.m.deferred.Add(float64(p.parked))
		default:
			d.m.parked.WithLabelValues(p.stage).Add(float64(p.parked))
		}
		if err := p.msg.Ack(); err != nil {
			d.log.Error("fan-out: ack event", "subject", p.msg.Subject(), "err", err)
		}
	}
}

// failedFuture stands in for a publish that never left the client.
type failedFuture struct{ err error }

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error {
	ch := make(chan error, 1)
	ch <- f.err
	return ch
}
func (f failedFuture) Msg() *nats.Msg { return nil }
