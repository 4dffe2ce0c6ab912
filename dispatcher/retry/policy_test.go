package retry

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestDelayDefaultSchedule(t *testing.T) {
	want := []time.Duration{
		5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second,
		80 * time.Second, 160 * time.Second, 320 * time.Second, 640 * time.Second,
		1280 * time.Second, 2560 * time.Second, 5120 * time.Second, 10240 * time.Second,
		4 * time.Hour, 4 * time.Hour, 4 * time.Hour,
	}
	var p Policy
	for i, w := range want {
		if got := p.Delay(i+1, 0.5); got != w {
			t.Errorf("Delay(%d, 0.5) = %s, want %s", i+1, got, w)
		}
	}
	for _, attempt := range []int{30, 64, 65, 1000, math.MaxInt} {
		if got := p.Delay(attempt, 0.5); got != 4*time.Hour {
			t.Errorf("Delay(%d, 0.5) = %s, want the 4h cap", attempt, got)
		}
	}
	for _, attempt := range []int{0, -1, math.MinInt} {
		if got := p.Delay(attempt, 0.5); got != 5*time.Second {
			t.Errorf("Delay(%d, 0.5) = %s, want it treated as attempt 1 (5s)", attempt, got)
		}
	}
}

func TestDelayCustomPolicies(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		want []time.Duration
	}{
		{"1s to 10s", Policy{Initial: time.Second, MaxInterval: 10 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"initial above cap", Policy{Initial: time.Minute, MaxInterval: 10 * time.Second},
			[]time.Duration{10 * time.Second, 10 * time.Second}},
		{"1ns initial", Policy{Initial: 1, MaxInterval: 8},
			[]time.Duration{1, 2, 4, 8, 8}},
		{"huge cap", Policy{Initial: time.Hour, MaxInterval: time.Duration(math.MaxInt64)},
			[]time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, w := range tc.want {
				if got := tc.p.Delay(i+1, 0.5); got != w {
					t.Errorf("Delay(%d) = %s, want %s", i+1, got, w)
				}
			}
		})
	}
	huge := Policy{Initial: time.Hour, MaxInterval: time.Duration(math.MaxInt64)}
	if got := huge.Delay(1000, 0.999); got <= 0 {
		t.Errorf("Delay with a MaxInt64 cap overflowed to %s", got)
	}
}

func TestDelayJitter(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		rnd  float64
		want time.Duration
	}{
		{"rnd 0 halves", Policy{}, 0, 5 * time.Second / 2},
		{"rnd 0.75", Policy{}, 0.75, 5 * time.Second * 5 / 4},
		{"rnd 1 clamps to +50%", Policy{}, 1, 15 * time.Second / 2},
		{"rnd above 1 clamps", Policy{}, 7, 15 * time.Second / 2},
		{"rnd negative clamps", Policy{}, -3, 5 * time.Second / 2},
		{"rnd NaN clamps", Policy{}, math.NaN(), 5 * time.Second / 2},
		{"jitter 0.1", Policy{Jitter: 0.1}, 0, 4500 * time.Millisecond},
		{"jitter 1 may reach zero", Policy{Jitter: 1}, 0, 0},
		{"jitter above 1 clamps", Policy{Jitter: 3}, 0, 0},
		{"negative jitter disables", Policy{Jitter: -1}, 0, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Delay(1, tc.rnd); got != tc.want {
				t.Fatalf("Delay(1, %v) = %s, want %s", tc.rnd, got, tc.want)
			}
		})
	}
}

func TestDelayBounds(t *testing.T) {
	for _, p := range []Policy{{}, {Jitter: 0.2}, {Jitter: 1}, {Initial: time.Millisecond, MaxInterval: time.Second}} {
		n := p.withDefaults()
		for attempt := 1; attempt <= 40; attempt++ {
			base := p.Delay(attempt, 0.5)
			lo := time.Duration(float64(base) * (1 - n.Jitter))
			hi := time.Duration(float64(base) * (1 + n.Jitter))
			for i := 0; i < 100; i++ {
				rnd := float64(i) / 100
				d := p.Delay(attempt, rnd)
				if d < lo || d > hi || d < 0 || d > time.Duration(float64(n.MaxInterval)*(1+n.Jitter)) {
					t.Fatalf("%+v Delay(%d, %v) = %s outside [%s, %s]", p, attempt, rnd, d, lo, hi)
				}
				if i > 0 && d < p.Delay(attempt, float64(i-1)/100) {
					t.Fatalf("%+v Delay(%d, ·) not monotonic in rnd", p, attempt)
				}
			}
		}
	}
}

func TestNext(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		p    Policy
		in   Outcome
		want Decision
	}{
		{"first failure", Policy{}, Outcome{Attempt: 1, Status: 500, FirstAttempt: t0, Now: t0, Rnd: 0.5},
			Decision{Retry: true, Delay: 5 * time.Second}},
		{"transport error", Policy{}, Outcome{Attempt: 3, Status: 0, FirstAttempt: t0, Now: t0.Add(time.Minute), Rnd: 0.5},
			Decision{Retry: true, Delay: 20 * time.Second}},
		{"3xx retried", Policy{}, Outcome{Attempt: 1, Status: 302, FirstAttempt: t0, Now: t0, Rnd: 0.5},
			Decision{Retry: true, Delay: 5 * time.Second}},
		{"4xx retried", Policy{}, Outcome{Attempt: 1, Status: 404, FirstAttempt: t0, Now: t0, Rnd: 0.5},
			Decision{Retry: true, Delay: 5 * time.Second}},
		{"zero FirstAttempt means now", Policy{}, Outcome{Attempt: 1, Status: 500, Now: t0, Rnd: 0.5},
			Decision{Retry: true, Delay: 5 * time.Second}},
		{"410 gone", Policy{}, Outcome{Attempt: 1, Status: 410, FirstAttempt: t0, Now: t0, Rnd: 0.5},
			Decision{Reason: ReasonGone}},
		{"410 beats attempts", Policy{MaxAttempts: 1}, Outcome{Attempt: 1, Status: 410, FirstAttempt: t0, Now: t0},
			Decision{Reason: ReasonGone}},
		{"2xx is not a failure", Policy{}, Outcome{Attempt: 1, Status: 204, FirstAttempt: t0, Now: t0},
			Decision{}},
		{"below max attempts", Policy{MaxAttempts: 3}, Outcome{Attempt: 2, Status: 503, FirstAttempt: t0, Now: t0, Rnd: 0.5},
			Decision{Retry: true, Delay: 10 * time.Second}},
		{"max attempts reached", Policy{MaxAttempts: 3}, Outcome{Attempt: 3, Status: 503, FirstAttempt: t0, Now: t0},
			Decision{Reason: ReasonMaxAttempts}},
		{"max attempts 1", Policy{MaxAttempts: 1}, Outcome{Attempt: 1, Status: 500, FirstAttempt: t0, Now: t0},
			Decision{Reason: ReasonMaxAttempts}},
		{"retry lands exactly at max age", Policy{}, Outcome{Attempt: 20, Status: 500, FirstAttempt: t0, Now: t0.Add(68 * time.Hour), Rnd: 0.5},
			Decision{Retry: true, Delay: 4 * time.Hour}},
		{"retry would pass max age", Policy{}, Outcome{Attempt: 20, Status: 500, FirstAttempt: t0, Now: t0.Add(68*time.Hour + time.Second), Rnd: 0.5},
			Decision{Reason: ReasonMaxAge}},
		{"custom max age", Policy{MaxAge: time.Minute}, Outcome{Attempt: 4, Status: 500, FirstAttempt: t0, Now: t0.Add(30 * time.Second), Rnd: 0.5},
			Decision{Reason: ReasonMaxAge}},
		{"retry-after longer wins", Policy{}, Outcome{Attempt: 1, Status: 429, FirstAttempt: t0, Now: t0, RetryAfter: time.Minute, Rnd: 0.5},
			Decision{Retry: true, Delay: time.Minute}},
		{"retry-after shorter ignored", Policy{}, Outcome{Attempt: 5, Status: 503, FirstAttempt: t0, Now: t0, RetryAfter: time.Second, Rnd: 0.5},
			Decision{Retry: true, Delay: 80 * time.Second}},
		{"retry-after capped at max interval", Policy{}, Outcome{Attempt: 1, Status: 503, FirstAttempt: t0, Now: t0, RetryAfter: 48 * time.Hour, Rnd: 0.5},
			Decision{Retry: true, Delay: 4 * time.Hour}},
		{"retry-after custom cap", Policy{MaxRetryAfter: 10 * time.Minute}, Outcome{Attempt: 1, Status: 503, FirstAttempt: t0, Now: t0, RetryAfter: time.Hour, Rnd: 0.5},
			Decision{Retry: true, Delay: 10 * time.Minute}},
		{"retry-after pushes past max age", Policy{MaxAge: time.Hour}, Outcome{Attempt: 1, Status: 503, FirstAttempt: t0, Now: t0.Add(50 * time.Minute), RetryAfter: 20 * time.Minute, Rnd: 0.5},
			Decision{Reason: ReasonMaxAge}},
		{"jittered", Policy{}, Outcome{Attempt: 2, Status: 500, FirstAttempt: t0, Now: t0, Rnd: 0},
			Decision{Retry: true, Delay: 5 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Next(tc.in); got != tc.want {
				t.Fatalf("Next = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		p       Policy
		wantErr string
	}{
		{Policy{}, ""},
		{Policy{Initial: time.Second, MaxInterval: time.Minute, MaxAge: time.Hour, MaxAttempts: 10, Jitter: 0.2}, ""},
		{Policy{Jitter: -1}, ""},
		{Policy{Initial: -time.Second}, "negative"},
		{Policy{MaxAttempts: -1}, "max attempts"},
		{Policy{Jitter: 1.5}, "jitter"},
		{Policy{Initial: 5 * time.Hour}, "exceeds max interval"},
	}
	for _, tc := range tests {
		err := tc.p.Validate()
		if tc.wantErr == "" && err != nil {
			t.Errorf("%+v: Validate = %v", tc.p, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%+v: Validate = %v, want error containing %q", tc.p, err, tc.wantErr)
		}
	}
}

// scheduleTable renders, as Markdown, when each attempt of a delivery to a
// receiver that always fails happens under p without jitter, and how the
// policy finally gives up.
func scheduleTable(p Policy) (string, int, string) {
	n := p.withDefaults()
	var sb strings.Builder
	fmt.Fprintf(&sb, "| attempt | delay before it | with ±%.0f%% jitter | at (since first attempt) |\n", n.Jitter*100)
	sb.WriteString("|---:|---:|---:|---:|\n")
	sb.WriteString("| 1 | — | — | 0s |\n")
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	for attempt := 1; ; attempt++ {
		d := p.Next(Outcome{Attempt: attempt, Status: 503, FirstAttempt: t0, Now: now, Rnd: 0.5})
		if !d.Retry {
			return sb.String(), attempt, d.Reason
		}
		now = now.Add(d.Delay)
		fmt.Fprintf(&sb, "| %d | %s | %s – %s | %s |\n", attempt+1, d.Delay,
			p.Delay(attempt, 0), p.Delay(attempt, math.Nextafter(1, 0)).Round(time.Second), now.Sub(t0))
	}
}

// TestDefaultSchedule pins the default schedule and prints it (go test -v
// -run TestDefaultSchedule ./dispatcher/retry) for the README.
func TestDefaultSchedule(t *testing.T) {
	table, attempts, reason := scheduleTable(Policy{})
	t.Logf("default retry schedule (receiver always failing, no Retry-After):\n%s\ngives up after %d attempts: %s", table, attempts, reason)
	if attempts != 29 || reason != ReasonMaxAge {
		t.Fatalf("default policy gives up after %d attempts (%s), want 29 (max_age)", attempts, reason)
	}
	_, attempts, reason = scheduleTable(Policy{MaxAttempts: 8})
	if attempts != 8 || reason != ReasonMaxAttempts {
		t.Fatalf("MaxAttempts 8 gives up after %d attempts (%s)", attempts, reason)
	}
}
