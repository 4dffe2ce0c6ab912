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

func TestTurnedHostsReport(t *testing.T) {
	turned := 10.2
	cases := []struct {
		name string
		d    deadHostsResult
		want []string
		not  []string
	}{
		{"dead hosts: no turn line", deadHostsResult{Hosts: 50}, []string{"the 50 hanging hosts once circuits"}, []string{"answered 204", "circuits at revival"}},
		{"turned", deadHostsResult{Hosts: 50, TurnAfterSeconds: 10, TurnedAtSeconds: &turned, OpenPeakAfterTurn: 900, HostPeakMax: 20, ConnsAccepted: 950},
			[]string{"answered 204 for the first 10 s, then hung", "turned 10.2 s after the first publish", "from then on: peak 900, at most 20 to one host; 950 accepted after the turn",
				"the 50 turned hosts once circuits"}, nil},
		{"never turned", deadHostsResult{Hosts: 50, TurnAfterSeconds: 10}, []string{"they never turned"}, nil},
		{"circuits and spans", deadHostsResult{Hosts: 50,
			Circuits: summariseCircuits([]hostCircuit{{State: stateCircuitOpen, CooldownSeconds: fp(20), RemainingSeconds: fp(3)}}),
			Recovery: &recoveryResult{Hosts: 1, HostsComplete: 1, SpanMedianSeconds: fp(4), SpanMaxSeconds: fp(4), SpanHostsWithCooldown: 1, SpansWithinCooldown: 1}},
			[]string{"circuits at revival", "1/1 open", "first delivery to the last missed one: median 4.0 s, max 4.0 s", "1/1 within"}, nil},
	}
	for _, c := range cases {
		got := strings.Join(c.d.lines(), "\n")
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: lacks %q:\n%s", c.name, w, got)
			}
		}
		for _, w := range c.not {
			if strings.Contains(got, w) {
				t.Errorf("%s: has %q:\n%s", c.name, w, got)
			}
		}
	}
	var b strings.Builder
	writeDead(&b, []deadComparison{{Scenario: "hanghosts50"}, {Scenario: "deadhosts50"}})
	if !strings.Contains(b.String(), "HANGHOSTS hanghosts50:") || !strings.Contains(b.String(), "DEADHOSTS deadhosts50:") {
		t.Errorf("labels:\n%s", b.String())
	}
}

func TestReportSkipsRowsOfChurnAndFailing(t *testing.T) {
	rs := []Result{
		{Scenario: "churn", Kind: kindChurn, Churn: &churnResult{Cycles: 5}, FailReasons: []string{"left behind"}},
		{Scenario: "failing1m", Kind: kindFailing, Failing: &failingResult{Expected: 10}},
	}
	rep := newReport(rs)
	var b bytes.Buffer
	if err := rep.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "deliv/s") || !strings.Contains(out, "churn: FAILED: left behind") || !strings.Contains(out, "failing1m: 0 webhooks answering 500") ||
		!rep.Failed || !strings.Contains(out, "\nFAILED:") {
		t.Errorf("failed %v, table:\n%s", rep.Failed, out)
	}
	if newReport(rs[1:]).Failed {
		t.Error("nothing failed")
	}
	rs = append(rs, Result{Scenario: "single"})
	b.Reset()
	if err := newReport(rs).writeTable(&b); err != nil || strings.Count(b.String(), "\nsingle ") != 1 || strings.Contains(b.String(), "\nchurn  ") {
		t.Errorf("one row, single's:\n%s", b.String())
	}
}
