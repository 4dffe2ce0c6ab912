package main

import (
	"errors"
	"math"
	"strings"
	"testing"
)

const sampleMetrics = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 98

webhookd_registrations 3
webhookd_store_bytes{stream="WEBHOOKD_FAILURES"} 2.097152e+06
webhookd_store_bytes{stream="WEBHOOKD_ATTEMPTS"} 1048576
webhookd_store_bytes{stream="KV_WEBHOOKD_KEYS"} 0
webhookd_store_limit_bytes{policy="drop_oldest",stream="WEBHOOKD_FAILURES"} 1.073741824e+09
webhookd_deliveries_failed_total{event_type="workflow.run.completed",reason="max_attempts"} 4000
webhookd_deliveries_failed_total{event_type="workflow.run.failed",reason="max_attempts"} 5
webhookd_deliveries_failed_total{event_type="workflow.run.completed",reason="gone"} 1 1700000000000
odd_label{msg="a \"quoted\", \\ back\nslash"} NaN
`

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		metric string
		labels map[string]string
		sum    bool
		want   float64
		ok     bool
	}{
		{"plain gauge", metricGoroutines, nil, false, 98, true},
		{"labelled, exponent", metricStoreBytes, map[string]string{"stream": "WEBHOOKD_FAILURES"}, false, 2 << 20, true},
		{"sum over every label", metricFailed, nil, true, 4006, true},
		{"sum over one label value", metricFailed, map[string]string{"reason": "max_attempts"}, true, 4005, true},
		{"timestamp ignored", metricFailed, map[string]string{"reason": "gone"}, false, 1, true},
		{"absent series", "webhookd_nope", nil, false, 0, false},
		{"absent label value", metricStoreBytes, map[string]string{"stream": "NOPE"}, true, 0, false},
	}
	for _, c := range cases {
		var got float64
		var ok bool
		if c.sum {
			got, ok = m.sum(c.metric, c.labels)
		} else {
			got, ok = m.get(c.metric, c.labels)
		}
		if got != c.want || ok != c.ok {
			t.Errorf("%s: %v %v, want %v %v", c.name, got, ok, c.want, c.ok)
		}
	}
	if v, ok := m.get("odd_label", map[string]string{"msg": "a \"quoted\", \\ back\nslash"}); !ok || !math.IsNaN(v) {
		t.Errorf("escaped label value: %v %v", v, ok)
	}
	if r := m.byLabel(metricFailed, "reason"); r["max_attempts"] != 4005 || r["gone"] != 1 || len(r) != 2 {
		t.Errorf("by reason: %v", r)
	}
	if m.opt(metricRegistrations) == nil || *m.opt(metricRegistrations) != 3 || m.opt("nope") != nil || metricSet(nil).opt(metricGoroutines) != nil {
		t.Error("opt")
	}
}

func TestParseMetricsRejects(t *testing.T) {
	for _, in := range []string{
		"novalue\n",
		"name{a=\"x\"\n",
		"name{a=\"unterminated} 1\n",
		"name{a} 1\n",
		"name notanumber\n",
		"name 1 2 3\n",
	} {
		if _, err := parseMetrics(strings.NewReader(in)); !errors.Is(err, errMetricFormat) && (err == nil || !strings.Contains(err.Error(), "line 1")) {
			t.Errorf("%q: %v, want a format error", in, err)
		}
	}
}

func TestStoreSizes(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	got := storeSizes(m)
	if len(got) != 3 || got[0].Stream != "KV_WEBHOOKD_KEYS" || got[2].Stream != "WEBHOOKD_FAILURES" ||
		got[2].MiB != 2 || got[2].LimitMiB != 1024 || got[2].Policy != "drop_oldest" || got[1].LimitMiB != 0 {
		t.Fatalf("sizes: %+v", got)
	}
	// Peaks: a later, smaller sample keeps the peak; a new stream joins.
	peaks := raisePeaks(nil, got)
	peaks = raisePeaks(peaks, []streamBytes{{Stream: "WEBHOOKD_FAILURES", MiB: 1, PeakMiB: 1}, {Stream: "NEW", MiB: 5, PeakMiB: 5}})
	end := raisePeaks([]streamBytes{{Stream: "WEBHOOKD_FAILURES", MiB: 0.5, PeakMiB: 0.5}}, peaks)
	if end[0].MiB != 0.5 || end[0].PeakMiB != 2 || len(end) != 4 {
		t.Fatalf("peaks: %+v", end)
	}
	line := storeLine(got)
	for _, want := range []string{"WEBHOOKD_FAILURES 2.0 MiB (peak 2.0, bound 1024 MiB drop_oldest)", "WEBHOOKD_ATTEMPTS 1.0 MiB (peak 1.0, no bound)"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(line, "KV_") || storeLine(nil) != "not readable" {
		t.Errorf("empty buckets and no scrape: %s", line)
	}
}
