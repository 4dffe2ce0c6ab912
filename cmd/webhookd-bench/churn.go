package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Scenario kinds (Scenario.Kind) that are not an event run.
const (
	kindChurn   = "churn"   // create-then-delete cycles through the API
	kindFailing = "failing" // every delivery fails and is given up
)

// Churn presets (--churn-cycles, --churn-clients, --settle override them).
const (
	defaultChurnCycles  = 100_000
	defaultChurnClients = 32
	defaultSettle       = 10 * time.Second
)

// churnResult is what a churn run measured.
type churnResult struct {
	Cycles    int64       `json:"cycles"`
	Clients   int         `json:"clients"`
	Seconds   float64     `json:"seconds"`
	PerSecond float64     `json:"cyclesPerSecond"`
	Cycle     percentiles `json:"cycleLatency"` // create + delete, one client
	footprint             // before the first cycle, at the end of the last, after settling
}

// verdict is why the run failed, if it did: every registration created
// must be gone again.
func (c *churnResult) verdict() []string {
	switch {
	case c.After.Registrations == nil:
		return []string{"webhookd_registrations not readable from /metrics after the churn"}
	case c.Before.Registrations != nil && *c.After.Registrations != *c.Before.Registrations:
		return []string{fmt.Sprintf("webhookd_registrations is %.0f after %d create+delete cycles, %.0f before: deleted webhooks are still registered",
			*c.After.Registrations, c.Cycles, *c.Before.Registrations)}
	case c.Before.Registrations == nil && *c.After.Registrations != 0:
		return []string{fmt.Sprintf("webhookd_registrations is %.0f after %d create+delete cycles, must be 0", *c.After.Registrations, c.Cycles)}
	}
	return nil
}

func (c *churnResult) lines() []string {
	mib := func(v *float64) string { return opt(v, "%.0f MiB") }
	n := func(v *float64) string { return opt(v, "%.0f") }
	cpu := "n/a"
	if c.CPUSeconds != nil && c.Cycles > 0 {
		cpu = fmt.Sprintf("%.1f s, %.0f µs per cycle", *c.CPUSeconds, *c.CPUSeconds*1e6/float64(c.Cycles))
	}
	return []string{
		fmt.Sprintf("%d create-then-delete cycles through the API in %.1f s = %.0f cycles/s (%d clients; one cycle p50 %.1f ms, p99 %.1f ms, max %.1f ms); webhookd CPU %s",
			c.Cycles, c.Seconds, c.PerSecond, c.Clients, c.Cycle.P50, c.Cycle.P99, c.Cycle.Max, cpu),
		fmt.Sprintf("RSS (embedded NATS included): %s before, %s peak during, %s at the end, %s %.0f s after (nothing forced)",
			mib(c.Before.RSSMiB), mib(c.PeakRSSMiB), mib(c.AtEnd.RSSMiB), mib(c.After.RSSMiB), c.SettleSeconds),
		fmt.Sprintf("goroutines (go_goroutines; the clients' connections closed): %s before, %s at the end, %s %.0f s after; webhookd_registrations %s before, %s after (must be %s)",
			n(c.Before.Goroutines), n(c.AtEnd.Goroutines), n(c.After.Goroutines), c.SettleSeconds,
			n(c.Before.Registrations), n(c.After.Registrations), n(c.Before.Registrations)),
	}
}

// runChurn creates and deletes s.Cycles webhooks, s.Clients at a time,
// each deleted by the client that created it right after, and watches
// what the daemon keeps of them.
func (b *bench) runChurn(ctx context.Context, s Scenario) (res Result, err error) {
	res = newResult(s)
	t, err := b.target(ctx, s)
	if err != nil {
		return res, err
	}
	api := newAPIClient(t, s.Clients)
	defer api.close()
	trap, err := newReceiver(trap, newBook(newLedger(0, nil), eventShape{}))
	if err != nil {
		return res, err
	}
	defer trap.close()
	if t.proc != nil {
		defer func() {
			if cerr := t.proc.close(); cerr != nil {
				res.Notes = append(res.Notes, cerr.Error())
			}
			res.ShutdownSeconds = t.proc.stopTook.Seconds()
		}()
	}
	c := &churnResult{Clients: s.Clients, footprint: footprint{SettleSeconds: s.Settle.Seconds()}}
	res.Churn = c
	var merr error
	if c.Before, _, merr = snapshot(ctx, t); merr != nil {
		res.Notes = append(res.Notes, errNote("before the churn", merr))
	}
	var watch *rssWatch
	var cpu0 float64
	if t.proc != nil {
		watch = watchRSS(t.proc.cmd.Process.Pid, rssEvery)
		if cpu0, err = t.proc.cpuSeconds(); err != nil {
			watch.end()
			return res, err
		}
	}
	var done atomic.Int64
	var lat histogram
	prog := startProgress(func() string { return fmt.Sprintf("%s: %d/%d cycles", s.Name, done.Load(), s.Cycles) },
		func(line string) { fmt.Fprintln(b.logOrDiscard(), line) }, recoveryReport)
	start := time.Now()
	err = parallel(ctx, s.Cycles, s.Clients, func(ctx context.Context, i int) error {
		t0 := time.Now()
		et, wf := coldShape(i)
		reg, err := api.register(ctx, trap.url+"/churn", et, wf)
		if err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
		if err := api.remove(ctx, reg.ID); err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
		lat.record(time.Since(t0))
		done.Add(1)
		return nil
	})
	took := time.Since(start)
	prog.end()
	// The clients' idle keep-alive connections would count as the
	// daemon's goroutines (two each) in the figures below.
	api.close()
	if watch != nil {
		peak := watch.end()
		c.PeakRSSMiB = &peak
		if cpu1, cerr := t.proc.cpuSeconds(); cerr == nil {
			cpu := cpu1 - cpu0
			c.CPUSeconds = &cpu
		}
	}
	c.Cycles, c.Seconds, c.Cycle = done.Load(), took.Seconds(), lat.summary()
	if took > 0 {
		c.PerSecond = float64(c.Cycles) / took.Seconds()
	}
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fmt.Errorf("%s: after %d cycles: %w", s.Name, c.Cycles, err)
	}
	if c.AtEnd, _, merr = snapshot(ctx, t); merr != nil {
		res.Notes = append(res.Notes, errNote("at the end of the churn", merr))
	}
	settle(ctx, s.Settle)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if c.After, _, merr = snapshot(ctx, t); merr != nil {
		res.Notes = append(res.Notes, errNote("after the churn", merr))
	}
	if trap.attempts.Load() > 0 {
		res.FailReasons = append(res.FailReasons, fmt.Sprintf("%d deliveries reached the churned webhooks' endpoint; no event was published", trap.attempts.Load()))
	}
	res.FailReasons = append(res.FailReasons, c.verdict()...)
	res.CPUSeconds, res.PeakRSSMiB = c.CPUSeconds, c.PeakRSSMiB
	return res, nil
}

// logOrDiscard is where progress goes.
func (b *bench) logOrDiscard() io.Writer {
	if b.log == nil {
		return io.Discard
	}
	return b.log
}
