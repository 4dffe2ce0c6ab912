package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestReportIsolationAndHeadline(t *testing.T) {
	ratio := 0.4
	rs := []Result{
		{Scenario: "fanout10", PerSecond: 900, Ratio: &ratio, Baseline: &baselineResult{PerSecond: 2000, Conns: 8}},
		{Scenario: "single", PerSecond: 1000, Ratio: &ratio, Baseline: &baselineResult{PerSecond: 2500, Conns: 4}},
		{Scenario: "mixed", Latency: percentiles{P99: 30}},
		{Scenario: "allhealthy", Latency: percentiles{P99: 20}},
	}
	rep := newReport(rs)
	if rep.Headline == nil || rep.Headline.Scenario != "single" || rep.Headline.RawPerSec != 2500 {
		t.Fatalf("headline should come from single: %+v", rep.Headline)
	}
	if rep.Isolation == nil || rep.Isolation.Factor != 1.5 {
		t.Fatalf("isolation: %+v", rep.Isolation)
	}
	var b bytes.Buffer
	if err := rep.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "ISOLATION") || !strings.Contains(b.String(), "(1.50 ×)") {
		t.Errorf("table lacks the isolation line:\n%s", b.String())
	}

	if rep := newReport(rs[:3]); rep.Isolation != nil {
		t.Errorf("isolation without its control run: %+v", rep.Isolation)
	}
}
