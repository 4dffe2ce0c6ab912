package dispatcher

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
)

// Direct delivery. A healthy webhook's first attempt is made straight from
// the event message, with no job stored: the event stays unacked while the
// attempt runs, and is acked once every one of its deliveries is either
// done (2xx, or given up and recorded) or durably stored as its next
// state (a retry, a parked copy, a job). Storing a job, handing it out and
// removing it on ack was most of webhookd's own cost per delivery; on the
// common path none of it happens now.
//
// The guarantees stay those of stored jobs:
//   - at-least-once: until each delivery's outcome or stored copy exists,
//     the event is unacked, so a crash redelivers the event and fan-out
//     runs again (then storing jobs: a redelivered event never takes this
//     path). Its healthy deliveries that had succeeded are then POSTed
//     again, with the same webhook-id and body: the price of the fast path
//     is more duplicates after a crash, never a lost delivery.
//   - a failing receiver never makes a healthy one POST again: its attempt
//     stores its retry like any job's, and the event is acked.
//   - isolation: only webhooks whose circuit is closed and clean, on hosts
//     that answered quickly lately, with room in their lane, go direct;
//     the rest are stored as jobs as before. A direct delivery holds one
//     slot of the fan-out consumer's ack window, so they are capped per
//     host (DirectPerHost) and in all (DirectMax), and bounded in time:
//     one still waiting in its lane at DirectDeadline is stored as a job
//     in its place (the lane then skips it), and one whose attempt is
//     still running is covered by a stored continuation, a copy scheduled
//     to fire once the attempt must have ended, which the attempt's
//     outcome deletes (or replaces, with a retry or a parked copy on the
//     same schedule subject).

// eventGroup acks an event once all its parts are settled: one part for
// the acker (the event's stored jobs and bundles) and one per direct
// delivery. A part settled with an error hands the event back instead.
type eventGroup struct {
	d     *Dispatcher
	msg   jetstream.Msg
	parts atomic.Int32
	mu    sync.Mutex
	err   error // the first part's error
}

func (g *eventGroup) release(err error) {
	if err != nil {
		g.mu.Lock()
		if g.err == nil {
			g.err = err
		}
		g.mu.Unlock()
	}
	if g.parts.Add(-1) != 0 {
		return
	}
	g.mu.Lock()
	err = g.err
	g.mu.Unlock()
	if err != nil {
		g.d.log.Warn("fan-out: a delivery's next state was not stored, event handed back", "subject", g.msg.Subject(), "err", err)
		g.d.handBackLater(g.msg, time.Second, 10*time.Second)
		return
	}
	if err := g.msg.Ack(); err != nil {
		g.d.log.Error("fan-out: ack event", "subject", g.msg.Subject(), "err", err)
	}
}

type directState uint8

const (
	directQueued    directState = iota // in its lane, not yet taken by a worker
	directClaimed                      // taken by a worker: it will settle it
	directAbandoned                    // stored as a job at the deadline; the lane skips it
	directDone                         // settled by its worker
)

// directMsg stands in for a stored job's message in the lanes: the
// delivery code settles it as it would a job (Ack, Nak, Term), and it
// turns each settlement into the event's part, storing the delivery's
// next state where a job message would simply have been handed back.
type directMsg struct {
	d     *Dispatcher
	group *eventGroup
	lane  *lane
	job   job // the delivery as fanned out: attempt 1
	timer *time.Timer

	mu       sync.Mutex
	state    directState
	released bool   // the event's part is settled
	cont     uint64 // stream sequence of the stored continuation, if any
}

// tryDirect queues the delivery of ev to webhookID as a direct delivery
// if it may go direct (see the package comment above) and reports whether
// it did.
func (d *Dispatcher) tryDirect(p *pendingEvent, ev events.Event, webhookID string) bool {
	if d.cfg.DirectDeadline < 0 || p.storeOnly || d.directs.Load() >= int64(d.cfg.DirectMax) {
		return false
	}
	t, ok := d.target(webhookID)
	if !ok || t.wh.Disabled {
		return false
	}
	host := t.url.Host
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lanes[host]
	// A lane longer than DirectPerHost holds a backlog (at max rate, of
	// stored jobs): a direct delivery queued behind it would wait for its
	// deadline and be stored anyway, late.
	if l == nil || !d.isProven(l, time.Now()) || int(l.direct.Load()) >= d.cfg.DirectPerHost || len(l.queue) >= d.cfg.DirectPerHost {
		return false
	}
	if p.group == nil {
		p.group = &eventGroup{d: d, msg: p.msg}
		p.group.parts.Store(1) // the acker's
	}
	p.group.parts.Add(1)
	m := &directMsg{d: d, group: p.group, lane: l, job: job{
		DeliveryID: signature.DeliveryID(ev.ID, webhookID), WebhookID: webhookID, Workspace: ev.Workspace,
		EventID: ev.ID, EventType: ev.Type, Subject: ev.Subject, Published: ev.Timestamp, Attempt: 1, Body: ev.Body,
	}}
	l.direct.Add(1)
	d.directs.Add(1)
	d.directTimers.Add(1)
	m.timer = time.AfterFunc(d.cfg.DirectDeadline, m.expire)
	l.queue = append(l.queue, queued{msg: m, job: m.job, host: host, queued: time.Now()})
	conns, _ := d.limits(l)
	if l.workers < conns {
		l.workers++
		d.workers.Add(1)
		go d.laneWorker(host, l)
	}
	d.m.direct.Inc()
	return true
}

// copiesFit reports whether every copy of a delivery of a body this long
// (job, continuation, retry, parked copy) fits the server's max payload.
func (d *Dispatcher) copiesFit(bodyLen int) bool {
	mp := d.cfg.Conn.MaxPayload()
	return mp <= 0 || int64(bodyLen)+jobHeadroom <= mp
}

// claim is a worker taking m from its lane. False means a job was stored
// in its place at the deadline: the worker drops it.
func (m *directMsg) claim() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != directQueued {
		return false
	}
	m.state = directClaimed
	return true
}

// expire runs at DirectDeadline: a delivery still waiting in its lane is
// stored as a job, one being attempted gets a continuation; either way the
// event need not wait for it any longer.
func (m *directMsg) expire() {
	d := m.d
	defer d.directTimers.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case directQueued:
		err := m.store(&nats.Msg{Subject: d.jobSubject(m.job.WebhookID), Header: m.job.header(m.job.DeliveryID), Data: m.job.Body})
		if err == nil {
			m.state = directAbandoned
			m.untrack()
			d.m.directStored.WithLabelValues("queued").Inc()
		}
		m.release(err)
	case directClaimed:
		// Fires once the attempt must have ended (it is bounded by the
		// delivery timeout), had this instance died meanwhile. It has a
		// schedule subject of its own: the attempt's outcome may store
		// its retry or parked copy on the delivery's subject at any
		// moment, even now, and a schedule replaces the one before it on
		// its subject. Its dedupe id is unique: an event id seen again
		// within the duplicate window must not find it stored already.
		now := time.Now()
		h := m.job.header(m.job.DeliveryID + ".c" + strconv.FormatInt(now.UnixNano(), 36))
		h[hdrSchedule] = []string{"@at " + now.Add(d.cfg.ackWait()).UTC().Format(time.RFC3339Nano)}
		h[hdrSchedTarget] = []string{d.trialSubject(m.job.WebhookID)}
		msg := &nats.Msg{Subject: d.schedSubject(m.job.WebhookID, m.job.DeliveryID) + ".c", Header: h, Data: m.job.Body}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := d.js.PublishMsg(ctx, msg)
		cancel()
		if err == nil && ack.Duplicate {
			err = errors.New("continuation deduplicated against an earlier copy")
		}
		if err == nil {
			m.cont = ack.Sequence
			d.m.directStored.WithLabelValues("attempting").Inc()
		}
		m.release(err)
	}
}

// store publishes one stored copy of the delivery and waits for its ack.
func (m *directMsg) store(msg *nats.Msg) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := m.d.js.PublishMsg(ctx, msg)
	return err
}

// release settles the event's part, once. Caller holds m.mu.
func (m *directMsg) release(err error) {
	if m.released {
		return
	}
	m.released = true
	m.group.release(err)
}

// untrack returns the delivery's places under DirectPerHost and DirectMax.
// Caller holds m.mu.
func (m *directMsg) untrack() {
	m.lane.direct.Add(-1)
	m.d.directs.Add(-1)
}

// settle ends a claimed delivery. handBack asks for another attempt after
// delay, as a NAK would for a job: a copy is stored for then. Otherwise the
// delivery is over (its retry, parked copy or failure record is stored by
// the caller). Either way a continuation, no longer needed once that is
// stored, is deleted.
func (m *directMsg) settle(handBack bool, delay time.Duration) error {
	d := m.d
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != directClaimed {
		return nil
	}
	if m.timer.Stop() {
		d.directTimers.Done()
	}
	var err error
	if handBack {
		if err = m.store(d.parkMsg(&m.job, time.Now().Add(delay))); err == nil {
			d.m.directStored.WithLabelValues("handed_back").Inc()
		}
	}
	if m.cont != 0 && err == nil {
		m.deleteContinuation()
	}
	if m.cont != 0 {
		// The continuation covers it: the event's part is settled already.
		err = nil
	}
	m.state = directDone
	m.untrack()
	m.release(err)
	return err
}

// deleteContinuation removes the stored continuation of a delivery whose
// outcome came. If it cannot, the continuation fires later and the
// receiver gets the delivery once more (same webhook-id): a duplicate,
// never a loss. Caller holds m.mu.
func (m *directMsg) deleteContinuation() {
	d := m.d
	err := errors.New("deliveries stream not set up")
	if s := d.deliveries.Load(); s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = (*s).DeleteMsg(ctx, m.cont)
		cancel()
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		d.log.Warn("delete a direct delivery's continuation failed; the receiver may get it once more",
			"webhook", m.job.WebhookID, "delivery", m.job.DeliveryID, "seq", strconv.FormatUint(m.cont, 10), "err", err)
	}
}

// The jetstream.Msg the delivery code settles. A direct delivery is, to
// that code, a job delivered once.

func (m *directMsg) Ack() error                             { return m.settle(false, 0) }
func (m *directMsg) DoubleAck(context.Context) error        { return m.settle(false, 0) }
func (m *directMsg) Term() error                            { return m.settle(false, 0) }
func (m *directMsg) TermWithReason(string) error            { return m.settle(false, 0) }
func (m *directMsg) Nak() error                             { return m.settle(true, 0) }
func (m *directMsg) NakWithDelay(delay time.Duration) error { return m.settle(true, delay) }
func (m *directMsg) InProgress() error                      { return nil }
func (m *directMsg) Data() []byte                           { return m.job.Body }
func (m *directMsg) Headers() nats.Header                   { return nil }
func (m *directMsg) Subject() string                        { return m.d.jobSubject(m.job.WebhookID) }
func (m *directMsg) Reply() string                          { return "" }
func (m *directMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1, Timestamp: m.job.Published}, nil
}
