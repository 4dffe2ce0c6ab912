package main

import (
	"strings"
	"testing"
	"time"
)

func TestPlanDeadHosts(t *testing.T) {
	type want struct {
		name                          string
		events, healthy, dead, fanout int
		subs, revive                  int
		rate                          float64
		duration, reviveTimeout       time.Duration
		role                          string
		lossExpected                  bool
	}
	cases := []struct {
		name string
		cfg  Config
		want []want
	}{
		{"deadhosts50, presets", Config{Scenarios: []string{"deadhosts50"}}, []want{
			{"deadhosts50", 6000, 1, 50, 51, 51, 50, 100, time.Minute, 10 * time.Minute, roleDead, false},
			{"deadhosts50/allhealthy", 6000, 51, 0, 51, 51, 0, 100, time.Minute, 0, roleAllHealthy, false},
			{"deadhosts50/alone", 6000, 1, 0, 1, 1, 0, 100, time.Minute, 0, roleAlone, false},
		}},
		{"deadhosts500, presets", Config{Scenarios: []string{"deadhosts500"}}, []want{
			{"deadhosts500", 6000, 1, 500, 501, 501, 25, 100, time.Minute, 10 * time.Minute, roleDead, false},
			{"deadhosts500/allhealthy", 6000, 501, 0, 501, 501, 0, 100, time.Minute, 0, roleAllHealthy, true},
			{"deadhosts500/alone", 6000, 1, 0, 1, 1, 0, 100, time.Minute, 0, roleAlone, false},
		}},
		{"overrides reach the controls too", Config{Scenarios: []string{"deadhosts500"}, Rate: 20, Duration: 10 * time.Second,
			Revive: 7, ReviveTimeout: time.Minute}, []want{
			{"deadhosts500", 200, 1, 500, 501, 501, 7, 20, 10 * time.Second, time.Minute, roleDead, false},
			{"deadhosts500/allhealthy", 200, 501, 0, 501, 501, 0, 20, 10 * time.Second, 0, roleAllHealthy, false},
			{"deadhosts500/alone", 200, 1, 0, 1, 1, 0, 20, 10 * time.Second, 0, roleAlone, false},
		}},
		{"--revive is capped at the dead hosts", Config{Scenarios: []string{"deadhosts50", "single"}, Revive: 80}, []want{
			{"deadhosts50", 6000, 1, 50, 51, 51, 50, 100, time.Minute, 10 * time.Minute, roleDead, false},
			{"deadhosts50/allhealthy", 6000, 51, 0, 51, 51, 0, 100, time.Minute, 0, roleAllHealthy, false},
			{"deadhosts50/alone", 6000, 1, 0, 1, 1, 0, 100, time.Minute, 0, roleAlone, false},
			{"single", 20000, 1, 0, 1, 1, 0, 0, 0, 0, "", false},
		}},
	}
	for _, c := range cases {
		got := plan(c.cfg)
		if len(got) != len(c.want) {
			t.Fatalf("%s: %d runs, want %d", c.name, len(got), len(c.want))
		}
		for i, w := range c.want {
			s := got[i]
			g := want{s.Name, s.Events, s.Healthy, s.Dead, s.Fanout(), s.Subs, s.Revive, s.Rate, s.Duration,
				s.ReviveTimeout, s.Role, s.LossExpected}
			if g != w {
				t.Errorf("%s: run %d\n got %+v\nwant %+v", c.name, i, g, w)
			}
			if s.About == "" || (s.Family != "" && (!strings.HasPrefix(s.Name, s.Family) || s.Baseline || s.Restart)) {
				t.Errorf("%s: %s: about %q family %q baseline %v restart %v", c.name, s.Name, s.About, s.Family, s.Baseline, s.Restart)
			}
		}
	}
}

func TestPlanHangHosts(t *testing.T) {
	cases := []struct {
		name       string
		cfg        Config
		healthyFor time.Duration
		dead, rev  int
		duration   time.Duration
	}{
		{"presets", Config{Scenarios: []string{"hanghosts50"}}, 10 * time.Second, 50, 50, time.Minute},
		{"smoke", Config{Scenarios: []string{"hanghosts50"}, HangAfter: 5 * time.Second, Duration: 20 * time.Second, Revive: 10},
			5 * time.Second, 50, 10, 20 * time.Second},
	}
	for _, c := range cases {
		got := plan(c.cfg)
		if len(got) != 3 {
			t.Fatalf("%s: %d runs, want the run and its two controls", c.name, len(got))
		}
		s := got[0]
		if s.Name != "hanghosts50" || s.Role != roleDead || s.HealthyFor != c.healthyFor || s.Dead != c.dead || s.Revive != c.rev ||
			s.Duration != c.duration || s.Healthy != 1 || !strings.Contains(s.About, "then hanging") {
			t.Errorf("%s: %+v", c.name, s)
		}
		for _, k := range got[1:] {
			if k.Family != "hanghosts50" || k.HealthyFor != 0 || k.Dead != 0 || k.Duration != c.duration {
				t.Errorf("%s: control %+v", c.name, k)
			}
		}
	}
	if d := plan(Config{Scenarios: []string{"deadhosts50"}})[0]; d.HealthyFor != 0 {
		t.Errorf("deadhosts50 hosts must hang from the start: %v", d.HealthyFor)
	}
}
