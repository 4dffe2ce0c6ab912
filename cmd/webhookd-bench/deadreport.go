package main

import (
	"fmt"
	"strconv"
	"strings"
)

// deadHostsResult is what the dead hosts of a deadhostsN run saw.
type deadHostsResult struct {
	Hosts             int     `json:"hosts"`
	PublishingSeconds float64 `json:"publishingSeconds"`
	// The window in which circuits should be open: from WindowFromSeconds
	// after the first publish to the end of publishing.
	WindowFromSeconds float64         `json:"windowFromSeconds"`
	OpenMaxInWindow   int64           `json:"openMaxAfterCircuitsOpen"`
	OpenAtEnd         int64           `json:"openAtEndOfPublishing"`
	OpenPeak          int64           `json:"openPeak"`    // sampled, while publishing
	HostPeakMax       int64           `json:"hostPeakMax"` // most open to a single host at once (exact)
	NewConnsInWindow  int64           `json:"newConnsAfterCircuitsOpen"`
	ConnsAccepted     int64           `json:"connsAccepted"` // while dead, in all
	Samples           []connSample    `json:"samples"`
	Recovery          *recoveryResult `json:"recovery,omitempty"`
	// Turning hosts (hanghostsN): healthy for TurnAfterSeconds from the
	// first publish, turned at TurnedAtSeconds (nil: never); open,
	// accepted and the window count from the turn, OpenPeakAfterTurn is
	// the sampled peak from then on (HostPeakMax is exact, after the turn).
	TurnAfterSeconds  float64  `json:"turnAfterSeconds,omitempty"`
	TurnedAtSeconds   *float64 `json:"turnedAtSeconds,omitempty"`
	OpenPeakAfterTurn int64    `json:"openPeakAfterTurn,omitempty"`
	// Circuits is the revived hosts' health just before they came back.
	Circuits *circuitsAtRevival `json:"circuitsAtRevival,omitempty"`
}

// recoveryResult is the revived hosts' catch-up after publishing.
type recoveryResult struct {
	Hosts          int     `json:"hosts"`
	PerHost        int64   `json:"expectedPerHost"`
	Expected       int64   `json:"expected"`
	TimeoutSeconds float64 `json:"timeoutSeconds"`
	HostsReached   int     `json:"hostsReached"`
	// FirstMaxSeconds is revival to first delivery, the slowest of the
	// hosts reached; CompleteSeconds revival to the last host's last
	// missing delivery, nil unless all completed within the timeout.
	FirstMaxSeconds *float64 `json:"firstDeliveryMaxSeconds"`
	HostsComplete   int      `json:"hostsComplete"`
	CompleteSeconds *float64 `json:"allCompleteSeconds"`
	Delivered       int64    `json:"delivered"` // distinct webhook-ids, capped at PerHost each
	Missing         int64    `json:"missing"`
	Duplicates      int64    `json:"duplicates"`
	// Span is each complete host's first delivery after revival to its
	// last missing one, median and max over those hosts; of the
	// SpanHostsWithCooldown whose cool-down at revival was read,
	// SpansWithinCooldown took no longer than it.
	SpanMedianSeconds     *float64 `json:"firstToLastMedianSeconds"`
	SpanMaxSeconds        *float64 `json:"firstToLastMaxSeconds"`
	SpanHostsWithCooldown int      `json:"spanHostsWithCooldown"`
	SpansWithinCooldown   int      `json:"spansWithinCooldown"`
}

// missing is the revived hosts' missing deliveries (0 without any).
func (d *deadHostsResult) missing() int64 {
	if d == nil || d.Recovery == nil {
		return 0
	}
	return d.Recovery.Missing
}

// lines are the notes printed under the table for a dead-hosts run.
func (d *deadHostsResult) lines() []string {
	open := make([]string, len(d.Samples))
	for i, s := range d.Samples {
		open[i] = strconv.FormatInt(s.Open, 10)
	}
	var out []string
	what := "hanging hosts"
	if d.TurnAfterSeconds > 0 {
		what = "turned hosts"
		turned := "they never turned: publishing ended first"
		if t := d.TurnedAtSeconds; t != nil {
			turned = fmt.Sprintf("turned %.1f s after the first publish; open connections to them from then on: peak %d, at most %d to one host; "+
				"%d accepted after the turn (hanging)", *t, d.OpenPeakAfterTurn, d.HostPeakMax, d.ConnsAccepted)
		}
		out = append(out, fmt.Sprintf("the %d bad hosts answered 204 for the first %.0f s, then hung (accept, never answer); %s",
			d.Hosts, d.TurnAfterSeconds, turned))
	}
	out = append(out,
		fmt.Sprintf("open connections to the %d %s once circuits should be open (%.0f s after the first publish to the end of publishing, %.0f s): "+
			"max %d, %d at the end; %d new connections in that window (target: at most the probes, about 1 per host, not the per-host cap, 64 by default)",
			d.Hosts, what, d.WindowFromSeconds, d.PublishingSeconds, d.OpenMaxInWindow, d.OpenAtEnd, d.NewConnsInWindow),
		fmt.Sprintf("open connections to them, every %.0f s from the first publish: %s (peak %d; at most %d to one host; %d accepted in all)",
			sampleEvery.Seconds(), strings.Join(open, " "), d.OpenPeak, d.HostPeakMax, d.ConnsAccepted))
	if c := d.Circuits; c != nil {
		out = append(out, c.line())
	}
	if r := d.Recovery; r != nil {
		out = append(out, r.line())
		if l := r.spanLine(); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// spanLine sets the revived hosts' catch-up against the cool-down: parked
// deliveries are meant to all arrive within one cool-down of the first.
func (r *recoveryResult) spanLine() string {
	if r.SpanMaxSeconds == nil {
		return ""
	}
	s := fmt.Sprintf("recovery per revived host, first delivery to the last missed one: median %.1f s, max %.1f s over %d complete hosts",
		*r.SpanMedianSeconds, *r.SpanMaxSeconds, r.HostsComplete)
	if r.SpanHostsWithCooldown > 0 {
		s += fmt.Sprintf("; %d/%d within the host's own cool-down at revival", r.SpansWithinCooldown, r.SpanHostsWithCooldown)
	}
	return s
}

func (r *recoveryResult) line() string {
	first := "none reached"
	if r.FirstMaxSeconds != nil {
		first = fmt.Sprintf("%d/%d reached, the last %.2f s after", r.HostsReached, r.Hosts, *r.FirstMaxSeconds)
	}
	all := fmt.Sprintf("NOT complete after %.0f s: %d/%d hosts", r.TimeoutSeconds, r.HostsComplete, r.Hosts)
	if r.CompleteSeconds != nil {
		all = fmt.Sprintf("all complete %.1f s after", *r.CompleteSeconds)
	}
	return fmt.Sprintf("recovery: %d hosts answer 204 from the end of publishing; first delivery: %s; %s; %d/%d delivered, missing %d, %d duplicates",
		r.Hosts, first, all, r.Delivered, r.Expected, r.Missing, r.Duplicates)
}

// deadComparison sets a deadhostsN run beside its controls.
type deadComparison struct {
	Scenario   string     `json:"scenario"`
	HealthyP99 float64    `json:"healthyP99ms"`
	CPUSeconds *float64   `json:"cpuSeconds"`
	CPUPublish *float64   `json:"cpuPublishingSeconds"`
	PeakRSSMiB *float64   `json:"peakRssMiB"`
	Controls   []ctlRatio `json:"controls"`
}

// ctlRatio is one control's figures and dead/control ratios (nil where
// either side is missing or zero).
type ctlRatio struct {
	Scenario   string   `json:"scenario"`
	P99        float64  `json:"p99ms"`
	P99Ratio   *float64 `json:"p99Ratio"`
	CPUSeconds *float64 `json:"cpuSeconds"`
	CPURatio   *float64 `json:"cpuRatio"`
	CPUPublish *float64 `json:"cpuPublishingSeconds"`
	CPUPubRat  *float64 `json:"cpuPublishingRatio"`
	PeakRSSMiB *float64 `json:"peakRssMiB"`
	RSSRatio   *float64 `json:"rssRatio"`
}

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	r := *a / *b
	return &r
}

// deadComparisons pairs each dead-hosts run with the controls of its
// family that ran.
func deadComparisons(rs []Result) []deadComparison {
	var out []deadComparison
	for i := range rs {
		d := &rs[i]
		if d.Role != roleDead {
			continue
		}
		c := deadComparison{Scenario: d.Scenario, HealthyP99: d.Latency.P99, CPUSeconds: d.CPUSeconds,
			CPUPublish: d.CPUPublishSeconds, PeakRSSMiB: d.PeakRSSMiB}
		for j := range rs {
			k := &rs[j]
			if k.Family != d.Family || k.Role == roleDead {
				continue
			}
			p99 := k.Latency.P99
			c.Controls = append(c.Controls, ctlRatio{Scenario: k.Scenario, P99: p99, P99Ratio: ratio(&d.Latency.P99, &p99),
				CPUSeconds: k.CPUSeconds, CPURatio: ratio(d.CPUSeconds, k.CPUSeconds),
				CPUPublish: k.CPUPublishSeconds, CPUPubRat: ratio(d.CPUPublishSeconds, k.CPUPublishSeconds),
				PeakRSSMiB: k.PeakRSSMiB, RSSRatio: ratio(d.PeakRSSMiB, k.PeakRSSMiB)})
		}
		out = append(out, c)
	}
	return out
}

// writeDead prints the DEADHOSTS block: the dead run against each control.
func writeDead(b *strings.Builder, cs []deadComparison) {
	x := func(v *float64) string { return opt(v, "%.2f ×") }
	for _, c := range cs {
		label := "DEADHOSTS"
		if strings.HasPrefix(c.Scenario, "hanghosts") {
			label = "HANGHOSTS"
		}
		fmt.Fprintf(b, "%s %s: healthy endpoint p99 %.1f ms, webhookd CPU %s s (%s s while publishing), peak RSS %s MiB\n",
			label, c.Scenario, c.HealthyP99, opt(c.CPUSeconds, "%.1f"), opt(c.CPUPublish, "%.1f"), opt(c.PeakRSSMiB, "%.0f"))
		for _, k := range c.Controls {
			fmt.Fprintf(b, "  vs %s: p99 %.1f ms (%s), CPU %s s (%s; while publishing %s s, %s), RSS %s MiB (%s)\n",
				k.Scenario, k.P99, x(k.P99Ratio), opt(k.CPUSeconds, "%.1f"), x(k.CPURatio),
				opt(k.CPUPublish, "%.1f"), x(k.CPUPubRat), opt(k.PeakRSSMiB, "%.0f"), x(k.RSSRatio))
		}
	}
	if len(cs) > 0 {
		b.WriteString("  targets (not asserted): healthy p99 ≤ 2 × the all-healthy control, CPU and RSS within 2 ×\n")
	}
}
