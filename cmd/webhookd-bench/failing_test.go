package main

import (
	"strings"
	"testing"
)

func TestFailuresPerHook(t *testing.T) {
	cases := []struct {
		flags []string
		want  int
	}{
		{nil, 100},
		{[]string{"--retry-max-attempts=1"}, 100},
		{[]string{"--failures-per-webhook=20"}, 20},
		{[]string{"-failures-per-webhook", "30"}, 30},
		{[]string{"--failures-per-webhook=20", "--failures-per-webhook=40"}, 40}, // the last wins
		{[]string{"--failures-per-webhook=x"}, 100},
		{[]string{"failures-per-webhook=5"}, 100}, // not a flag
	}
	for _, c := range cases {
		if got := failuresPerHook(c.flags); got != c.want {
			t.Errorf("%v: %d, want %d", c.flags, got, c.want)
		}
	}
}

func TestFailingVerdict(t *testing.T) {
	ok := func() *failuresCheck {
		return &failuresCheck{Webhooks: 100, Limit: 1000, Bound: 100, MinLen: 100, MaxLen: 100}
	}
	cases := []struct {
		name   string
		gaveUp *float64
		list   *failuresCheck
		fails  []string // substrings, one per reason
	}{
		{"all given up, lists bounded", fp(1e6), ok(), nil},
		{"some not given up", fp(999_000), ok(), []string{"only 999000 of 1000000"}},
		{"metrics not readable", nil, ok(), []string{"not readable"}},
		{"lists not read", fp(1e6), nil, []string{"were not read"}},
		{"list beyond the bound", fp(1e6), &failuresCheck{Webhooks: 100, Limit: 1000, Bound: 100, MinLen: 100, MaxLen: 1000},
			[]string{"answered 1000 records, beyond --failures-per-webhook 100"}},
		{"empty list despite give-ups", fp(1e6), &failuresCheck{Webhooks: 100, Limit: 1000, Bound: 100, MinLen: 0, MaxLen: 100},
			[]string{"lists no failure record"}},
		{"errors", fp(1e6), &failuresCheck{Webhooks: 100, Limit: 1000, Bound: 100, MinLen: 100, MaxLen: 100, Errors: 2, FirstError: "boom"},
			[]string{"failed for 2 of 100 webhooks, first: boom"}},
	}
	for _, c := range cases {
		f := failingResult{Expected: 1_000_000, GaveUp: c.gaveUp, List: c.list}
		got := f.verdict()
		if len(got) != len(c.fails) {
			t.Errorf("%s: %v, want %d reasons", c.name, got, len(c.fails))
			continue
		}
		for i, w := range c.fails {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: %q lacks %q", c.name, got[i], w)
			}
		}
	}
}

func TestFailingLines(t *testing.T) {
	f := failingResult{Webhooks: 100, Events: 10_000, Expected: 1_000_000, GaveUp: fp(1e6),
		ByReason: map[string]float64{"max_attempts": 1e6, "gone": 0}, Seconds: 500, PerSecond: 2000, PublishSeconds: 3,
		Attempts: 1e6, Distinct: 1e6,
		footprint: footprint{CPUSeconds: fp(1000), PeakRSSMiB: fp(400),
			Before: daemonSnap{RSSMiB: fp(30)}, After: daemonSnap{RSSMiB: fp(200)}, SettleSeconds: 10},
		Streams:     []streamBytes{{Stream: "WEBHOOKD_FAILURES", MiB: 12, PeakMiB: 14, LimitMiB: 1024, Policy: "drop_oldest"}},
		List:        &failuresCheck{Webhooks: 100, Limit: 1000, Bound: 100, MinLen: 100, MaxLen: 100, MaxMillis: 8},
		DaemonFlags: failingDaemonFlags}
	got := strings.Join(f.lines(), "\n")
	for _, want := range []string{"100 webhooks answering 500 to everything, 10000 events to each = 1000000 deliveries",
		"--retry-max-attempts=1 --circuit-failures=1000000000", "1000000/1000000 in 500.0 s from the first publish = 2000/s (max_attempts 1000000)",
		"1000 µs per give-up", "30 MiB before, 400 MiB peak during", "WEBHOOKD_FAILURES 12.0 MiB (peak 14.0, bound 1024 MiB drop_oldest)",
		"failures?limit=1000 for 100 webhooks: 100 to 100 records each (bound: --failures-per-webhook 100)"} {
		if !strings.Contains(got, want) {
			t.Errorf("lines lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "gone 0") {
		t.Errorf("reasons with no give-up are left out:\n%s", got)
	}
}
