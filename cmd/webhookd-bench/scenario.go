package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Scenario is one measured run against a fresh daemon: its receivers, its
// registry and its event stream.
type Scenario struct {
	Name string
	// Events published; with Rate > 0 it is Rate × Duration.
	Events int
	// Rate is events/s on a fixed schedule (open model); 0 publishes as
	// fast as the ack window allows.
	Rate     float64
	Duration time.Duration
	// Receivers by behaviour, each its own listener with one subscription:
	// healthy ones answer 204, hanging ones never answer, failing ones 500.
	Healthy, Hanging, Failing int
	// Subs is the registry size; the Healthy+Hanging+Failing subscriptions
	// every event matches are part of it, the rest match no event.
	Subs int
	// Restart measures a SIGTERM + start of the daemon with the registry
	// loaded (time to /readyz and memory), before the events go out.
	Restart bool
	// Baseline runs the raw loopback baseline after the daemon run.
	Baseline bool
	// Notes are printed under the table.
	Notes []string

	// Dead destinations accept connections and never answer (deadHost),
	// each on its own port with one subscription, after the receivers.
	Dead int
	// Revive of them come back at the end of publishing; the run then
	// waits up to ReviveTimeout for each to get every event it missed.
	Revive        int
	ReviveTimeout time.Duration
	// Family groups a dead-hosts run with its controls; Role tells them
	// apart (roleDead, roleAllHealthy, roleAlone).
	Family, Role string
	// LossExpected marks a control that is known to ask for more than the
	// machine delivers: its losses are reported but fail no exit status.
	LossExpected bool
	// HealthyFor, when set, makes the dead destinations healthy at
	// first: they answer 204 for this long from the first publish, then
	// turn into hanging ones (hanghostsN).
	HealthyFor time.Duration
	// About is the line printed when the run starts.
	About string

	// Kind is "" for an event run, else kindChurn or kindFailing.
	Kind string
	// DaemonFlags are the scenario's own daemon flags (--daemon-flag
	// comes after them, so it overrides them).
	DaemonFlags []string
	// Cycles and Clients shape a churn run: create-then-delete cycles,
	// and how many run at once.
	Cycles, Clients int
	// Settle is how long a churn or failing run leaves the daemon alone
	// before its "after" figures.
	Settle time.Duration
}

// Fanout is the number of subscriptions each event matches.
func (s Scenario) Fanout() int { return s.Healthy + s.Hanging + s.Failing + s.Dead }

// HealthyFanout is how many of them can succeed, i.e. enter the ledger.
func (s Scenario) HealthyFanout() int { return s.Healthy }

// preset is how a named scenario scales with the flags.
type preset struct {
	about string
	build func(c Config) Scenario
	// controls, when set, are runs that follow build's, each on a fresh
	// daemon, to compare it with.
	controls func(c Config) []Scenario
}

// baseEvents is single's default event count; max-rate scenarios with a
// fan-out publish baseEvents/fanout so each delivers about as many webhooks.
const baseEvents = 20_000

func maxRate(name string, c Config, fanout int) Scenario {
	n := baseEvents
	if c.Events > 0 {
		n = c.Events
	}
	return Scenario{Name: name, Events: max(n/fanout, 1), Healthy: fanout, Subs: fanout, Baseline: true,
		Notes: []string{maxRateNote}}
}

// maxRateNote explains max-rate latencies, which are mostly queueing.
const maxRateNote = "max rate: the whole burst is queued at once, so latency is mostly time spent waiting behind it; steady shows latency at a sustainable rate"

func paced(name string, c Config, rate float64, d time.Duration) Scenario {
	if c.Rate > 0 {
		rate = c.Rate
	}
	if c.Duration > 0 {
		d = c.Duration
	}
	return Scenario{Name: name, Rate: rate, Duration: d, Events: max(int(rate*d.Seconds()), 1)}
}

var presets = map[string]preset{
	"single": {about: "1 endpoint, max rate", build: func(c Config) Scenario {
		return maxRate("single", c, 1)
	}},
	"fanout10": {about: "10 endpoints, each event to all, max rate", build: func(c Config) Scenario {
		return maxRate("fanout10", c, 10)
	}},
	"fanout100": {about: "100 endpoints, each event to all, max rate", build: func(c Config) Scenario {
		return maxRate("fanout100", c, 100)
	}},
	"steady": {about: "1 endpoint, 1000 events/s for 30 s (--rate, --duration)", build: func(c Config) Scenario {
		s := paced("steady", c, 1000, 30*time.Second)
		s.Healthy, s.Subs = 1, 1
		return s
	}},
	"steady5k": {about: "1 endpoint, 5000 events/s for 30 s (--rate, --duration)", build: func(c Config) Scenario {
		s := paced("steady5k", c, 5000, 30*time.Second)
		s.Healthy, s.Subs = 1, 1
		return s
	}},
	"mixed": {about: "20 endpoints, 1 hangs and 1 answers 500 (10% unhealthy), 100 events/s for 15 s", build: func(c Config) Scenario {
		s := paced("mixed", c, 100, 15*time.Second)
		s.Healthy, s.Hanging, s.Failing, s.Subs = 18, 1, 1, 20
		s.Notes = append(s.Notes, "latency and ledger cover the 18 healthy endpoints; the unhealthy ones are reported apart")
		return s
	}},
	"allhealthy": {about: "mixed's control: the same 20 endpoints, all healthy, 100 events/s for 15 s", build: func(c Config) Scenario {
		s := paced("allhealthy", c, 100, 15*time.Second)
		s.Healthy, s.Subs = 20, 20
		return s
	}},
	"subs1m": {about: "registry of --subs subscriptions, each event matches 3; restart time with it loaded", build: func(c Config) Scenario {
		n := baseEvents / 2
		if c.Events > 0 {
			n = max(c.Events/3, 1)
		}
		s := Scenario{Name: "subs1m", Events: n, Healthy: 3, Subs: c.Subs, Restart: true, Baseline: true,
			Notes: []string{maxRateNote}}
		if c.Subs != 1_000_000 {
			s.Notes = append(s.Notes, fmt.Sprintf("SCALED DOWN to %d subscriptions, not 1,000,000: registering through the API is the slow part "+
				"(see the projection below); --scenario subs1m runs the full million", c.Subs))
		}
		return s
	}},
	"deadhosts50":  deadPreset(50, 50),
	"deadhosts500": deadPreset(500, 25),
	"hanghosts50":  hangPreset(50, 50),
	"churn": {about: "create-then-delete webhooks through the API (--churn-cycles, --churn-clients); memory, goroutines and registrations before and after",
		build: func(c Config) Scenario {
			s := Scenario{Name: "churn", Kind: kindChurn, Cycles: defaultChurnCycles, Clients: defaultChurnClients, Settle: defaultSettle}
			if c.ChurnCycles > 0 {
				s.Cycles = c.ChurnCycles
			}
			if c.ChurnClients > 0 {
				s.Clients = c.ChurnClients
			}
			if c.Settle > 0 {
				s.Settle = c.Settle
			}
			s.About = fmt.Sprintf("%d create-then-delete cycles, %d clients at once", s.Cycles, s.Clients)
			return s
		}},
	"failing1m": {about: "100 webhooks answering 500, 10,000 events each: a million deliveries given up after one attempt (--failing-webhooks, --failing-events)",
		build: func(c Config) Scenario {
			s := Scenario{Name: "failing1m", Kind: kindFailing, Failing: defaultFailingHooks, Events: defaultFailingEvents,
				Rate: c.Rate, Settle: defaultSettle, DaemonFlags: failingDaemonFlags}
			if c.FailingHooks > 0 {
				s.Failing = c.FailingHooks
			}
			if c.FailingEvents > 0 {
				s.Events = c.FailingEvents
			}
			if c.Settle > 0 {
				s.Settle = c.Settle
			}
			s.Subs = s.Failing
			s.About = fmt.Sprintf("%d webhooks answering 500, %d events each = %d deliveries, each given up after one attempt",
				s.Failing, s.Events, s.Failing*s.Events)
			if n := s.Failing * s.Events; n != 1_000_000 {
				s.Notes = append(s.Notes, fmt.Sprintf("SCALED to %d failing deliveries, not 1,000,000", n))
			}
			return s
		}},
}

func presetNames() []string {
	var names []string
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// plan resolves the configured scenario names into runs.
func plan(c Config) []Scenario {
	out := make([]Scenario, 0, len(c.Scenarios))
	for _, n := range c.Scenarios {
		p := presets[n]
		runs := []Scenario{p.build(c)}
		if runs[0].About == "" {
			runs[0].About = p.about
		}
		if p.controls != nil {
			runs = append(runs, p.controls(c)...)
		}
		for _, s := range runs {
			if c.NoBaseline {
				s.Baseline = false
			}
			if c.External() && len(s.DaemonFlags) > 0 {
				s.Notes = append(s.Notes, "the scenario's daemon flags ("+strings.Join(s.DaemonFlags, " ")+") are not applied: the daemon is not the bench's own")
			}
			if c.External() && s.Restart {
				s.Restart = false
				s.Notes = append(s.Notes, "restart not measured: the daemon is not the bench's to restart")
			}
			out = append(out, s)
		}
	}
	return out
}
