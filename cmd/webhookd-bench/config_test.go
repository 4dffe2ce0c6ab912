package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, c Config)
		bad   string // substring of a usage error; "" = valid
	}{
		{name: "defaults", args: nil, check: func(t *testing.T, c Config) {
			if !slices.Equal(c.Scenarios, standardScenarios) || c.Subs != defaultSubs || c.External() {
				t.Errorf("%+v", c)
			}
		}},
		{name: "subs1m by name is the full million", args: []string{"--scenario", "subs1m"}, check: func(t *testing.T, c Config) {
			if c.Subs != 1_000_000 {
				t.Errorf("subs %d", c.Subs)
			}
		}},
		{name: "scaled on request", args: []string{"--scenario", "subs1m,single", "--subs", "5000"}, check: func(t *testing.T, c Config) {
			if c.Subs != 5000 || !slices.Equal(c.Scenarios, []string{"subs1m", "single"}) {
				t.Errorf("%+v", c)
			}
		}},
		{name: "external", args: []string{"--api", "http://127.0.0.1:8080", "--nats-url", "nats://127.0.0.1:4222", "--api-key", "k"},
			check: func(t *testing.T, c Config) {
				if !c.External() || c.Workspace != "bench" {
					t.Errorf("%+v", c)
				}
			}},
		{name: "daemon flags repeat", args: []string{"--daemon-flag=--max-conns-per-host=8", "--daemon-flag", "--log-level=error"},
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.DaemonFlags, []string{"--max-conns-per-host=8", "--log-level=error"}) {
					t.Errorf("%q", c.DaemonFlags)
				}
			}},
		{name: "unknown scenario", args: []string{"--scenario", "single,bogus"}, bad: "unknown scenario"},
		{name: "repeated scenario", args: []string{"--scenario", "single,single"}, bad: "twice"},
		{name: "empty scenario list", args: []string{"--scenario", " , "}, bad: "no scenario"},
		{name: "api without nats", args: []string{"--api", "http://x", "--api-key", "k"}, bad: "--api needs"},
		{name: "nats without api", args: []string{"--nats-url", "nats://x"}, bad: "need --api"},
		{name: "bin and api", args: []string{"--api", "http://x", "--nats-url", "n", "--api-key", "k", "--webhookd-bin", "b"}, bad: "exclude"},
		{name: "zero window", args: []string{"--window", "0"}, bad: "--window"},
		{name: "negative rate", args: []string{"--rate", "-1"}, bad: "negative"},
		{name: "negative revive", args: []string{"--revive", "-1"}, bad: "--revive"},
		{name: "revive flags", args: []string{"--scenario", "deadhosts500", "--revive", "3", "--revive-timeout", "90s"},
			check: func(t *testing.T, c Config) {
				if c.Revive != 3 || c.ReviveTimeout != 90*time.Second || !slices.Equal(c.Scenarios, []string{"deadhosts500"}) {
					t.Errorf("%+v", c)
				}
			}},
		{name: "tiny registry", args: []string{"--subs", "2"}, bad: "--subs"},
		{name: "bad workspace", args: []string{"--workspace", "a.b"}, bad: "--workspace"},
		{name: "stray argument", args: []string{"single"}, bad: "unexpected argument"},
		{name: "unknown flag", args: []string{"--nope"}, bad: "not defined"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseConfig(c.args, io.Discard)
			if c.bad != "" {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.bad) {
					t.Fatalf("err %v, want a usage error containing %q", err, c.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, cfg)
		})
	}
}

func TestPlan(t *testing.T) {
	byName := func(c Config) map[string]Scenario {
		m := map[string]Scenario{}
		for _, s := range plan(c) {
			m[s.Name] = s
		}
		return m
	}
	all := presetNames()
	base := Config{Scenarios: all, Subs: 1_000_000}
	p := byName(base)
	cases := []struct {
		name                          string
		events, fanout, healthy, subs int
		rate                          float64
		restart, baseline, noteScaled bool
	}{
		{"single", 20000, 1, 1, 1, 0, false, true, false},
		{"fanout10", 2000, 10, 10, 10, 0, false, true, false},
		{"fanout100", 200, 100, 100, 100, 0, false, true, false},
		{"steady", 30000, 1, 1, 1, 1000, false, false, false},
		{"steady5k", 150000, 1, 1, 1, 5000, false, false, false},
		{"mixed", 1500, 20, 18, 20, 100, false, false, false},
		{"subs1m", 10000, 3, 3, 1_000_000, 0, true, true, false},
	}
	for _, c := range cases {
		s := p[c.name]
		if s.Events != c.events || s.Fanout() != c.fanout || s.Healthy != c.healthy || s.Subs != c.subs ||
			s.Rate != c.rate || s.Restart != c.restart || s.Baseline != c.baseline {
			t.Errorf("%s: %+v", c.name, s)
		}
	}
	over := byName(Config{Scenarios: all, Subs: 5000, Events: 900, Rate: 50, Duration: 2 * time.Second, NoBaseline: true})
	if s := over["steady"]; s.Events != 100 || s.Rate != 50 || s.Duration != 2*time.Second {
		t.Errorf("steady overridden: %+v", s)
	}
	if over["single"].Events != 900 || over["fanout10"].Events != 90 || over["fanout100"].Events != 9 || over["subs1m"].Events != 300 {
		t.Errorf("events override: %d %d %d %d", over["single"].Events, over["fanout10"].Events, over["fanout100"].Events, over["subs1m"].Events)
	}
	if over["single"].Baseline || !strings.Contains(strings.Join(over["subs1m"].Notes, " "), "SCALED DOWN to 5000") {
		t.Errorf("--no-baseline or the scaled-down note: %+v", over["subs1m"])
	}
	if tiny := byName(Config{Scenarios: all, Subs: 3, Events: 1}); tiny["fanout100"].Events != 1 {
		t.Errorf("at least one event: %+v", tiny["fanout100"])
	}
	ext := byName(Config{Scenarios: []string{"subs1m"}, Subs: 10, API: "http://x"})
	if ext["subs1m"].Restart || !ext["subs1m"].Baseline {
		t.Errorf("external: %+v", ext["subs1m"])
	}
}

func FuzzParseScenarioList(f *testing.F) {
	f.Add("single,fanout10")
	f.Add(" steady , mixed,")
	f.Add("single,single")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		names, err := parseScenarioList(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, n := range names {
			if _, ok := presets[n]; !ok || seen[n] {
				t.Fatalf("accepted %q from %q", names, s)
			}
			seen[n] = true
		}
		if len(names) == 0 {
			t.Fatalf("accepted an empty list from %q", s)
		}
	})
}
