package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// rssWatch samples a process's resident set (VmRSS, not the lifetime
// high-water mark) every interval over one phase of a run and keeps the
// largest, so "peak during" excludes what start-up or an earlier phase
// took.
type rssWatch struct {
	pid      int
	peak     atomic.Int64 // KiB
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// rssEvery is the phase sampling period.
const rssEvery = 50 * time.Millisecond

func watchRSS(pid int, every time.Duration) *rssWatch {
	w := &rssWatch{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-t.C:
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *rssWatch) sample() {
	if rss, _, err := rssKB(w.pid); err == nil {
		raiseTo(&w.peak, rss)
	}
}

// end stops sampling, after one last sample, and returns the peak in MiB.
func (w *rssWatch) end() float64 {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
	w.sample()
	return float64(w.peak.Load()) / 1024
}

// footprint is what a run cost the daemon: its state Before the run, AtEnd
// of it, and After SettleSeconds more with nothing forced; PeakRSSMiB is
// the largest resident set sampled during the run, CPUSeconds its CPU.
type footprint struct {
	Before        daemonSnap `json:"before"`
	AtEnd         daemonSnap `json:"atEnd"`
	After         daemonSnap `json:"after"`
	PeakRSSMiB    *float64   `json:"peakRssMiB"`
	SettleSeconds float64    `json:"settleSeconds"`
	CPUSeconds    *float64   `json:"cpuSeconds"`
}

// daemonSnap is the daemon's state at one moment of a run: resident set
// (nil for a daemon the bench did not start) and what /metrics says (nil
// where it could not be read).
type daemonSnap struct {
	RSSMiB        *float64 `json:"rssMiB"`
	Goroutines    *float64 `json:"goroutines"`
	Registrations *float64 `json:"registrations"`
}

// snapshot reads the daemon's RSS and /metrics; the scrape is returned
// for more series, nil if it failed (err says why).
func snapshot(ctx context.Context, t target) (daemonSnap, metricSet, error) {
	var s daemonSnap
	if t.proc != nil {
		if rss, _, err := rssKB(t.proc.cmd.Process.Pid); err == nil {
			v := float64(rss) / 1024
			s.RSSMiB = &v
		}
	}
	m, err := scrapeMetrics(ctx, t.api)
	s.Goroutines, s.Registrations = m.opt(metricGoroutines), m.opt(metricRegistrations)
	return s, m, err
}

// settle waits d (or until ctx ends) with the daemon left alone: nothing
// forced, no request sent.
func settle(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// median is the middle of xs (the mean of the middle two for an even
// count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// progress prints "name: what" every interval until stopped.
type progress struct {
	stop chan struct{}
	done chan struct{}
}

func startProgress(log func() string, print func(string), every time.Duration) *progress {
	p := &progress{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				print(log())
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

func (p *progress) end() {
	close(p.stop)
	<-p.done
}

// errNote formats a measurement that could not be read.
func errNote(what string, err error) string { return fmt.Sprintf("%s: %v", what, err) }
