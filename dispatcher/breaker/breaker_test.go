package breaker

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// step is one action on the circuit "k" and what must follow from it.
type step struct {
	advance time.Duration // move the clock first
	do      string        // "allow", "success", "failure", "timeout", "probe-failure", "probe-success", "abandon", "reset", "adopt"
	until   time.Duration // for adopt: open until now+until
	// want after the step
	allowed, probe bool
	state          State
	changed        bool
}

func TestStateMachine(t *testing.T) {
	cfg := Config{FailureThreshold: 3, TimeoutThreshold: 2, Cooldown: 10 * time.Second, MaxCooldown: 30 * time.Second}
	tests := []struct {
		name  string
		steps []step
	}{
		{"closed allows and stays closed below the threshold", []step{
			{do: "allow", allowed: true, state: Closed},
			{do: "failure", state: Closed},
			{do: "failure", state: Closed},
			{do: "success", state: Closed},
			{do: "failure", state: Closed},
			{do: "failure", state: Closed},
		}},
		{"consecutive failures open it", []step{
			{do: "failure"}, {do: "failure"},
			{do: "failure", state: Open, changed: true},
			{do: "allow", allowed: false, state: Open},
		}},
		{"timeouts open it sooner", []step{
			{do: "timeout"},
			{do: "timeout", state: Open, changed: true},
		}},
		{"a failure between timeouts restarts the timeout run, but all count as failures", []step{
			{do: "timeout"}, {do: "failure", state: Closed},
			{do: "timeout", state: Open, changed: true},
		}},
		{"half-open lets one probe through, success closes", []step{
			{do: "timeout"}, {do: "timeout", state: Open, changed: true},
			{advance: 9 * time.Second, do: "allow", allowed: false, state: Open},
			{advance: time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
			{do: "allow", allowed: false, state: HalfOpen},
			{do: "probe-success", state: Closed, changed: true},
			{do: "allow", allowed: true, state: Closed},
		}},
		{"a failed probe reopens with a doubled, capped cool-down", []step{
			{do: "timeout"}, {do: "timeout", state: Open, changed: true},
			{advance: 10 * time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
			{do: "probe-failure", state: Open, changed: true},
			{advance: 19 * time.Second, do: "allow", allowed: false, state: Open},
			{advance: time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
			{do: "probe-failure", state: Open, changed: true},
			{advance: 29 * time.Second, do: "allow", allowed: false, state: Open},
			{advance: time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
		}},
		{"a probe that never reports is replaced after ProbeTimeout", []step{
			{do: "timeout"}, {do: "timeout", state: Open, changed: true},
			{advance: 10 * time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
			{advance: 59 * time.Second, do: "allow", allowed: false, state: HalfOpen},
			{advance: 2 * time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
		}},
		{"an abandoned probe frees the slot", []step{
			{do: "timeout"}, {do: "timeout", state: Open, changed: true},
			{advance: 10 * time.Second, do: "allow", allowed: true, probe: true, state: HalfOpen},
			{do: "abandon", state: HalfOpen},
			{do: "allow", allowed: true, probe: true, state: HalfOpen},
		}},
		{"late failures of attempts begun before opening change nothing", []step{
			{do: "timeout"}, {do: "timeout", state: Open, changed: true},
			{do: "timeout", state: Open}, {do: "failure", state: Open},
		}},
		{"adopt opens a closed circuit, reset closes it", []step{
			{do: "adopt", until: 10 * time.Second, state: Open, changed: true},
			{do: "allow", allowed: false, state: Open},
			{do: "reset", state: Closed, changed: true},
			{do: "allow", allowed: true, state: Closed},
		}},
		{"adopting a past open time changes nothing", []step{
			{do: "adopt", until: -time.Second, state: Closed},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			c := cfg
			c.Now = clk.now
			b, err := New(c)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				clk.t = clk.t.Add(s.advance)
				var tr Transition
				var d Decision
				switch s.do {
				case "allow":
					d = b.Allow("k")
					if d.Allowed != s.allowed || d.Probe != s.probe {
						t.Fatalf("step %d: Allow = %+v, want allowed=%v probe=%v", i, d, s.allowed, s.probe)
					}
					if !d.Allowed && !d.RetryAt.After(clk.t) {
						t.Fatalf("step %d: refused with RetryAt %v, not after now", i, d.RetryAt)
					}
				case "success":
					tr = b.Record("k", false, Success)
				case "failure":
					tr = b.Record("k", false, Failure)
				case "timeout":
					tr = b.Record("k", false, Timeout)
				case "probe-success":
					tr = b.Record("k", true, Success)
				case "probe-failure":
					tr = b.Record("k", true, Failure)
				case "abandon":
					b.Abandon("k", true)
				case "reset":
					tr = b.Reset("k")
				case "adopt":
					tr = b.Adopt("k", clk.t.Add(s.until), 20*time.Second, 4)
				}
				if got := b.Status("k").State; got != s.state {
					t.Fatalf("step %d (%s): state %v, want %v", i, s.do, got, s.state)
				}
				if tr.Changed != s.changed {
					t.Fatalf("step %d (%s): transition %+v, want changed=%v", i, s.do, tr, s.changed)
				}
			}
		})
	}
}

func TestOpenCountAndMemory(t *testing.T) {
	b, err := New(Config{TimeoutThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.Record("a", false, Timeout)
	b.Record("b", false, Failure)
	if n := b.OpenCount(); n != 1 {
		t.Fatalf("OpenCount = %d, want 1", n)
	}
	b.Record("b", false, Success)
	b.Reset("a")
	if len(b.m) != 0 {
		t.Fatalf("healthy keys still held: %d", len(b.m))
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{{FailureThreshold: -1}, {Cooldown: time.Minute, MaxCooldown: time.Second}, {Probes: -2}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
