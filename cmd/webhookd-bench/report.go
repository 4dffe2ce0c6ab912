package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Result is one scenario's figures. Pointers are nil where a figure was
// not measured ("n/a" in the table), e.g. CPU of an external daemon.
type Result struct {
	Scenario      string  `json:"scenario"`
	Events        int     `json:"events"`
	Rate          float64 `json:"rate"` // events/s; 0 = max rate
	Fanout        int     `json:"fanout"`
	HealthyFanout int     `json:"healthyFanout"`
	Subs          int     `json:"subscriptions"`

	Tally     Tally       `json:"ledger"`
	Seconds   float64     `json:"seconds"` // first send to last first-delivery
	PerSecond float64     `json:"deliveriesPerSecond"`
	Latency   percentiles `json:"latency"` // healthy endpoints, from (scheduled) send

	PublishRetries int     `json:"publishRetries"`
	PublishLagMs   float64 `json:"publishLagMs"` // paced: how late the generator ran at worst

	CPUSeconds       *float64 `json:"cpuSeconds"`
	CPUMicrosPerDeli *float64 `json:"cpuMicrosPerDelivery"`
	PeakRSSMiB       *float64 `json:"peakRssMiB"`
	// CPUPublishSeconds is the part of CPUSeconds spent while publishing
	// (dead-hosts runs and their controls only).
	CPUPublishSeconds *float64 `json:"cpuPublishingSeconds,omitempty"`
	// ShutdownSeconds is SIGTERM to exit of the daemon after the run.
	ShutdownSeconds float64 `json:"shutdownSeconds,omitempty"`

	Baseline *baselineResult `json:"baseline,omitempty"`
	Ratio    *float64        `json:"ratioToBaseline,omitempty"`

	Registration *registrationResult `json:"registration,omitempty"`
	Restart      *restartResult      `json:"restart,omitempty"`
	Unhealthy    []endpointStats     `json:"unhealthy,omitempty"`
	Profile      string              `json:"profile,omitempty"`

	// Family and Role tie a dead-hosts run to its controls.
	Family       string           `json:"family,omitempty"`
	Role         string           `json:"role,omitempty"`
	DeadHosts    *deadHostsResult `json:"deadHosts,omitempty"`
	LossExpected bool             `json:"lossExpected,omitempty"`

	// Kind is "" for an event run; churn and failing runs carry their
	// figures in Churn and Failing and get no table row.
	Kind    string         `json:"kind,omitempty"`
	Churn   *churnResult   `json:"churn,omitempty"`
	Failing *failingResult `json:"failing,omitempty"`
	// FailReasons are checks the run measured and failed (exit 1), as
	// opposed to a void run, whose figures cannot be trusted.
	FailReasons []string `json:"failReasons,omitempty"`

	Void        bool     `json:"void"`
	VoidReasons []string `json:"voidReasons,omitempty"`
	Notes       []string `json:"notes,omitempty"`
}

type registrationResult struct {
	Subs               int     `json:"subscriptions"`
	Workers            int     `json:"workers"`
	Seconds            float64 `json:"seconds"`
	PerSecond          float64 `json:"perSecond"`
	Projected1MSeconds float64 `json:"projected1MSeconds"`
}

type restartResult struct {
	Subs             int     `json:"subscriptions"`
	ReadySeconds     float64 `json:"readySeconds"` // SIGTERM'd daemon started again, until /readyz 200
	PeakRSSBeforeMiB float64 `json:"peakRssBeforeMiB"`
	RSSAtReadyMiB    float64 `json:"rssAtReadyMiB"`
}

type endpointStats struct {
	Behaviour  string `json:"behaviour"`
	Receivers  int    `json:"receivers"`
	Attempts   int64  `json:"attempts"`
	EventsSeen int64  `json:"eventsSeen"` // distinct events that reached them at least once
}

func newResult(s Scenario) Result {
	return Result{Scenario: s.Name, Events: s.Events, Rate: s.Rate, Fanout: s.Fanout(),
		HealthyFanout: s.HealthyFanout(), Subs: max(s.Subs, s.Fanout()), Notes: append([]string(nil), s.Notes...),
		Family: s.Family, Role: s.Role, LossExpected: s.LossExpected, Kind: s.Kind}
}

// finish derives the per-delivery figures and the verdict.
func (r *Result) finish() {
	if r.CPUSeconds != nil && r.Tally.Unique > 0 {
		us := *r.CPUSeconds * 1e6 / float64(r.Tally.Unique)
		r.CPUMicrosPerDeli = &us
	}
	r.VoidReasons = r.Tally.VoidReasons()
	r.Void = len(r.VoidReasons) > 0
}

// report is the whole output.
type report struct {
	Scenarios []Result         `json:"scenarios"`
	Headline  *headline        `json:"headline,omitempty"`
	Isolation *isolation       `json:"isolation,omitempty"`
	DeadHosts []deadComparison `json:"deadHosts,omitempty"`
	Void      bool             `json:"void"`
	Lost      bool             `json:"lost"`
	Failed    bool             `json:"failed"` // a run failed one of its checks
}

// isolation compares the healthy endpoints' p99 in mixed (10% of the
// endpoints hang or fail) with the same run where all are healthy: how
// much bad receivers cost good ones.
type isolation struct {
	MixedP99   float64 `json:"mixedHealthyP99ms"`
	HealthyP99 float64 `json:"allHealthyP99ms"`
	Factor     float64 `json:"factor"`
}

// headline is webhookd's throughput as a share of the loopback ceiling,
// from the single scenario (else the first with a baseline).
type headline struct {
	Scenario  string  `json:"scenario"`
	PerSecond float64 `json:"deliveriesPerSecond"`
	RawPerSec float64 `json:"rawPerSecond"`
	Conns     int     `json:"connsPerReceiver"`
	Ratio     float64 `json:"ratio"`
}

func newReport(rs []Result) report {
	rep := report{Scenarios: rs}
	var pick *Result
	for i := range rs {
		r := &rs[i]
		rep.Void = rep.Void || r.Void
		rep.Failed = rep.Failed || len(r.FailReasons) > 0
		rep.Lost = rep.Lost || (r.Tally.Lost > 0 && !r.LossExpected) || r.DeadHosts.missing() > 0
		if r.Ratio != nil && (pick == nil || (r.Scenario == "single" && pick.Scenario != "single")) {
			pick = r
		}
	}
	if m, h := byScenario(rs, "mixed"), byScenario(rs, "allhealthy"); m != nil && h != nil && h.Latency.P99 > 0 {
		rep.Isolation = &isolation{MixedP99: m.Latency.P99, HealthyP99: h.Latency.P99, Factor: m.Latency.P99 / h.Latency.P99}
	}
	rep.DeadHosts = deadComparisons(rs)
	if pick != nil {
		rep.Headline = &headline{Scenario: pick.Scenario, PerSecond: pick.PerSecond, RawPerSec: pick.Baseline.PerSecond,
			Conns: pick.Baseline.Conns, Ratio: *pick.Ratio}
	}
	return rep
}

func byScenario(rs []Result, name string) *Result {
	for i := range rs {
		if rs[i].Scenario == name {
			return &rs[i]
		}
	}
	return nil
}

func (rep report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func opt(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func (rep report) writeTable(w io.Writer) error {
	var b strings.Builder
	nw, rows := 10, 0 // the name column widens for the dead-hosts controls
	for _, r := range rep.Scenarios {
		if r.Kind == "" {
			nw, rows = max(nw, len(r.Scenario)), rows+1
		}
	}
	if rows > 0 {
		rep.writeRows(&b, nw)
	}
	for _, r := range rep.Scenarios {
		for _, line := range r.notes() {
			fmt.Fprintf(&b, "%s: %s\n", r.Scenario, line)
		}
	}
	if h := rep.Headline; h != nil {
		fmt.Fprintf(&b, "\nHEADLINE: %s delivers %.0f/s = %.2f × the raw loopback ceiling (%.0f/s, same receiver, %d keep-alive connection(s) per receiver)\n",
			h.Scenario, h.PerSecond, h.Ratio, h.RawPerSec, h.Conns)
	}
	if i := rep.Isolation; i != nil {
		fmt.Fprintf(&b, "ISOLATION: healthy endpoints' p99 %.1f ms with 10%% of endpoints hanging or failing vs %.1f ms with all healthy (%.2f ×)\n",
			i.MixedP99, i.HealthyP99, i.Factor)
	}
	if len(rep.DeadHosts) > 0 {
		b.WriteString("\n")
		writeDead(&b, rep.DeadHosts)
	}
	if rep.Failed {
		b.WriteString("\nFAILED: at least one run failed a check (see its FAILED lines)\n")
	}
	if rep.Void {
		b.WriteString("\nVOID: at least one run's ledger does not balance or carries bad deliveries; its figures are not to be trusted\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeRows is the table of the event runs.
func (rep report) writeRows(b *strings.Builder, nw int) {
	fmt.Fprintf(b, "%-*s %7s %6s %6s %8s %6s %5s %8s %8s %6s %8s %8s %8s %8s %8s %7s %7s %7s\n",
		nw, "scenario", "events", "rate", "fanout", "received", "lost", "dups", "deliv/s", "raw/s", "ratio",
		"p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "cpu s", "cpu µs", "RSS MiB")
	for _, r := range rep.Scenarios {
		if r.Kind != "" {
			continue
		}
		rate, raw, ratio := "max", "-", "-"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%.0f/s", r.Rate)
		}
		if r.Baseline != nil {
			raw, ratio = fmt.Sprintf("%.0f", r.Baseline.PerSecond), fmt.Sprintf("%.2f", *r.Ratio)
		}
		fanout := fmt.Sprint(r.Fanout)
		if r.HealthyFanout != r.Fanout {
			fanout = fmt.Sprintf("%d/%d", r.HealthyFanout, r.Fanout)
		}
		l := r.Latency
		fmt.Fprintf(b, "%-*s %7d %6s %6s %8d %6d %5d %8.0f %8s %6s %8.1f %8.1f %8.1f %8.1f %8.1f %7s %7s %7s\n",
			nw, r.Scenario, r.Events, rate, fanout, r.Tally.Unique, r.Tally.Lost, r.Tally.Duplicates, r.PerSecond, raw, ratio,
			l.P50, l.P90, l.P99, l.P999, l.Max, opt(r.CPUSeconds, "%.2f"), opt(r.CPUMicrosPerDeli, "%.0f"), opt(r.PeakRSSMiB, "%.0f"))
	}
	b.WriteString("\nlatency: publish (the scheduled send time when paced) to receipt at a healthy endpoint; " +
		"cpu: webhookd's user+system seconds during the run, embedded NATS included; fanout h/n: h of n endpoints healthy\n")
}

// progressLine is what the run printed to stderr when it ended.
func (r Result) progressLine() string {
	switch {
	case r.Churn != nil:
		c := r.Churn
		return fmt.Sprintf("%s: %d cycles, %.0f/s, registrations after %s", r.Scenario, c.Cycles, c.PerSecond, opt(c.After.Registrations, "%.0f"))
	case r.Failing != nil:
		f := r.Failing
		return fmt.Sprintf("%s: %s/%d given up, %.0f/s", r.Scenario, opt(f.GaveUp, "%.0f"), f.Expected, f.PerSecond)
	}
	return fmt.Sprintf("%s: %d/%d delivered, %.0f/s, p99 %.1f ms", r.Scenario, r.Tally.Unique, r.Tally.Expected, r.PerSecond, r.Latency.P99)
}

// notes are the lines printed under the table for r.
func (r Result) notes() []string {
	var out []string
	out = append(out, r.Notes...)
	if c := r.Churn; c != nil {
		out = append(out, c.lines()...)
	}
	if f := r.Failing; f != nil {
		out = append(out, f.lines()...)
	}
	if g := r.Registration; g != nil {
		out = append(out, fmt.Sprintf("registered %d subscriptions in %.1f s through the API (%.0f/s, %d keep-alive workers); 1,000,000 would take ~%.0f s",
			g.Subs, g.Seconds, g.PerSecond, g.Workers, g.Projected1MSeconds))
	}
	if r.DeadHosts != nil {
		out = append(out, r.DeadHosts.lines()...)
	}
	if s := r.Restart; s != nil {
		out = append(out, fmt.Sprintf("restart with %d subscriptions: SIGTERM, start, /readyz 200 after %.2f s; RSS %.0f MiB at ready (peak %.0f MiB before)",
			s.Subs, s.ReadySeconds, s.RSSAtReadyMiB, s.PeakRSSBeforeMiB))
	}
	for _, u := range r.Unhealthy {
		out = append(out, fmt.Sprintf("%d %s endpoint(s): %d attempts, %d of %d events reached them",
			u.Receivers, u.Behaviour, u.Attempts, u.EventsSeen, int64(u.Receivers)*int64(r.Tally.Published)))
	}
	if r.Rate > 0 && r.PublishLagMs > 1 {
		out = append(out, fmt.Sprintf("the generator ran up to %.1f ms behind schedule (counted in latency)", r.PublishLagMs))
	}
	if r.PublishRetries > 0 {
		out = append(out, fmt.Sprintf("%d publishes were retried after a failed ack", r.PublishRetries))
	}
	if bl := r.Baseline; bl != nil {
		out = append(out, fmt.Sprintf("raw baseline: %d requests in %.2f s at %d connection(s) per receiver, p50 %.2f ms p99 %.2f ms",
			bl.Requests, bl.Seconds, bl.Conns, bl.Latency.P50, bl.Latency.P99))
	}
	if r.ShutdownSeconds > 2 {
		out = append(out, fmt.Sprintf("webhookd took %.1f s to exit after SIGTERM", r.ShutdownSeconds))
	}
	if r.Profile != "" {
		out = append(out, "CPU profile: "+r.Profile)
	}
	if r.Tally.Lost > 0 {
		out = append(out, fmt.Sprintf("LOST %d of %d deliveries (not received before the drain ended)", r.Tally.Lost, r.Tally.Expected))
	}
	if n := r.DeadHosts.missing(); n > 0 {
		out = append(out, fmt.Sprintf("LOST %d deliveries to the revived hosts (not received before the recovery wait ended)", n))
	}
	for _, v := range r.FailReasons {
		out = append(out, "FAILED: "+v)
	}
	for _, v := range r.VoidReasons {
		out = append(out, "VOID: "+v)
	}
	return out
}
