package dispatcher

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
)

// pendingEvent is an event whose jobs are published but not yet all
// acknowledged by the server.
type pendingEvent struct {
	msg       jetstream.Msg
	eventType string // set by fan-out: count its jobs as created
	futures   []jetstream.PubAckFuture
	// jobs is how many delivery jobs the futures store; parked how many
	// (event, webhook) deliveries they park for an open circuit (stage
	// "fanout" or "delivery") or set aside for a busy host ("defer").
	jobs, parked int
	stage        string
	failed       error // a publish that never left the client
	// group, when some of the event's deliveries went direct, acks the
	// event once they and the acker's part are all settled.
	group *eventGroup
	// storeOnly: every delivery is stored as a job, none made direct. The
	// event was handed out before (a crash, a hand-back), so its jobs are
	// deduplicated against what the earlier round stored; or it is so
	// large that its stored copies might not fit the server's max payload
	// (the stored path records such deliveries as failed).
	storeOnly bool
}

// gate pauses fan-out while the deliveries stream is nearly full (see
// checkRoom). The zero value is open.
type gate struct {
	mu      sync.Mutex
	closed  bool
	changed chan struct{} // closed and replaced on every change
}

// state reports whether the gate is closed, and a channel closed at its
// next change.
func (g *gate) state() (bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.closed, g.changed
}

func (g *gate) paused() bool {
	closed, _ := g.state()
	return closed
}

func (g *gate) set(closed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == closed {
		return
	}
	g.closed = closed
	if g.changed != nil {
		close(g.changed)
	}
	g.changed = make(chan struct{})
}

// fanoutLoop runs the fan-out pull loop while the gate is open, until ctx
// ends. A pause stops the loop after the round in hand, so no event is
// taken (and held unacked) while it lasts: events wait in their stream.
func (d *Dispatcher) fanoutLoop(ctx context.Context, fan jetstream.Consumer, acks chan<- pendingEvent) {
	handle := func(m jetstream.Msg) { d.fanout(m, acks) }
	for ctx.Err() == nil {
		closed, changed := d.gate.state()
		if closed {
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		}
		round, stop := context.WithCancel(ctx)
		var watch sync.WaitGroup
		watch.Go(func() {
			select {
			case <-changed:
				stop()
			case <-round.Done():
			}
		})
		d.pullLoop(round, "fan-out", fan, true, handle)
		stop()
		watch.Wait()
	}
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
	p := pendingEvent{msg: msg, eventType: string(ev.Type), futures: make([]jetstream.PubAckFuture, 0, len(d.matchBuf)), stage: "fanout",
		storeOnly: meta.NumDelivered > 1 || !d.copiesFit(len(ev.Body))}
	// Healthy webhooks get their job on the healthy subject. The rest go
	// into bundles: one message for all the webhooks that are new or
	// failing (the probation consumer expands it at their pace), and one
	// scheduled for the soonest half-open time of those whose circuit is
	// open. With hundreds of dead destinations an event still costs a few
	// stored messages, not hundreds.
	now := time.Now()
	trial, parked := d.trialBuf[:0], d.parkBuf[:0]
	var soonest time.Time
	for _, wh := range d.matchBuf {
		switch r, _, at := d.route(wh.ID, now); r {
		case routeParked:
			parked = append(parked, wh.ID)
			if soonest.IsZero() || at.Before(soonest) {
				soonest = at
			}
		case routeHealthy:
			if !d.tryDirect(&p, ev, wh.ID) {
				p.add(d.publishJob(ev, wh.ID, d.jobSubject(wh.ID)))
			}
			p.jobs++
		default:
			trial = append(trial, wh.ID)
		}
	}
	switch len(trial) {
	case 0:
	case 1: // a bundle of one would only add a hop
		p.add(d.publishJob(ev, trial[0], d.trialSubject(trial[0])))
		p.jobs++
	default:
		p.addBundles(d, ev, trial, time.Time{}, 0)
	}
	if len(parked) > 0 {
		p.addBundles(d, ev, parked, soonest, len(trial))
		p.parked += len(parked)
	}
	d.trialBuf, d.parkBuf = trial, parked
	if p.failed != nil {
		// Already-published jobs are deduplicated when the event comes
		// back, so handing the event back is safe.
		d.log.Error("fan-out: publish job", "event", ev.ID, "err", p.failed)
	}
	acks <- p
}

// add records a publish's future, or its failure.
func (p *pendingEvent) add(f jetstream.PubAckFuture, err error) {
	if err != nil {
		p.failed = err
		f = failedFuture{err: err}
	}
	p.futures = append(p.futures, f)
}

// addBundles publishes ids as bundles of ev, at most maxBundle each: now,
// or scheduled for `at`. Chunks are numbered from first, so the two kinds
// of bundle of one event have distinct ids.
func (p *pendingEvent) addBundles(d *Dispatcher, ev events.Event, ids []string, at time.Time, first int) {
	for i, chunk := 0, first; i < len(ids); i, chunk = i+maxBundle, chunk+maxBundle {
		b := bundle{
			ID: bundleID(ev.ID, chunk), EventID: ev.ID, Workspace: ev.Workspace, EventType: ev.Type,
			Subject: ev.Subject, Published: ev.Timestamp, Webhooks: ids[i:min(i+maxBundle, len(ids))], Body: ev.Body,
		}
		p.add(d.publishBundle(&b, at))
	}
}

// publishBundle stores b for expansion now, or (at not zero) as a
// scheduled message that fires at `at`. A bundle over the server's max
// payload comes back as an unstorable holding its deliveries.
func (d *Dispatcher) publishBundle(b *bundle, at time.Time) (jetstream.PubAckFuture, error) {
	m := &nats.Msg{Subject: d.bundleSubject(), Header: b.header(), Data: b.Body}
	if !at.IsZero() {
		m.Subject = d.bundleSchedSubject(b.ID)
		m.Header[hdrSchedule] = []string{"@at " + at.UTC().Format(time.RFC3339Nano)}
		m.Header[hdrSchedTarget] = []string{d.bundleSubject()}
	}
	f, err := d.js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
	if !isTooLarge(err) {
		return f, err
	}
	u := unstorable{jobs: make([]job, 0, len(b.Webhooks))}
	if !at.IsZero() { // the callers count scheduled bundles' webhooks as parked
		u.parked = len(b.Webhooks)
	}
	why := tooLargeError(m, d.cfg.Conn.MaxPayload())
	for _, id := range b.Webhooks {
		j := b.jobFor(id, signature.DeliveryID(b.EventID, id))
		j.LastError = why
		u.jobs = append(u.jobs, j)
	}
	return u, nil
}

// publishJob stores the delivery job for (ev, webhook) on subject.
func (d *Dispatcher) publishJob(ev events.Event, webhookID, subject string) (jetstream.PubAckFuture, error) {
	j := job{
		DeliveryID: signature.DeliveryID(ev.ID, webhookID),
		WebhookID:  webhookID,
		Workspace:  ev.Workspace,
		EventID:    ev.ID,
		EventType:  ev.Type,
		Subject:    ev.Subject,
		Published:  ev.Timestamp,
		Attempt:    1,
		Body:       ev.Body,
	}
	return d.publishFirst(&j, subject, false)
}

// publishFirst stores a job's first copy, deduplicated on its delivery id,
// optionally carrying its circuit's probe grant. When too many publishes
// await their acks it waits for room (back-pressure on the consumer in
// hand) rather than fail and make the caller redo its work. A job over the
// server's max payload comes back as an unstorable.
func (d *Dispatcher) publishFirst(j *job, subject string, probe bool) (jetstream.PubAckFuture, error) {
	h := j.header(j.DeliveryID)
	if probe {
		h[hdrProbe] = []string{"1"}
	}
	m := &nats.Msg{Subject: subject, Header: h, Data: j.Body}
	f, err := d.js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
	if !isTooLarge(err) {
		return f, err
	}
	u := unstorable{jobs: []job{*j}, counted: 1} // the callers count each job published
	u.jobs[0].LastError = tooLargeError(m, d.cfg.Conn.MaxPayload())
	return u, nil
}

// acker acknowledges each event once all its jobs are stored, in arrival
// order, and hands it back for a later retry if any publish failed. It
// returns when acks is closed and drained.
func (d *Dispatcher) acker(acks <-chan pendingEvent) {
	for p := range acks {
		var failed error
		var unstored []job
		for _, f := range p.futures {
			if u, ok := f.(unstorable); ok {
				unstored = append(unstored, u.jobs...)
				p.jobs -= u.counted
				p.parked -= u.parked
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				failed = err
			}
		}
		if failed == nil && len(unstored) > 0 {
			// Recorded before the ack, so a crash in between records them
			// again (records are replaced by delivery id), never loses them.
			failed = d.recordUnstorable(unstored)
		}
		if failed != nil {
			if p.group != nil {
				p.group.release(failed) // hands the event back once its direct deliveries settled
				continue
			}
			d.log.Warn("fan-out: job not stored, event handed back", "subject", p.msg.Subject(), "err", failed)
			// Events are never given up, and come back within seconds;
			// bundles and parked jobs count against MaxDeliveries.
			ceiling := time.Minute
			if p.stage == "fanout" {
				ceiling = 10 * time.Second
			}
			d.handBackLater(p.msg, time.Second, ceiling)
			continue
		}
		if p.eventType != "" && p.jobs > 0 {
			d.m.jobsCreated.WithLabelValues(p.eventType).Add(float64(p.jobs))
		}
		switch {
		case p.parked <= 0:
		case p.stage == "defer":
			d.m.deferred.Add(float64(p.parked))
		default:
			d.m.parked.WithLabelValues(p.stage).Add(float64(p.parked))
		}
		if p.group != nil {
			p.group.release(nil)
			continue
		}
		if err := p.msg.Ack(); err != nil {
			d.log.Error("fan-out: ack event", "subject", p.msg.Subject(), "err", err)
		}
	}
}

// recordUnstorable records deliveries that could not be stored as jobs.
func (d *Dispatcher) recordUnstorable(jobs []job) error {
	for _, j := range jobs {
		if err := d.recordFailure(j, reasonTooLarge, j.Attempt-1); err != nil {
			return err
		}
	}
	return nil
}

// unstorable stands in for the publish of a job or bundle over the
// server's max payload, which no retry could store: the acker records its
// deliveries as failed (reason too_large) before it settles the message
// they came from. counted and parked are what the caller counted for it.
type unstorable struct {
	jobs            []job
	counted, parked int
}

// settled is a closed channel: an unstorable is done at once.
var settled = func() chan *jetstream.PubAck { c := make(chan *jetstream.PubAck); close(c); return c }()

func (unstorable) Ok() <-chan *jetstream.PubAck { return settled }
func (unstorable) Err() <-chan error            { return nil }
func (unstorable) Msg() *nats.Msg               { return nil }

// failedFuture stands in for a publish that never left the client.
type failedFuture struct{ err error }

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error {
	ch := make(chan error, 1)
	ch <- f.err
	return ch
}
func (f failedFuture) Msg() *nats.Msg { return nil }
