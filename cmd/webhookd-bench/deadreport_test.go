package main

import (
	"bytes"
	"strings"
	"testing"
)

func fp(v float64) *float64 { return &v }

func TestDeadHostsReport(t *testing.T) {
	dead := Result{Scenario: "deadhosts50", Family: "deadhosts50", Role: roleDead, Latency: percentiles{P99: 10},
		CPUSeconds: fp(30), CPUPublishSeconds: fp(12), PeakRSSMiB: fp(90),
		DeadHosts: &deadHostsResult{Hosts: 50, PublishingSeconds: 60, WindowFromSeconds: 30, OpenMaxInWindow: 50,
			Samples: []connSample{{Open: 0}, {AtSeconds: 1, Open: 2048}},
			Recovery: &recoveryResult{Hosts: 50, PerHost: 6000, Expected: 300000, Delivered: 300000, TimeoutSeconds: 600,
				HostsReached: 50, HostsComplete: 50, FirstMaxSeconds: fp(1.5), CompleteSeconds: fp(20)}}}
	all := Result{Scenario: "deadhosts50/allhealthy", Family: "deadhosts50", Role: roleAllHealthy, Latency: percentiles{P99: 5},
		CPUSeconds: fp(15), CPUPublishSeconds: fp(10), PeakRSSMiB: fp(45)}
	alone := Result{Scenario: "deadhosts50/alone", Family: "deadhosts50", Role: roleAlone, Latency: percentiles{P99: 2},
		CPUSeconds: nil, PeakRSSMiB: fp(30)}
	other := Result{Scenario: "deadhosts500/alone", Family: "deadhosts500", Role: roleAlone, Latency: percentiles{P99: 1}}

	rep := newReport([]Result{dead, all, alone, other})
	if len(rep.DeadHosts) != 1 || len(rep.DeadHosts[0].Controls) != 2 {
		t.Fatalf("comparisons: %+v", rep.DeadHosts)
	}
	cases := []struct {
		name string
		got  *float64
		want float64 // 0: n/a
	}{
		{"p99 vs all healthy", rep.DeadHosts[0].Controls[0].P99Ratio, 2},
		{"cpu vs all healthy", rep.DeadHosts[0].Controls[0].CPURatio, 2},
		{"cpu while publishing vs all healthy", rep.DeadHosts[0].Controls[0].CPUPubRat, 1.2},
		{"rss vs all healthy", rep.DeadHosts[0].Controls[0].RSSRatio, 2},
		{"p99 vs alone", rep.DeadHosts[0].Controls[1].P99Ratio, 5},
		{"cpu vs alone, not measured", rep.DeadHosts[0].Controls[1].CPURatio, 0},
		{"rss vs alone", rep.DeadHosts[0].Controls[1].RSSRatio, 3},
	}
	for _, c := range cases {
		switch {
		case c.want == 0 && c.got != nil:
			t.Errorf("%s: %v, want n/a", c.name, *c.got)
		case c.want != 0 && (c.got == nil || *c.got < c.want-1e-9 || *c.got > c.want+1e-9):
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	var b bytes.Buffer
	if err := rep.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DEADHOSTS deadhosts50:", "vs deadhosts50/allhealthy: p99 5.0 ms (2.00 ×)",
		"vs deadhosts50/alone: p99 2.0 ms (5.00 ×), CPU n/a s (n/a", "every 1 s from the first publish: 0 2048",
		"all complete 20.0 s after", "deadhosts500/alone "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if rep.Lost {
		t.Error("nothing was lost")
	}

	// Losses: an over-capacity control's are reported, not failed on;
	// revived hosts' missing deliveries are losses.
	overCap := all
	overCap.LossExpected, overCap.Tally.Lost = true, 10
	if newReport([]Result{overCap}).Lost {
		t.Error("an over-capacity control's losses must not fail the run")
	}
	overCap.LossExpected = false
	if !newReport([]Result{overCap}).Lost {
		t.Error("lost deliveries must fail the run")
	}
	missing := dead
	rec := *dead.DeadHosts.Recovery
	rec.Missing = 3
	missing.DeadHosts = &deadHostsResult{Recovery: &rec}
	if !newReport([]Result{missing}).Lost {
		t.Error("deliveries missing at the revived hosts must fail the run")
	}
}
