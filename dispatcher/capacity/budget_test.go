package capacity

import "testing"

func TestBudget(t *testing.T) {
	const (
		mib = int64(1) << 20
		gib = int64(1) << 30
	)
	for _, tc := range []struct {
		name  string
		store int64
		want  Limits // zero fields are not checked, except for the zero budget
		zero  bool
	}{
		{name: "no store, no budget", store: 0, zero: true},
		{name: "negative, no budget", store: -1, zero: true},
		{name: "the 10 GiB default", store: 10 * gib, want: Limits{
			Failures: gib, Attempts: gib, Registry: 512 * mib, Health: 214748364,
			Keys: 64 * mib, Replays: 107374182, Reserve: 322122547,
			Deliveries: 4037940347, Events: 3303769376}},
		{name: "a test-sized 4 MiB", store: 4 * mib},
		// The smallest store --nats-max-store accepts: every bucket is a
		// share, none a fixed size that would not fit.
		{name: "MinStore", store: MinStore, want: Limits{Keys: 671088, Replays: 671088}},
		{name: "1 GiB: the keys bucket is a share, not 64 MiB", store: gib, want: Limits{
			Keys: 10737418, Replays: 10737418}},
		{name: "1 TiB: the small shares are capped", store: 1024 * gib, want: Limits{
			Failures: 16 * gib, Attempts: 16 * gib, Registry: 4 * gib, Health: gib, Keys: 64 * mib, Replays: 256 * mib}},
		{name: "a store of a few bytes still gives every stream one", store: 7},
		{name: "an absurd 4 EiB does not overflow", store: 4 << 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Budget(tc.store)
			if tc.zero {
				if l != (Limits{}) {
					t.Fatalf("Budget(%d) = %+v, want the zero Limits", tc.store, l)
				}
				return
			}
			for name, v := range map[string]int64{"Events": l.Events, "Deliveries": l.Deliveries, "Failures": l.Failures, "Attempts": l.Attempts,
				"Registry": l.Registry, "Health": l.Health, "Keys": l.Keys, "Replays": l.Replays, "Reserve": l.Reserve} {
				if v <= 0 {
					t.Errorf("%s = %d, want a positive bound", name, v)
				}
			}
			if tc.store > 100 {
				if l.Total() != tc.store {
					t.Errorf("shares add up to %d, want the whole store %d", l.Total(), tc.store)
				}
				// What the server reserves (every MaxBytes) must fit the
				// store, or setting up the last stream fails (10047).
				if l.Reserved() > tc.store-l.Reserve-l.Deliveries {
					t.Errorf("reserved %d leaves less than the reserve %d of %d", l.Reserved(), l.Reserve, tc.store)
				}
				if l.Deliveries < l.Events {
					t.Errorf("deliveries %d below events %d: the stream of undiscardable work gets the larger share", l.Deliveries, l.Events)
				}
			}
			check := func(name string, got, want int64) {
				if want != 0 && got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			check("Events", l.Events, tc.want.Events)
			check("Deliveries", l.Deliveries, tc.want.Deliveries)
			check("Failures", l.Failures, tc.want.Failures)
			check("Attempts", l.Attempts, tc.want.Attempts)
			check("Registry", l.Registry, tc.want.Registry)
			check("Health", l.Health, tc.want.Health)
			check("Keys", l.Keys, tc.want.Keys)
			check("Replays", l.Replays, tc.want.Replays)
			check("Reserve", l.Reserve, tc.want.Reserve)
		})
	}
}
