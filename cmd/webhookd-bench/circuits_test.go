package main

import (
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, c := range cases {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	in := []float64{3, 1, 2}
	if m, x := medianMax(in); *m != 2 || *x != 3 || in[0] != 3 {
		t.Errorf("medianMax: %v %v, input %v (must stay unsorted)", *m, *x, in)
	}
	if m, x := medianMax(nil); m != nil || x != nil {
		t.Error("medianMax of nothing must be nil")
	}
}

func TestHostCircuitOf(t *testing.T) {
	read := time.Date(2025, 1, 1, 12, 0, 10, 0, time.UTC)
	cases := []struct {
		name           string
		h              apiHealth
		cooldown, left float64 // -1: nil
	}{
		{"open, 20 s cool-down, 5 s left", apiHealth{State: stateCircuitOpen, LastFailureAt: "2025-01-01T11:59:55.000Z",
			CircuitOpenUntil: "2025-01-01T12:00:15.000Z"}, 20, 5},
		{"open, milliseconds, already due", apiHealth{State: stateCircuitOpen, LastFailureAt: "2025-01-01T12:00:00.250Z",
			CircuitOpenUntil: "2025-01-01T12:00:05.250Z"}, 5, -4.75},
		{"open, no failure time", apiHealth{State: stateCircuitOpen, CircuitOpenUntil: "2025-01-01T12:00:15.000Z"}, -1, 5},
		{"failing: no open-until", apiHealth{State: "failing", LastFailureAt: "2025-01-01T11:59:55.000Z"}, -1, -1},
		{"unparseable", apiHealth{State: stateCircuitOpen, LastFailureAt: "x", CircuitOpenUntil: "y"}, -1, -1},
	}
	eq := func(p *float64, want float64) bool {
		if want == -1 {
			return p == nil
		}
		return p != nil && *p > want-1e-9 && *p < want+1e-9
	}
	for _, c := range cases {
		got := hostCircuitOf(7, c.h, read)
		if got.Host != 7 || got.State != c.h.State || !eq(got.CooldownSeconds, c.cooldown) || !eq(got.RemainingSeconds, c.left) {
			t.Errorf("%s: %+v", c.name, got)
		}
	}
}

func TestSummariseCircuits(t *testing.T) {
	hs := []hostCircuit{
		{Host: 0, State: stateCircuitOpen, CooldownSeconds: fp(10), RemainingSeconds: fp(4)},
		{Host: 5, State: stateCircuitOpen, CooldownSeconds: fp(20), RemainingSeconds: fp(1)},
		{Host: 9, State: stateCircuitOpen, CooldownSeconds: fp(40), RemainingSeconds: fp(30)},
		{Host: 12, State: "failing"},
		{Host: 14, Error: "boom"},
	}
	c := summariseCircuits(hs)
	if c.Hosts != 5 || c.Open != 3 || c.Errors != 1 || c.States["failing"] != 1 || *c.CooldownMedian != 20 || *c.CooldownMax != 40 ||
		*c.RemainingMedian != 4 || *c.RemainingMax != 30 {
		t.Fatalf("summary: %+v", c)
	}
	if cd, ok := c.cooldown(5); !ok || cd != 20 {
		t.Errorf("cooldown(5) = %v %v", cd, ok)
	}
	if _, ok := c.cooldown(12); ok {
		t.Error("a closed circuit has no cool-down")
	}
	if _, ok := (*circuitsAtRevival)(nil).cooldown(0); ok {
		t.Error("not read: no cool-down")
	}
	line := c.line()
	for _, want := range []string{"3/5 open (3 circuit_open, 1 failing)", "median 20.0 s, max 40.0 s", "still to run median 4.0 s, max 30.0 s", "1 not readable"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
}

// TestRecoverySpans: per revived host, first delivery to completion,
// against the host's own cool-down at revival.
func TestRecoverySpans(t *testing.T) {
	at := time.Now()
	d := &deadSet{base: 0, book: newBook(newLedger(1, []bool{false, false, false, false}), newEventShape("s", 0)), want: 1,
		revived: []int{0, 1, 2, 3}, revivedAt: at, hosts: []*deadHost{{}, {}, {}, {}},
		circuits: summariseCircuits([]hostCircuit{
			{Host: 0, State: stateCircuitOpen, CooldownSeconds: fp(10)},
			{Host: 1, State: stateCircuitOpen, CooldownSeconds: fp(10)},
			{Host: 2, State: "failing"},
		})}
	set := func(i int, first, complete time.Duration) {
		d.hosts[i].first.Store(at.Add(first).UnixNano())
		if complete > 0 {
			d.hosts[i].complete.Store(at.Add(complete).UnixNano())
		}
	}
	set(0, time.Second, 5*time.Second)    // 4 s, within its 10 s
	set(1, 2*time.Second, 14*time.Second) // 12 s, beyond it
	set(2, time.Second, 7*time.Second)    // 6 s, cool-down unknown
	set(3, 3*time.Second, 0)              // not complete: no span
	r := d.recovery(at, time.Minute)
	if r.SpanMedianSeconds == nil || *r.SpanMedianSeconds != 6 || *r.SpanMaxSeconds != 12 || r.SpanHostsWithCooldown != 2 || r.SpansWithinCooldown != 1 {
		t.Fatalf("spans: median %v max %v, %d/%d within", r.SpanMedianSeconds, r.SpanMaxSeconds, r.SpansWithinCooldown, r.SpanHostsWithCooldown)
	}
	r.HostsComplete = 3
	if l := r.spanLine(); !strings.Contains(l, "median 6.0 s, max 12.0 s over 3 complete hosts; 1/2 within the host's own cool-down") {
		t.Errorf("span line: %s", l)
	}
	if (&recoveryResult{}).spanLine() != "" {
		t.Error("no complete host: no span line")
	}
}
