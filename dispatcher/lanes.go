package dispatcher

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/breaker"
)

// queued is a job waiting in its host's lane.
type queued struct {
	msg    jetstream.Msg
	job    job
	host   string
	queued time.Time
	trial  bool // counted in Dispatcher.onTrial
}

// lane holds the jobs bound for one destination host. At most
// MaxConnsPerHost workers drain it, and at most HostQueue jobs wait in it,
// so a slow or hanging receiver only ever slows itself: its excess jobs are
// handed back to JetStream instead of occupying shared workers.
//
// The queue is a slice that grows with use, not a channel of HostQueue
// slots: lanes come and go with traffic (one per host with work), and a
// preallocated 4096-slot channel cost a megabyte of zeroed memory each time
// a quiet host got a job.
type lane struct {
	// Guarded by Dispatcher.mu.
	queue   []queued
	workers int
	// room, when not nil, is closed as soon as a full lane loses a job.
	room chan struct{}

	lastFast atomic.Int64 // unix nanos of the last attempt that finished quickly
	// proven: the host's latest attempt got an HTTP answer (any status)
	// within Config.ProvenLatency. Unproven hosts — new ones, and ones that time out
	// or refuse connections — get probation limits and the probation pool.
	proven atomic.Bool
	// tried: an attempt to the host has finished. Until then the host is
	// fresh: probation limits, in a pool of its own, so that a new
	// endpoint is queued neither behind hanging hosts' probation attempts
	// nor in front of proven hosts' work.
	tried    atomic.Bool
	lastUsed atomic.Int64 // unix nanos of the last attempt's end
	// trying: unix nanos when the host's first attempt began (0: none
	// yet), so a fresh host's overflow waits about as long as its first
	// answer is taking, not a whole second (see overflowWait).
	trying atomic.Int64
	// answerNanos: an average of the host's recent answer times (see
	// stallAfter).
	answerNanos atomic.Int64
	// hanging: the host's latest attempt timed out. It then gets one
	// connection, so the attempts that were running when its first
	// timeout came end without others starting behind them.
	hanging atomic.Bool

	// reserved counts jobs a bundle expansion has published for this host
	// that have not reached the lane yet (guarded by Dispatcher.mu); a
	// reservation older than a delivery timeout is presumed taken by
	// another instance.
	reserved   int
	reservedAt time.Time
	// direct counts the host's direct deliveries not yet settled (see
	// direct.go), bounded by Config.DirectPerHost.
	direct atomic.Int32
	// running counts attempts in flight; progressAt is when the latest
	// one ended, or when the lane last went from idle to busy (see
	// stall.go).
	running    atomic.Int32
	progressAt atomic.Int64
}

// reserve reports whether a bundle may create a job for host now, and
// counts it if so. A host that timed out gets a handful (its probation
// connections, twice over), others their queue; when the answer is no,
// wait is how long the bundle should keep the webhook.
func (d *Dispatcher) reserve(host string) (ok bool, wait time.Duration) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lanes[host]
	if l == nil {
		l = &lane{}
		l.lastUsed.Store(now.UnixNano())
		d.lanes[host] = l
	}
	if now.Sub(l.reservedAt) > d.cfg.DeliveryTimeout {
		l.reserved = 0
	}
	conns, room := d.limits(l)
	if l.hanging.Load() {
		room = 2 * conns
	}
	if len(l.queue)+l.reserved >= room {
		return false, d.overflowWait(l)
	}
	l.reserved++
	l.reservedAt = now
	return true, 0
}

// overflowWait is how long a job its lane has no room for is set aside:
// a whole delivery timeout for a host that is timing out (its attempts in
// flight will most likely open its circuit by then), a second for a host
// not tried yet (its first answer, if quick, proves it), DeferDelay for a
// busy host.
func (d *Dispatcher) overflowWait(l *lane) time.Duration {
	switch {
	case l.hanging.Load():
		return d.cfg.DeliveryTimeout
	case !l.tried.Load():
		// Its first answer, if quick, proves it: come back a little after
		// that answer should be in. Twice the first attempt's age so far,
		// so a host that hangs is asked again ever less often, up to a
		// second; a burst to a new quick endpoint waits 100 ms, not 1 s.
		wait := min(time.Second, d.cfg.DeferDelay)
		if t0 := l.trying.Load(); t0 != 0 {
			wait = min(wait, max(d.cfg.FreshDeferMin, 2*time.Since(time.Unix(0, t0))))
		} else {
			wait = min(wait, d.cfg.FreshDeferMin)
		}
		return wait
	case d.stalled(l, time.Now()):
		// It stopped answering: come back twice as long as it has been
		// silent so far, so a hiccup costs a moment and a host that has
		// stopped for good is asked ever less often, up to the timeout its
		// attempts are waiting out.
		silent := time.Since(time.Unix(0, l.progressAt.Load()))
		return min(max(d.cfg.FreshDeferMin, 2*silent), d.cfg.DeliveryTimeout)
	}
	return d.cfg.DeferDelay
}

// limits returns the lane's concurrency and queue caps.
// A host that is not proven never gets more than a proven one would.
func (d *Dispatcher) limits(l *lane) (conns, queue int) {
	conns, queue = d.cfg.ProbationConnsPerHost, d.cfg.ProbationHostQueue
	switch {
	case d.isProven(l, time.Now()):
		return d.cfg.MaxConnsPerHost, d.cfg.HostQueue
	case l.tried.Load() && l.hanging.Load():
		conns = d.cfg.HangingConnsPerHost
	}
	// Fresh hosts get the probation limits too, in the fresh pool (see run).
	return min(conns, d.cfg.MaxConnsPerHost), min(queue, d.cfg.HostQueue)
}

// progressing reports whether the lane finished a quick attempt lately: a
// full lane that is progressing is merely busy, one that is not is stuck.
func (l *lane) progressing(now time.Time) bool {
	return now.UnixNano()-l.lastFast.Load() < int64(250*time.Millisecond)
}

// enqueue places q in its host's lane, starting a worker if the lane has
// room for one. When the lane is full but progressing it waits for room
// (up to LanePushBack), which pushes back on the consumer: a busy healthy host
// should slow intake, not bounce jobs. A full lane that is stuck reports
// false at once, and the caller hands the job back to JetStream.
//
// When it reports false, wait is how long the job should be set aside
// (see overflowWait).
func (d *Dispatcher) enqueue(q queued) (ok bool, wait time.Duration) {
	deadline := time.Now().Add(d.cfg.LanePushBack)
	arrived := false // counted against the lane's reservations
	d.mu.Lock()
	for {
		l := d.lanes[q.host]
		if l == nil {
			l = &lane{}
			l.lastUsed.Store(time.Now().UnixNano())
			d.lanes[q.host] = l
		}
		if !arrived {
			arrived = true
			if l.reserved > 0 {
				l.reserved--
			}
		}
		conns, queueCap := d.limits(l)
		q.trial = !d.isProven(l, time.Now())
		if q.trial && d.onTrial >= d.cfg.ProbationQueued {
			// Unproven hosts together may not hold more of the ack-pending
			// window than this.
			d.mu.Unlock()
			return false, d.overflowWait(l)
		}
		if len(l.queue) < queueCap {
			l.queue = append(l.queue, q)
			if q.trial {
				d.onTrial++
			}
			if l.workers < conns {
				l.workers++
				d.workers.Add(1)
				go d.laneWorker(q.host, l)
			}
			d.mu.Unlock()
			return true, 0
		}
		wait := time.Until(deadline)
		if q.trial || !l.progressing(time.Now()) || wait <= 0 {
			d.mu.Unlock()
			return false, d.overflowWait(l)
		}
		// Workers keep draining a full lane, so it stays in the map while
		// we wait outside the lock.
		if l.room == nil {
			l.room = make(chan struct{})
		}
		room := l.room
		d.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
		d.mu.Lock()
	}
}

// laneWorker drains one lane and exits when it is empty, so idle hosts cost
// nothing.
func (d *Dispatcher) laneWorker(host string, l *lane) {
	defer d.workers.Done()
	for {
		d.mu.Lock()
		conns, _ := d.limits(l)
		if len(l.queue) == 0 || l.workers > conns {
			// Empty, or the host lost its proven status and has more
			// workers than probation allows. The idle lane stays for a
			// while (see pruneLanes) so that the host keeps its standing,
			// good or bad, between two jobs.
			l.workers--
			d.mu.Unlock()
			return
		}
		q := l.queue[0]
		if q.trial {
			d.onTrial--
		}
		l.queue[0] = queued{} // let the message be collected once attempted
		l.queue = l.queue[1:]
		if len(l.queue) == 0 {
			l.queue = nil // release the backing array; the next job starts small
		}
		if l.room != nil {
			close(l.room)
			l.room = nil
		}
		d.mu.Unlock()
		d.run(q, l)
	}
}

// pruneLanes forgets lanes idle for longer than LaneIdle, so lanes are
// bounded by the hosts active lately.
func (d *Dispatcher) pruneLanes(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for host, l := range d.lanes {
		if l.workers == 0 && len(l.queue) == 0 && now.UnixNano()-l.lastUsed.Load() > int64(d.cfg.LaneIdle) {
			delete(d.lanes, host)
		}
	}
}

// run takes one queued job through its circuit, a worker pool and an
// attempt.
func (d *Dispatcher) run(q queued, l *lane) {
	if dm, ok := q.msg.(*directMsg); ok && !dm.claim() {
		return // stored as a job at its deadline
	}
	if d.stopping.Load() {
		d.handBack(q.msg, d.shutdownHandBack())
		return
	}
	t, ok := d.target(q.job.WebhookID)
	if !ok {
		d.m.dropped.WithLabelValues("webhook_deleted").Inc()
		_ = q.msg.Ack()
		return
	}
	if t.wh.Disabled {
		// Pending work of a disabled webhook is kept as failed deliveries,
		// ready for inspection and a manual retry once it is enabled.
		j := q.job
		if j.LastError == "" {
			j.LastError = "webhook disabled"
		}
		d.giveUp(q.msg, j, "disabled")
		return
	}
	waited := time.Since(q.queued)
	// A job that queued for most of its ack deadline is probably being
	// redelivered already; hand it back rather than race the redelivery.
	if waited > d.cfg.ackWait()-d.cfg.DeliveryTimeout-5*time.Second {
		d.m.deferred.Inc()
		d.handBack(q.msg, jitter(time.Second))
		return
	}
	br := d.health.br
	var dec breaker.Decision
	if q.job.Probe && br.Status(q.job.WebhookID).State == breaker.HalfOpen {
		dec = breaker.Decision{Allowed: true, Probe: true} // granted at expansion
	} else {
		dec = br.Allow(q.job.WebhookID)
	}
	if dec.HalfOpened {
		d.m.transitions.WithLabelValues("half_open").Inc()
	}
	st := br.Status(q.job.WebhookID)
	if !dec.Allowed {
		d.parkSync(q, spread(dec.RetryAt, st.Cooldown))
		return
	}
	// Capacity follows success: proven hosts and succeeding webhooks use
	// the healthy pool, a host's first attempts the fresh pool, everything
	// failing (and every probe) the probation pool.
	// A stalled host (see stall.go) has lost that standing however its
	// webhooks did before.
	pool, gauge := d.trial, d.m.probation
	switch {
	case dec.Probe || st.Failures > 0:
	case l.proven.Load() && d.stalled(l, time.Now()):
	case l.proven.Load() || d.health.succeeding(q.job.WebhookID):
		pool, gauge = d.slots, d.m.inflight
	case !l.tried.Load():
		pool, gauge = d.fresh, d.m.fresh
	}
	slot := d.acquireSlot(pool)
	defer releaseSlot(pool, slot)
	if d.stopping.Load() {
		// Shutdown began while this job waited for a worker.
		br.Abandon(q.job.WebhookID, dec.Probe)
		d.handBack(q.msg, d.shutdownHandBack())
		return
	}
	if !dec.Probe && br.Status(q.job.WebhookID).State != breaker.Closed {
		// The circuit opened while this job waited for a worker.
		st := br.Status(q.job.WebhookID)
		at := st.OpenUntil
		if now := time.Now(); at.Before(now) {
			at = now // half-open already: back in a moment, to compete for the probe
		}
		d.parkSync(q, spread(at, st.Cooldown))
		return
	}
	if waited > d.cfg.ackWait()/3 {
		// Restart the ack clock so the attempt has its full deadline.
		_ = q.msg.InProgress()
	}
	gauge.Inc()
	start := time.Now()
	if !l.tried.Load() {
		l.trying.CompareAndSwap(0, start.UnixNano())
	}
	l.attemptStarted(start)
	res := d.attempt(q, t, dec.Probe)
	end := time.Now()
	l.attemptEnded(end, end.Sub(start), res.kind == errNone || res.status > 0)
	gauge.Dec()
	l.tried.Store(true)
	l.lastUsed.Store(end.UnixNano())
	switch fast := end.Sub(start) < d.cfg.ProvenLatency; {
	case res.kind == errNone && fast:
		l.proven.Store(true)
		l.hanging.Store(false)
		l.lastFast.Store(end.UnixNano())
	case res.kind == errNone:
		l.hanging.Store(false)
	case res.kind == errTimeout:
		l.proven.Store(false)
		l.hanging.Store(true)
	case res.kind == errNetwork:
		l.proven.Store(false)
	}
}

// shutdownHandBack delays the jobs a stopping instance hands back past its
// last pull round: with no delay the server would hand them straight back
// to the round still open, again and again, spending each job's
// MaxDeliveries within a second.
func (d *Dispatcher) shutdownHandBack() time.Duration { return 2 * d.cfg.PullWait }

func (d *Dispatcher) handBack(msg jetstream.Msg, delay time.Duration) {
	var err error
	if delay > 0 {
		err = msg.NakWithDelay(delay)
	} else {
		err = msg.Nak()
	}
	if err != nil {
		d.log.Debug("hand back job", "err", err)
	}
}

// jitter returns a duration in [d, 1.5d).
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/2+1))
}
