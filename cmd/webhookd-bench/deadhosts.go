package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// deadSet is a scenario's hanging destinations, subscriptions base ..
// base+len(hosts)-1. It samples how many connections the daemon holds open
// to them while events are published, and afterwards brings some back and
// waits for each to receive every event it missed.
type deadSet struct {
	hosts []*deadHost
	base  int
	book  *book

	mu      sync.Mutex
	start   time.Time // first publish
	end     time.Time // publishing over (zero while it runs)
	samples []connSample
	stop    chan struct{}
	stopped chan struct{}

	revived   []int // indexes into hosts
	revivedAt time.Time
	want      int64 // distinct deliveries each revived host must get
	// circuits is the revived hosts' health just before the revival.
	circuits *circuitsAtRevival

	// turnAfter > 0: the hosts are turning ones, healthy for that long
	// from the first publish; turnedAt is when they turned (zero: not).
	turnAfter time.Duration
	turnTimer *time.Timer
	turnedAt  time.Time
}

// connSample is the daemon's hold on the dead hosts at one moment.
type connSample struct {
	AtSeconds float64 `json:"atSeconds"` // since the first publish
	Open      int64   `json:"open"`      // connections open to all dead hosts
	Accepted  int64   `json:"accepted"`  // connections accepted so far, all dead hosts
}

// sampleEvery is the connection sampling period.
const sampleEvery = time.Second

// circuitsOpenAfter is when the circuits to the dead hosts are assumed
// open: a few consecutive timeouts (15 s each by default) must come
// first. Runs shorter than twice this use the second half of publishing.
const circuitsOpenAfter = 30 * time.Second

// newDeadSet starts n dead hosts, or with turnAfter > 0 n turning ones
// healthy for that long from the first publish.
func newDeadSet(n, base int, b *book, turnAfter time.Duration) (*deadSet, error) {
	d := &deadSet{base: base, book: b, turnAfter: turnAfter}
	for range n {
		var h *deadHost
		var err error
		if turnAfter > 0 {
			h, err = newTurningHost(b)
		} else {
			h, err = newDeadHost()
		}
		if err != nil {
			d.close()
			return nil, err
		}
		d.hosts = append(d.hosts, h)
	}
	return d, nil
}

func (d *deadSet) url(i int) string { return d.hosts[i].url }

// startSampling samples the open connections every sampleEvery from start
// (the first publish) until endPublishing.
func (d *deadSet) startSampling(start time.Time) {
	d.start = start
	d.stop, d.stopped = make(chan struct{}), make(chan struct{})
	if d.turnAfter > 0 {
		d.turnTimer = time.AfterFunc(time.Until(start.Add(d.turnAfter)), d.turnAll)
	}
	d.sample(start)
	go func() {
		defer close(d.stopped)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				d.sample(now)
			case <-d.stop:
				return
			}
		}
	}()
}

// turnAll turns every host into a hanging one, once.
func (d *deadSet) turnAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.turnedAt.IsZero() {
		return
	}
	for _, h := range d.hosts {
		h.turn()
	}
	d.turnedAt = time.Now()
}

// stopTurn cancels a turn not yet made.
func (d *deadSet) stopTurn() {
	if d.turnTimer != nil {
		d.turnTimer.Stop()
	}
}

func (d *deadSet) sample(now time.Time) {
	s := connSample{AtSeconds: now.Sub(d.start).Seconds()}
	for _, h := range d.hosts {
		s.Open += h.openConns()
		s.Accepted += h.accepted.Load()
	}
	d.mu.Lock()
	d.samples = append(d.samples, s)
	d.mu.Unlock()
}

// endPublishing stops sampling with one last sample: the open count at
// the end of publishing.
func (d *deadSet) endPublishing() {
	if d.stop == nil {
		return
	}
	close(d.stop)
	<-d.stopped
	d.stopTurn()
	d.end = time.Now()
	d.sample(d.end)
}

// revive brings k hosts back, spread evenly over the set; each must then
// receive want distinct deliveries.
func (d *deadSet) revive(k int, want int64) {
	d.want = want
	d.revived = spread(len(d.hosts), k)
	d.revivedAt = time.Now()
	var wg sync.WaitGroup
	for _, i := range d.revived {
		wg.Go(func() { d.hosts[i].revive(d.book, d.base+i, want) })
	}
	wg.Wait()
}

// spread picks k of 0..n-1, evenly spaced, in order.
func spread(n, k int) []int {
	k = min(max(k, 0), n)
	out := make([]int, k)
	for j := range out {
		out[j] = j * n / k
	}
	return out
}

// connStats summarises the samples: the window is from circuitsOpenAfter
// (or half of publishing, when that is shorter) to the end of publishing,
// counted from the turn for turning hosts.
func (d *deadSet) connStats() deadHostsResult {
	d.mu.Lock()
	samples := append([]connSample(nil), d.samples...)
	turnedAt := d.turnedAt
	d.mu.Unlock()
	r := deadHostsResult{Hosts: len(d.hosts), Samples: samples, Circuits: d.circuits}
	if !d.end.IsZero() {
		r.PublishingSeconds = d.end.Sub(d.start).Seconds()
	}
	var from float64
	if d.turnAfter > 0 {
		r.TurnAfterSeconds = d.turnAfter.Seconds()
		if turnedAt.IsZero() {
			from = r.PublishingSeconds // never turned: no window
		} else {
			from = turnedAt.Sub(d.start).Seconds()
			r.TurnedAtSeconds = &from
		}
	}
	r.WindowFromSeconds = from + min(circuitsOpenAfter.Seconds(), (r.PublishingSeconds-from)/2)
	var windowAccepted0 int64 = -1
	for _, s := range samples {
		r.OpenPeak = max(r.OpenPeak, s.Open)
		if r.TurnedAtSeconds != nil && s.AtSeconds >= *r.TurnedAtSeconds {
			r.OpenPeakAfterTurn = max(r.OpenPeakAfterTurn, s.Open)
		}
		if s.AtSeconds >= r.WindowFromSeconds {
			r.OpenMaxInWindow = max(r.OpenMaxInWindow, s.Open)
			if windowAccepted0 < 0 {
				windowAccepted0 = s.Accepted
			}
		}
	}
	if n := len(samples); n > 0 {
		last := samples[n-1]
		r.OpenAtEnd, r.ConnsAccepted = last.Open, last.Accepted
		if windowAccepted0 >= 0 {
			r.NewConnsInWindow = last.Accepted - windowAccepted0
		}
	}
	for _, h := range d.hosts {
		r.HostPeakMax = max(r.HostPeakMax, h.peak.Load())
	}
	return r
}

// recoveryPoll is how often the recovery wait looks at the revived hosts;
// recoveryReport how often it prints progress.
const (
	recoveryPoll   = 100 * time.Millisecond
	recoveryReport = 10 * time.Second
)

// awaitRecovery waits, up to timeout after the revival, until every
// revived host has booked want distinct deliveries, printing progress to
// log, and returns what arrived.
func (d *deadSet) awaitRecovery(ctx context.Context, timeout time.Duration, log io.Writer, name string) *recoveryResult {
	if len(d.revived) == 0 {
		return nil
	}
	at := d.revivedAt
	deadline := at.Add(timeout)
	tick := time.NewTicker(recoveryPoll)
	defer tick.Stop()
	nextReport := time.Now().Add(recoveryReport)
	for {
		r := d.recovery(at, timeout)
		now := time.Now()
		if r.HostsComplete == r.Hosts || now.After(deadline) || ctx.Err() != nil {
			return &r
		}
		if now.After(nextReport) {
			fmt.Fprintf(log, "%s: recovery %.0f s: %d/%d revived hosts complete, %d/%d deliveries\n",
				name, now.Sub(at).Seconds(), r.HostsComplete, r.Hosts, r.Delivered, r.Expected)
			nextReport = now.Add(recoveryReport)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// recovery is the revived hosts' account so far.
func (d *deadSet) recovery(at time.Time, timeout time.Duration) recoveryResult {
	r := recoveryResult{Hosts: len(d.revived), PerHost: d.want, Expected: int64(len(d.revived)) * d.want,
		TimeoutSeconds: timeout.Seconds()}
	var last time.Duration
	var spans []float64
	for _, i := range d.revived {
		h := d.hosts[i]
		if f, c := h.first.Load(), h.complete.Load(); f > 0 && c > 0 {
			span := time.Duration(c - f).Seconds()
			spans = append(spans, span)
			if cd, ok := d.circuits.cooldown(i); ok {
				r.SpanHostsWithCooldown++
				if span <= cd {
					r.SpansWithinCooldown++
				}
			}
		}
		u, dups := d.book.ledger.subCounts(d.base + i)
		r.Delivered += min(u, d.want)
		r.Duplicates += dups
		if f := h.first.Load(); f > 0 {
			r.HostsReached++
			s := time.Unix(0, f).Sub(at).Seconds()
			if r.FirstMaxSeconds == nil || s > *r.FirstMaxSeconds {
				r.FirstMaxSeconds = &s
			}
		}
		if c := h.complete.Load(); c > 0 {
			r.HostsComplete++
			last = max(last, time.Unix(0, c).Sub(at))
		}
	}
	r.SpanMedianSeconds, r.SpanMaxSeconds = medianMax(spans)
	r.Missing = r.Expected - r.Delivered
	if r.HostsComplete == r.Hosts {
		s := last.Seconds()
		r.CompleteSeconds = &s
	}
	return r
}

// awaitRevived runs after the healthy endpoint's drain (its figures are
// closed by then): it adds what the dead hosts saw to res, waiting for
// the revived ones to catch up.
func (r *scenarioRun) awaitRevived(ctx context.Context, log io.Writer, res *Result) {
	if log == nil {
		log = io.Discard
	}
	d := r.dead.connStats()
	d.Recovery = r.dead.awaitRecovery(ctx, r.s.ReviveTimeout, log, r.s.Name)
	res.DeadHosts = &d
}

func (d *deadSet) close() {
	d.stopTurn()
	if d.stop != nil && d.end.IsZero() {
		close(d.stop) // publishing was cut short
		<-d.stopped
	}
	var wg sync.WaitGroup
	for _, h := range d.hosts {
		wg.Go(h.close)
	}
	wg.Wait()
}
