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
	deadline := time.Now().Add(time.Second)
	d.mu.Lock()
	for {
		l := d.lanes[q.host]
		if l == nil {
			l = &lane{}
			d.lanes[q.host] = l
		}
		if len(l.queue) < d.cfg.HostQueue {
			l.queue = append(l.queue, q)
			if l.workers < d.cfg.MaxConnsPerHost {
				l.workers++
				d.workers.Add(1)
				go d.laneWorker(q.host, l)
			}
			d.mu.Unlock()
			return true
		}
		wait := time.Until(deadline)
		if !l.progressing(time.Now()) || wait <= 0 {
			d.mu.Unlock()
			return false
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
		if len(l.queue) == 0 {
			l.workers--
			if l.workers == 0 {
				delete(d.lanes, host)
			}
			d.mu.Unlock()
			return
		}
		q := l.queue[0]
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
