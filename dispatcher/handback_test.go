package dispatcher

import (
	"testing"
	"time"
)

func TestGrow(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name          string
		base          time.Duration
		delivered     uint64
		ceiling, want time.Duration
	}{
		{"first delivery: the base", 2 * s, 1, time.Minute, 2 * s},
		{"unknown count: the base", 2 * s, 0, time.Minute, 2 * s},
		{"doubles per earlier delivery", 2 * s, 4, time.Minute, 16 * s},
		{"capped", 2 * s, 10, time.Minute, time.Minute},
		{"a long base is kept", 2 * time.Hour, 30, time.Minute, 2 * time.Hour},
		{"at once stays at once", 0, 30, time.Minute, 0},
		{"huge counts do not overflow", s, 1 << 62, 10 * s, 10 * s},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := grow(tc.base, tc.delivered, tc.ceiling); got != tc.want {
				t.Errorf("grow(%s, %d, %s) = %s, want %s", tc.base, tc.delivered, tc.ceiling, got, tc.want)
			}
		})
	}
	// MaxDeliveries' default of 50 hand-backs from a 2 s base spans well
	// over half an hour.
	var total time.Duration
	for n := uint64(1); n <= 50; n++ {
		total += grow(2*s, n, time.Minute)
	}
	if total < 40*time.Minute {
		t.Errorf("50 hand-backs span %s", total)
	}
}
