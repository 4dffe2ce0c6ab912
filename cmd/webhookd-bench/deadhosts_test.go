package main

import (
	"slices"
	"testing"
	"time"
)

func TestSpread(t *testing.T) {
	cases := []struct {
		n, k int
		want []int
	}{
		{5, 5, []int{0, 1, 2, 3, 4}},
		{10, 3, []int{0, 3, 6}},
		{500, 25, nil}, // checked below: every 20th
		{4, 0, []int{}},
		{3, 7, []int{0, 1, 2}},
	}
	for _, c := range cases {
		got := spread(c.n, c.k)
		if c.want != nil && !slices.Equal(got, c.want) {
			t.Errorf("spread(%d, %d) = %v, want %v", c.n, c.k, got, c.want)
		}
	}
	if got := spread(500, 25); len(got) != 25 || got[1] != 20 || got[24] != 480 {
		t.Errorf("spread(500, 25) = %v", got)
	}
}

func TestConnStats(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	// samples builds one sample a second; open[i] at i s, 10 new
	// connections accepted each second.
	samples := func(open ...int64) []connSample {
		out := make([]connSample, len(open))
		for i, o := range open {
			out[i] = connSample{AtSeconds: float64(i), Open: o, Accepted: int64(i) * 10}
		}
		return out
	}
	long := make([]int64, 61)
	for i := range long {
		long[i] = 2048
		if i >= 30 {
			long[i] = 50 // circuits open
		}
	}
	long[45] = 70 // one probe round
	cases := []struct {
		name                string
		publishing          time.Duration
		samples             []connSample
		from                float64
		peak, inWindow, end int64
		newConns            int64
	}{
		{"60 s run", time.Minute, samples(long...), 30, 2048, 70, 50, 300},
		{"short run: second half", 10 * time.Second, samples(0, 64, 128, 128, 128, 9, 9, 9, 9, 9, 3), 5, 128, 9, 3, 50},
		{"no samples", time.Second, nil, 0.5, 0, 0, 0, 0},
	}
	for _, c := range cases {
		d := &deadSet{start: start, end: start.Add(c.publishing), samples: c.samples}
		r := d.connStats()
		if r.WindowFromSeconds != c.from || r.OpenPeak != c.peak || r.OpenMaxInWindow != c.inWindow ||
			r.OpenAtEnd != c.end || r.NewConnsInWindow != c.newConns {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
}

func TestRecoveryAccount(t *testing.T) {
	l := newLedger(3, []bool{true, false, false, false})
	b := newBook(l, newEventShape("rtest", 0))
	at := time.Now()
	d := &deadSet{base: 1, book: b, want: 3, revived: []int{0, 2}, revivedAt: at,
		hosts: []*deadHost{{}, {}, {}}}
	rec := func(sub, seq int, id string) { l.record(sub, seq, id, at, at) }

	r := d.recovery(at, time.Minute)
	if r.Hosts != 2 || r.Expected != 6 || r.Missing != 6 || r.HostsReached != 0 || r.FirstMaxSeconds != nil || r.CompleteSeconds != nil {
		t.Fatalf("nothing arrived yet: %+v", r)
	}
	// Host 0 (subscription 1) gets everything, once twice; host 2
	// (subscription 3) one event; host 1 was not revived.
	for seq, id := range []string{"a", "b", "c"} {
		rec(1, seq, id)
	}
	rec(1, 0, "a")
	rec(3, 1, "z")
	rec(2, 0, "n")
	d.hosts[0].first.Store(at.Add(time.Second).UnixNano())
	d.hosts[0].complete.Store(at.Add(4 * time.Second).UnixNano())
	d.hosts[2].first.Store(at.Add(2 * time.Second).UnixNano())
	r = d.recovery(at, time.Minute)
	if r.Delivered != 4 || r.Missing != 2 || r.Duplicates != 1 || r.HostsReached != 2 || r.HostsComplete != 1 ||
		r.FirstMaxSeconds == nil || *r.FirstMaxSeconds != 2 || r.CompleteSeconds != nil {
		t.Fatalf("part arrived: %+v", r)
	}
	rec(3, 0, "y")
	rec(3, 2, "x")
	d.hosts[2].complete.Store(at.Add(9 * time.Second).UnixNano())
	r = d.recovery(at, time.Minute)
	if r.Missing != 0 || r.HostsComplete != 2 || r.CompleteSeconds == nil || *r.CompleteSeconds != 9 {
		t.Fatalf("all arrived: %+v", r)
	}
}
