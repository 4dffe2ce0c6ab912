package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestChurnVerdict(t *testing.T) {
	cases := []struct {
		name          string
		before, after *float64
		fails         string // "" passes
	}{
		{"all gone", fp(0), fp(0), ""},
		{"left behind", fp(0), fp(3), "is 3 after 10 create+delete cycles, 0 before"},
		{"external daemon: back to where it was", fp(7), fp(7), ""},
		{"before unreadable, 0 after", nil, fp(0), ""},
		{"before unreadable, some after", nil, fp(2), "must be 0"},
		{"after unreadable", fp(0), nil, "not readable"},
	}
	for _, c := range cases {
		r := churnResult{Cycles: 10, footprint: footprint{Before: daemonSnap{Registrations: c.before}, After: daemonSnap{Registrations: c.after}}}
		got := r.verdict()
		switch {
		case c.fails == "" && len(got) != 0:
			t.Errorf("%s: failed: %v", c.name, got)
		case c.fails != "" && (len(got) != 1 || !strings.Contains(got[0], c.fails)):
			t.Errorf("%s: %v, want %q", c.name, got, c.fails)
		}
	}
}

func TestChurnLines(t *testing.T) {
	c := churnResult{Cycles: 2000, Clients: 32, Seconds: 0.8, PerSecond: 2500, Cycle: percentiles{P50: 11.6, P99: 42.5, Max: 52},
		footprint: footprint{Before: daemonSnap{RSSMiB: fp(26), Goroutines: fp(98), Registrations: fp(0)}, PeakRSSMiB: fp(38),
			AtEnd: daemonSnap{RSSMiB: fp(38), Goroutines: fp(99)}, After: daemonSnap{RSSMiB: fp(39), Goroutines: fp(97), Registrations: fp(0)},
			SettleSeconds: 10, CPUSeconds: fp(0.6)}}
	got := strings.Join(c.lines(), "\n")
	for _, want := range []string{"2000 create-then-delete cycles through the API in 0.8 s = 2500 cycles/s (32 clients",
		"300 µs per cycle", "26 MiB before, 38 MiB peak during, 38 MiB at the end, 39 MiB 10 s after",
		"98 before, 99 at the end, 97 10 s after", "webhookd_registrations 0 before, 0 after (must be 0)"} {
		if !strings.Contains(got, want) {
			t.Errorf("lines lack %q:\n%s", want, got)
		}
	}
	ext := churnResult{}
	if got := strings.Join(ext.lines(), "\n"); !strings.Contains(got, "n/a before, n/a peak during") || !strings.Contains(got, "CPU n/a") {
		t.Errorf("unmeasured figures must read n/a:\n%s", got)
	}
}

func TestPlanChurnAndFailing(t *testing.T) {
	type want struct {
		kind             string
		cycles, clients  int
		settle           time.Duration
		failing, events  int
		subs             int
		scaled, hasFlags bool
	}
	cases := []struct {
		name string
		cfg  Config
		want want
	}{
		{"churn presets", Config{Scenarios: []string{"churn"}}, want{kind: kindChurn, cycles: 100_000, clients: 32, settle: 10 * time.Second}},
		{"churn smoke", Config{Scenarios: []string{"churn"}, ChurnCycles: 2000, ChurnClients: 4, Settle: time.Second},
			want{kind: kindChurn, cycles: 2000, clients: 4, settle: time.Second}},
		{"failing1m presets", Config{Scenarios: []string{"failing1m"}},
			want{kind: kindFailing, settle: 10 * time.Second, failing: 100, events: 10_000, subs: 100, hasFlags: true}},
		{"failing1m smoke", Config{Scenarios: []string{"failing1m"}, FailingHooks: 20, FailingEvents: 200},
			want{kind: kindFailing, settle: 10 * time.Second, failing: 20, events: 200, subs: 20, scaled: true, hasFlags: true}},
	}
	for _, c := range cases {
		got := plan(c.cfg)
		if len(got) != 1 {
			t.Fatalf("%s: %d runs", c.name, len(got))
		}
		s := got[0]
		scaled := slices.ContainsFunc(s.Notes, func(n string) bool { return strings.HasPrefix(n, "SCALED") })
		g := want{s.Kind, s.Cycles, s.Clients, s.Settle, s.Failing, s.Events, s.Subs, scaled, len(s.DaemonFlags) > 0}
		if g != c.want || s.About == "" {
			t.Errorf("%s:\n got %+v\nwant %+v (about %q)", c.name, g, c.want, s.About)
		}
	}
	if got := plan(Config{Scenarios: []string{"failing1m"}, API: "http://x"}); !slices.ContainsFunc(got[0].Notes,
		func(n string) bool { return strings.Contains(n, "not applied") }) {
		t.Errorf("external daemon: the scenario's flags must be noted as not applied: %v", got[0].Notes)
	}
}

func TestParseChurnAndFailingFlags(t *testing.T) {
	c, err := parseConfig([]string{"--scenario", "churn,failing1m,hanghosts50", "--churn-cycles", "2000", "--churn-clients", "8",
		"--settle", "3s", "--failing-webhooks", "20", "--failing-events", "200", "--hang-after", "5s"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ChurnCycles != 2000 || c.ChurnClients != 8 || c.Settle != 3*time.Second || c.FailingHooks != 20 || c.FailingEvents != 200 || c.HangAfter != 5*time.Second {
		t.Errorf("config: %+v", c)
	}
	for _, bad := range [][]string{{"--churn-cycles", "-1"}, {"--failing-events", "-5"}, {"--hang-after", "-1s"}, {"--settle", "-1s"}} {
		if _, err := parseConfig(append([]string{"--scenario", "churn"}, bad...), &strings.Builder{}); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}
