package dispatcher

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// queued is a job waiting in its host's lane.
type queued struct {
	msg    jetstream.Msg
	job    job
	host   string
	queued time.Time
}

// lane holds the jobs bound for one destination host. At most
// MaxConnsPerHost workers drain it, and at most HostQueue jobs wait in it,
// so a slow or hanging receiver only ever slows itself: its excess jobs are
// handed back to JetStream instead of occupying shared workers.
type lane struct {
	queue    chan queued
	workers  int          // guarded by Dispatcher.mu
	lastFast atomic.Int64 // unix nanos of the last attempt that finished quickly
}

// fastAttempt is how quick an attempt must be to count as progress. A
// receiver that answers (even 500) within it drains its lane; one that
// hangs until the timeout does not, however many of its attempts end.
const fastAttempt = time.Second

// progressing reports whether the lane finished a quick attempt lately: a
// full lane that is progressing is merely busy, one that is not is stuck.
func (l *lane) progressing(now time.Time) bool {
	return now.UnixNano()-l.lastFast.Load() < int64(250*time.Millisecond)
}

// enqueue places q in its host's lane, starting a worker if the lane has
// room for one. When the lane is full but progressing it waits for room
// (up to a second), which pushes back on the consumer: a busy healthy host
// should slow intake, not bounce jobs. A full lane that is stuck reports
// false at once, and the caller hands the job back to JetStream.
func (d *Dispatcher) enqueue(q queued) bool {
	d.mu.Lock()
	l := d.lanes[q.host]
	if l == nil {
		l = &lane{queue: make(chan queued, d.cfg.HostQueue)}
		d.lanes[q.host] = l
	}
	select {
	case l.queue <- q:
	default:
		if !l.progressing(time.Now()) {
			d.mu.Unlock()
			return false
		}
		// Workers keep draining a full lane, so it stays in the map while
		// we wait outside the lock.
		d.mu.Unlock()
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case l.queue <- q:
		case <-t.C:
			return false
		}
		d.mu.Lock()
	}
	defer d.mu.Unlock()
	if l.workers < d.cfg.MaxConnsPerHost {
		l.workers++
		d.workers.Add(1)
		go d.laneWorker(q.host, l)
	}
	return true
}

// laneWorker drains one lane and exits when it is empty, so idle hosts cost
// nothing.
func (d *Dispatcher) laneWorker(host string, l *lane) {
	defer d.workers.Done()
	for {
		d.mu.Lock()
		var q queued
		var ok bool
		select {
		case q, ok = <-l.queue:
		default:
		}
		if !ok {
			l.workers--
			if l.workers == 0 && len(l.queue) == 0 {
				delete(d.lanes, host)
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		start := time.Now()
		d.run(q)
		if end := time.Now(); end.Sub(start) < fastAttempt {
			l.lastFast.Store(end.UnixNano())
		}
	}
}

// run takes one queued job through the global worker limit and an attempt.
func (d *Dispatcher) run(q queued) {
	if d.stopping.Load() {
		d.handBack(q.msg, 0)
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
	d.slots <- struct{}{}
	defer func() { <-d.slots }()
	if waited > d.cfg.ackWait()/3 {
		// Restart the ack clock so the attempt has its full deadline.
		_ = q.msg.InProgress()
	}
	d.attempt(q)
}

// defer hands a job back because its host is saturated. The short delay
// is not an attempt: the attempt number lives in the job, not in
// JetStream's delivery count.
func (d *Dispatcher) deferJob(msg jetstream.Msg) {
	d.m.deferred.Inc()
	d.handBack(msg, jitter(2*time.Second))
}

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
