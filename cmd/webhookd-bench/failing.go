package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/webhookd/webhookd/events"
)

// failing1m presets (--failing-webhooks, --failing-events override them).
const (
	defaultFailingHooks  = 100
	defaultFailingEvents = 10_000
	// failingPoll is how often the give-ups are read from /metrics;
	// failingMaxWait bounds the whole wait (--drain-idle ends it sooner
	// once nothing moves).
	failingPoll    = 500 * time.Millisecond
	failingMaxWait = time.Hour
	// failuresListLimit is the largest page GET …/failures serves.
	failuresListLimit = 1000
	// defaultFailuresPerHook is the daemon's --failures-per-webhook.
	defaultFailuresPerHook = 100
)

// failingDaemonFlags make every delivery give up after its one attempt,
// with the circuit breaker kept shut: an open circuit parks deliveries
// (parking is no attempt), and a million of them would then wait out
// cool-downs of up to 5 minutes instead of failing. --daemon-flag comes
// after these and overrides them.
var failingDaemonFlags = []string{"--retry-max-attempts=1", "--circuit-failures=1000000000"}

// failingResult is what a failing1m run measured.
type failingResult struct {
	Webhooks       int                `json:"webhooks"`
	Events         int                `json:"events"` // acked, each to every webhook
	Expected       int64              `json:"expectedGiveUps"`
	GaveUp         *float64           `json:"gaveUp"` // webhookd_deliveries_failed_total, all reasons
	ByReason       map[string]float64 `json:"gaveUpByReason"`
	Seconds        float64            `json:"seconds"` // first publish to the last give-up seen
	PerSecond      float64            `json:"giveUpsPerSecond"`
	PublishSeconds float64            `json:"publishSeconds"`
	// What the failing receivers saw: every request, the distinct
	// (event, webhook) pairs, and the repeats among them.
	Attempts    int64          `json:"receiverAttempts"`
	Distinct    int64          `json:"distinctDeliveries"`
	Repeats     int64          `json:"repeats"`
	footprint                  // before publishing, at the last give-up, after settling
	Streams     []streamBytes  `json:"streams"` // after settling, with the peaks sampled
	List        *failuresCheck `json:"failuresList"`
	DaemonFlags []string       `json:"daemonFlags"`
}

// failuresCheck is GET /api/webhook/{id}/failures?limit=1000 asked of
// every webhook after the run.
type failuresCheck struct {
	Webhooks   int     `json:"webhooks"`
	Limit      int     `json:"limit"`
	Bound      int     `json:"bound"` // the daemon's --failures-per-webhook
	MinLen     int     `json:"minLen"`
	MaxLen     int     `json:"maxLen"`
	MaxMillis  float64 `json:"slowestMs"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
}

// failuresPerHook is the --failures-per-webhook among flags (the last
// one wins, as in the daemon), else the daemon's default.
func failuresPerHook(flags []string) int {
	n := defaultFailuresPerHook
	for i, f := range flags {
		name, val, hasVal := strings.Cut(strings.TrimLeft(f, "-"), "=")
		if name != "failures-per-webhook" || !strings.HasPrefix(f, "-") {
			continue
		}
		if !hasVal && i+1 < len(flags) {
			val = flags[i+1]
		}
		if v, err := strconv.Atoi(val); err == nil {
			n = v
		}
	}
	return n
}

func (f *failingResult) verdict() []string {
	var why []string
	switch {
	case f.GaveUp == nil:
		why = append(why, "webhookd_deliveries_failed_total not readable from /metrics")
	case int64(*f.GaveUp) < f.Expected:
		why = append(why, fmt.Sprintf("only %.0f of %d failing deliveries were given up before the wait ended", *f.GaveUp, f.Expected))
	}
	if l := f.List; l == nil {
		why = append(why, "the failure lists were not read")
	} else {
		if l.Errors > 0 {
			why = append(why, fmt.Sprintf("GET …/failures failed for %d of %d webhooks, first: %s", l.Errors, l.Webhooks, l.FirstError))
		}
		if l.MaxLen > l.Bound {
			why = append(why, fmt.Sprintf("GET …/failures?limit=%d answered %d records, beyond --failures-per-webhook %d: the list is not bounded", l.Limit, l.MaxLen, l.Bound))
		}
		if l.Errors < l.Webhooks && l.MinLen == 0 && f.GaveUp != nil && *f.GaveUp > 0 {
			why = append(why, "a webhook with given-up deliveries lists no failure record")
		}
	}
	return why
}

func (f *failingResult) lines() []string {
	mib := func(v *float64) string { return opt(v, "%.0f MiB") }
	reasons := make([]string, 0, len(f.ByReason))
	for _, k := range slices.Sorted(maps.Keys(f.ByReason)) {
		if f.ByReason[k] == 0 {
			continue
		}
		reasons = append(reasons, fmt.Sprintf("%s %.0f", k, f.ByReason[k]))
	}
	cpu := "n/a"
	if f.CPUSeconds != nil && f.GaveUp != nil && *f.GaveUp > 0 {
		cpu = fmt.Sprintf("%.1f s, %.0f µs per give-up", *f.CPUSeconds, *f.CPUSeconds*1e6 / *f.GaveUp)
	}
	out := []string{
		fmt.Sprintf("%d webhooks answering 500 to everything, %d events to each = %d deliveries, each given up after one attempt (daemon flags %s)",
			f.Webhooks, f.Events, f.Expected, strings.Join(f.DaemonFlags, " ")),
		fmt.Sprintf("give-ups (webhookd_deliveries_failed_total): %s/%d in %.1f s from the first publish = %.0f/s (%s); publishing took %.1f s; webhookd CPU %s",
			opt(f.GaveUp, "%.0f"), f.Expected, f.Seconds, f.PerSecond, strings.Join(reasons, ", "), f.PublishSeconds, cpu),
		fmt.Sprintf("receivers: %d attempts, %d distinct deliveries, %d repeats", f.Attempts, f.Distinct, f.Repeats),
		fmt.Sprintf("RSS (embedded NATS included): %s before, %s peak during, %s at the end, %s %.0f s after (nothing forced); goroutines %s before, %s after",
			mib(f.Before.RSSMiB), mib(f.PeakRSSMiB), mib(f.AtEnd.RSSMiB), mib(f.After.RSSMiB), f.SettleSeconds,
			opt(f.Before.Goroutines, "%.0f"), opt(f.After.Goroutines, "%.0f")),
		"streams (webhookd_store_bytes, after settling): " + storeLine(f.Streams),
	}
	if l := f.List; l != nil {
		out = append(out, fmt.Sprintf("GET /api/webhook/{id}/failures?limit=%d for %d webhooks: %d to %d records each (bound: --failures-per-webhook %d), slowest answer %.1f ms, %d errors",
			l.Limit, l.Webhooks, l.MinLen, l.MaxLen, l.Bound, l.MaxMillis, l.Errors))
	}
	return out
}

// runFailing registers s.Failing webhooks on receivers answering 500,
// publishes s.Events events at the ack window's pace, and waits until
// every delivery was given up.
func (b *bench) runFailing(ctx context.Context, s Scenario) (res Result, err error) {
	res = newResult(s)
	t, err := b.target(ctx, s)
	if err != nil {
		return res, err
	}
	r := &scenarioRun{s: s, t: t, api: newAPIClient(t, b.cfg.RegisterWorkers), logw: b.logOrDiscard()}
	defer func() { err = errors.Join(err, r.close(b, &res)) }()
	if err := r.setUp(ctx, b.cfg, &res); err != nil {
		return res, err
	}
	flags := append(slices.Clone(s.DaemonFlags), b.cfg.DaemonFlags...)
	f := &failingResult{Webhooks: s.Failing, footprint: footprint{SettleSeconds: s.Settle.Seconds()}, DaemonFlags: flags}
	res.Failing = f
	var merr error
	if f.Before, _, merr = snapshot(ctx, t); merr != nil {
		res.Notes = append(res.Notes, errNote("before publishing", merr))
	}
	pub, err := newPublisher(publisherConfig{NATSURL: t.natsURL, Window: b.cfg.Window, Shape: r.shape,
		Subject: t.prefix + "." + t.workspace + "." + string(events.WorkflowRunCompleted)})
	if err != nil {
		return res, err
	}
	defer pub.close()
	var watch *rssWatch
	var cpu0 float64
	if t.proc != nil {
		watch = watchRSS(t.proc.cmd.Process.Pid, rssEvery)
		defer watch.end()
		if cpu0, err = t.proc.cpuSeconds(); err != nil {
			return res, err
		}
	}
	start := time.Now()
	pr, pubErr := pub.run(ctx, s.Events, pacer{start: start, rate: s.Rate})
	f.PublishSeconds = time.Since(start).Seconds()
	if pubErr != nil && ctx.Err() != nil {
		return res, ctx.Err()
	}
	if pubErr != nil {
		res.Notes = append(res.Notes, "publishing stopped: "+pubErr.Error())
	}
	f.Events, f.Expected = pr.Acked, int64(pr.Acked)*int64(s.Failing)
	last := r.awaitGiveUps(ctx, f, start, b.cfg.DrainIdle)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if watch != nil {
		peak := watch.end()
		f.PeakRSSMiB = &peak
		if cpu1, cerr := t.proc.cpuSeconds(); cerr == nil {
			cpu := cpu1 - cpu0
			f.CPUSeconds = &cpu
		}
	}
	f.ByReason = last.byLabel(metricFailed, "reason")
	for _, rc := range r.recvs {
		f.Attempts += rc.attempts.Load()
	}
	for i := range r.recvs {
		u, d := r.led.subCounts(i)
		f.Distinct += u
		f.Repeats += d
	}
	if f.AtEnd, _, merr = snapshot(ctx, t); merr != nil {
		res.Notes = append(res.Notes, errNote("at the end", merr))
	}
	settle(ctx, s.Settle)
	after, m, merr := snapshot(ctx, t)
	f.After = after
	if merr != nil {
		res.Notes = append(res.Notes, errNote("after settling", merr))
	}
	f.Streams = raisePeaks(storeSizes(m), f.Streams)
	f.List = r.checkFailureLists(ctx, failuresPerHook(flags))
	res.Tally = r.led.tally(pr.Generated, pr.Acked)
	res.CPUSeconds, res.PeakRSSMiB = f.CPUSeconds, f.PeakRSSMiB
	res.finish()
	res.FailReasons = append(res.FailReasons, f.verdict()...)
	return res, nil
}

// awaitGiveUps polls /metrics until f.Expected deliveries were given up,
// nothing moved (no give-up, no attempt) for idle, or failingMaxWait
// passed; it fills f's give-up figures and sampled stream peaks and
// returns the last scrape.
func (r *scenarioRun) awaitGiveUps(ctx context.Context, f *failingResult, start time.Time, idle time.Duration) metricSet {
	tick := time.NewTicker(failingPoll)
	defer tick.Stop()
	var last metricSet
	lastAttempts := int64(-1)
	lastMove, lastGiveUp := time.Now(), start
	nextReport := time.Now().Add(recoveryReport)
	for {
		m, err := scrapeMetrics(ctx, r.t.api)
		now := time.Now()
		var attempts int64
		for _, rc := range r.recvs {
			attempts += rc.attempts.Load()
		}
		if err == nil {
			last = m
			f.Streams = raisePeaks(f.Streams, storeSizes(m))
			if n, ok := m.sum(metricFailed, nil); ok {
				if f.GaveUp == nil || n != *f.GaveUp {
					lastGiveUp, lastMove = now, now
				}
				f.GaveUp = &n
			}
		}
		if attempts != lastAttempts {
			lastAttempts, lastMove = attempts, now
		}
		done := f.GaveUp != nil && int64(*f.GaveUp) >= f.Expected
		if done || now.Sub(lastMove) >= idle || now.Sub(start) >= failingMaxWait || ctx.Err() != nil {
			if f.GaveUp != nil {
				f.Seconds = lastGiveUp.Sub(start).Seconds()
				if f.Seconds > 0 {
					f.PerSecond = *f.GaveUp / f.Seconds
				}
			}
			return last
		}
		if now.After(nextReport) {
			fmt.Fprintf(r.logw, "%s: %.0f s: %s/%d given up, %d attempts at the receivers\n",
				r.s.Name, now.Sub(start).Seconds(), opt(f.GaveUp, "%.0f"), f.Expected, attempts)
			nextReport = now.Add(recoveryReport)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// checkFailureLists asks every webhook for its failure records, as many
// as one page holds.
func (r *scenarioRun) checkFailureLists(ctx context.Context, bound int) *failuresCheck {
	c := &failuresCheck{Webhooks: len(r.hookIDs), Limit: failuresListLimit, Bound: bound, MinLen: -1}
	var mu sync.Mutex
	_ = parallel(ctx, len(r.hookIDs), 8, func(ctx context.Context, i int) error {
		var env struct {
			Data []json.RawMessage `json:"data"`
		}
		t0 := time.Now()
		err := r.api.do(ctx, "GET", "/api/webhook/"+r.hookIDs[i]+"/failures?limit="+strconv.Itoa(c.Limit), nil, &env)
		ms := float64(time.Since(t0)) / float64(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		c.MaxMillis = max(c.MaxMillis, ms)
		if err != nil {
			c.Errors++
			if c.FirstError == "" {
				c.FirstError = err.Error()
			}
			return nil
		}
		n := len(env.Data)
		c.MaxLen = max(c.MaxLen, n)
		if c.MinLen < 0 || n < c.MinLen {
			c.MinLen = n
		}
		return nil
	})
	c.MinLen = max(c.MinLen, 0)
	return c
}
