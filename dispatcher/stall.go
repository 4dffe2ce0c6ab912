package dispatcher

import (
	"sync"
	"time"
)

// A host that was answering quickly and then stops answering at all is the
// case the per-host limits alone do not cover: until one of its attempts
// times out (a whole DeliveryTimeout), it would keep the standing it earned
// — MaxConnsPerHost workers from the healthy pool, a HostQueue-long lane
// whose jobs hold the healthy consumer's ack slots, direct deliveries — and
// a few dozen such hosts failing together (one provider's outage) would
// take the capacity every healthy host needs. So a lane whose attempts are
// in flight and none has ended for twenty times its typical answer time
// (between SlowAfter and ProvenLatency) is stalled: it is treated as
// unproven at once (probation limits, pool and queue), and its excess
// queue, like every job it has no room for, is set aside for twice as long
// as it has been silent (up to a DeliveryTimeout, by when its attempts
// will most likely have timed out and opened its circuits). And once the
// healthy pool is more than half taken, every attempt that then takes a
// worker from it and runs for SlowAfter (a tenth of ProvenLatency) moves
// into the SlowWorkers pool, so the healthy pool does not wait on hosts
// that have stopped answering: in the first second after 50 busy hosts
// hang, they start up to 64 attempts each, more than the healthy pool
// holds.

// attemptStarted records an attempt beginning on the lane.
// The clock is set before the count, so a reader racing it errs towards
// "not stalled".
func (l *lane) attemptStarted(now time.Time) {
	if l.running.Load() == 0 {
		l.progressAt.Store(now.UnixNano())
	}
	l.running.Add(1)
}

// attemptEnded records an attempt ending, which is progress whatever its
// outcome: a host that answers, even slowly or with errors, is not stuck.
// took, when the host answered, updates the lane's typical answer time.
func (l *lane) attemptEnded(now time.Time, took time.Duration, answered bool) {
	l.progressAt.Store(now.UnixNano())
	l.running.Add(-1)
	if answered {
		// An exponential average over about the last eight answers.
		// The first answer seeds it, so a newly proven lane does not start
		// from an eighth of its real answer time.
		if old := l.answerNanos.Load(); old == 0 {
			l.answerNanos.Store(max(int64(took), 1))
		} else {
			l.answerNanos.Store(old + (int64(took)-old)/8)
		}
	}
}

// stallAfter is how long a lane may go with attempts in flight and none
// ending before it counts as stalled: twenty times its typical answer
// time, between SlowAfter and ProvenLatency. A host that answers in a
// millisecond and then nothing for 100 ms has stopped; one that takes
// 300 ms gets the whole second.
func (d *Dispatcher) stallAfter(l *lane) time.Duration {
	return min(max(20*time.Duration(l.answerNanos.Load()), d.cfg.SlowAfter), d.cfg.ProvenLatency)
}

// stalled reports whether attempts are in flight on the lane and none has
// ended for longer than stallAfter.
func (d *Dispatcher) stalled(l *lane, now time.Time) bool {
	return l.running.Load() > 0 && now.UnixNano()-l.progressAt.Load() > int64(d.stallAfter(l))
}

// isProven reports whether the lane's host has the standing of a proven
// host now: its latest attempt answered within ProvenLatency, and it has
// not stalled since.
func (d *Dispatcher) isProven(l *lane, now time.Time) bool {
	return l.proven.Load() && !d.stalled(l, now)
}

// poolSlot is one attempt's place in the healthy pool, armed to move to
// the slow pool once the attempt has run for SlowAfter (if the slow pool
// has room), so the healthy pool bounds the attempts that are answering,
// not those waiting out a DeliveryTimeout.
type poolSlot struct {
	mu    sync.Mutex
	pool  chan struct{}
	done  bool
	timer *time.Timer
}

// acquireSlot takes a place in pool (blocking). In the healthy pool, once
// it is more than half taken, it also arms the move to the slow pool and
// returns the armed slot; otherwise nil. Below half there is room to
// spare, so the common fast attempt pays for no timer and no allocation,
// and at worst half the pool waits on hosts that stopped answering.
func (d *Dispatcher) acquireSlot(pool chan struct{}) *poolSlot {
	pool <- struct{}{}
	if pool != d.slots || len(pool) <= cap(pool)/2 {
		return nil
	}
	s := &poolSlot{pool: pool}
	s.timer = time.AfterFunc(d.cfg.SlowAfter, func() { s.move(d.slow, d.m.slowMoved) })
	return s
}

// releaseSlot gives back the place acquireSlot took in pool: s's, wherever
// it is now, when it was armed.
func releaseSlot(pool chan struct{}, s *poolSlot) {
	if s == nil {
		<-pool
		return
	}
	s.release()
}

// move hands the slot over to pool to if it has room; otherwise the
// attempt keeps its healthy slot.
func (s *poolSlot) move(to chan struct{}, moved interface{ Inc() }) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	select {
	case to <- struct{}{}:
		<-s.pool
		s.pool = to
		moved.Inc()
	default:
	}
}

// release gives the slot back, wherever it is now.
func (s *poolSlot) release() {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Lock()
	s.done = true
	<-s.pool
	s.mu.Unlock()
}

// shedStalled sets aside the jobs queued in stalled lanes beyond the
// probation queue, so a host that stopped answering gives the healthy
// consumer's ack slots back within a second instead of holding up to
// HostQueue of them until its attempts time out. Direct deliveries stay:
// their deadline stores them as jobs anyway.
func (d *Dispatcher) shedStalled(now time.Time) {
	type shed struct {
		q    queued
		wait time.Duration
	}
	var out []shed
	d.mu.Lock()
	for _, l := range d.lanes {
		if !l.proven.Load() || !d.stalled(l, now) || len(l.queue) <= d.cfg.ProbationHostQueue {
			continue
		}
		keep := l.queue[:0:0]
		for i, q := range l.queue {
			if _, direct := q.msg.(*directMsg); direct || i < d.cfg.ProbationHostQueue {
				keep = append(keep, q)
				continue
			}
			if q.trial {
				d.onTrial--
			}
			out = append(out, shed{q, d.overflowWait(l)})
		}
		l.queue = keep
		if l.room != nil {
			close(l.room)
			l.room = nil
		}
	}
	d.mu.Unlock()
	for _, s := range out {
		j := s.q.job
		d.setAside(s.q.msg, &j, now.Add(jitter(s.wait)), "defer")
	}
	if len(out) > 0 {
		d.m.stalledShed.Add(float64(len(out)))
	}
}
