package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVoidReasons(t *testing.T) {
	balanced := Tally{Generated: 100, Published: 100, Fanout: 3, Expected: 300, Unique: 290, Lost: 10, Duplicates: 7}
	cases := []struct {
		name string
		edit func(*Tally)
		want string // substring of the single reason; "" = not void
	}{
		{"balanced with loss and duplicates", func(*Tally) {}, ""},
		{"nothing lost", func(t *Tally) { t.Unique, t.Lost = 300, 0 }, ""},
		{"received more than expected", func(t *Tally) { t.Unique = 305 }, "does not balance"},
		{"loss miscounted", func(t *Tally) { t.Lost = 9 }, "does not balance"},
		{"unacked publishes", func(t *Tally) { t.Generated = 101 }, "not acknowledged"},
		{"bad signature", func(t *Tally) { t.BadSignatures = 1 }, "signature"},
		{"unknown event", func(t *Tally) { t.Unexpected = 2 }, "matched no published event"},
		{"body changed", func(t *Tally) { t.BodyMismatch = 1 }, "body"},
		{"webhook-id changed on retry", func(t *Tally) { t.UnstableIDs = 1 }, "changed webhook-id"},
		{"webhook-id shared", func(t *Tally) { t.ReusedIDs = 1 }, "two different"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tl := balanced
			c.edit(&tl)
			why := tl.VoidReasons()
			switch {
			case c.want == "" && len(why) != 0:
				t.Fatalf("void: %v", why)
			case c.want != "" && (len(why) != 1 || !strings.Contains(why[0], c.want)):
				t.Fatalf("reasons %q, want one containing %q", why, c.want)
			}
		})
	}
}

// delivery is one arrival fed to the ledger in TestLedgerRecord.
type delivery struct {
	sub, seq int
	id       string
	want     outcome
}

func TestLedgerRecord(t *testing.T) {
	sent := time.Unix(1000, 0)
	cases := []struct {
		name       string
		events     int
		published  int
		counted    []bool
		deliveries []delivery
		want       Tally
	}{
		{
			name: "every pair once", events: 2, published: 2, counted: []bool{true, true},
			deliveries: []delivery{{0, 0, "a", outFirst}, {0, 1, "b", outFirst}, {1, 0, "c", outFirst}, {1, 1, "d", outFirst}},
			want:       Tally{Generated: 2, Published: 2, Fanout: 2, Expected: 4, Unique: 4},
		},
		{
			name: "retries are duplicates, missing pairs are lost", events: 3, published: 3, counted: []bool{true},
			deliveries: []delivery{{0, 0, "a", outFirst}, {0, 0, "a", outDuplicate}, {0, 2, "c", outFirst}},
			want:       Tally{Generated: 3, Published: 3, Fanout: 1, Expected: 3, Unique: 2, Lost: 1, Duplicates: 1},
		},
		{
			name: "a retry with another webhook-id", events: 1, published: 1, counted: []bool{true},
			deliveries: []delivery{{0, 0, "a", outFirst}, {0, 0, "z", outRejected}},
			want:       Tally{Generated: 1, Published: 1, Fanout: 1, Expected: 1, Unique: 1, Duplicates: 1, UnstableIDs: 1},
		},
		{
			name: "one webhook-id for two pairs", events: 2, published: 2, counted: []bool{true},
			deliveries: []delivery{{0, 0, "a", outFirst}, {0, 1, "a", outRejected}},
			want:       Tally{Generated: 2, Published: 2, Fanout: 1, Expected: 2, Unique: 2, ReusedIDs: 1},
		},
		{
			name: "out of range and anonymous", events: 2, published: 2, counted: []bool{true},
			deliveries: []delivery{{0, 2, "x", outRejected}, {1, 0, "y", outRejected}, {0, -1, "w", outRejected}, {0, 0, "", outRejected}},
			want:       Tally{Generated: 2, Published: 2, Fanout: 1, Expected: 2, Lost: 2, Unexpected: 4},
		},
		{
			name: "unhealthy subscriptions stay out of the books", events: 2, published: 2, counted: []bool{true, false},
			deliveries: []delivery{{0, 0, "a", outFirst}, {0, 1, "b", outFirst}, {1, 0, "c", outFirst}, {1, 0, "c", outDuplicate}},
			want:       Tally{Generated: 2, Published: 2, Fanout: 1, Expected: 2, Unique: 2},
		},
		{
			// A delivery of an event whose publish was never acked: it was
			// generated, so it is booked, and the books cannot balance.
			name: "delivery of an unacked event", events: 2, published: 1, counted: []bool{true},
			deliveries: []delivery{{0, 0, "a", outFirst}, {0, 1, "b", outFirst}},
			want:       Tally{Generated: 2, Published: 1, Fanout: 1, Expected: 1, Unique: 2},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLedger(c.events, c.counted)
			for _, d := range c.deliveries {
				if got := l.record(d.sub, d.seq, d.id, sent, sent.Add(time.Millisecond)); got != d.want {
					t.Errorf("record(%+v) = %v, want %v", d, got, d.want)
				}
			}
			got := l.tally(c.events, c.published)
			if got != c.want {
				t.Errorf("tally\n got %+v\nwant %+v", got, c.want)
			}
			if l.lat.count() != uint64(l.counted.Load()) || (l.counted.Load() > 0 && l.lat.quantile(1) != time.Millisecond) {
				t.Errorf("latency: %d samples for %d counted, max %v", l.lat.count(), l.counted.Load(), l.lat.quantile(1))
			}
		})
	}
}

func TestLedgerConcurrentDuplicates(t *testing.T) {
	const events, subs, copies = 500, 4, 3
	l := newLedger(events, []bool{true, true, true, true})
	now := time.Now()
	var wg sync.WaitGroup
	for c := range copies {
		wg.Go(func() {
			for s := range subs {
				for e := range events {
					seq := (e + c*7) % events
					l.record(s, seq, fmt.Sprintf("id-%d-%d", s, seq), now, now)
				}
			}
		})
	}
	wg.Wait()
	got := l.tally(events, events)
	if got.Unique != events*subs || got.Duplicates != events*subs*(copies-1) || got.Lost != 0 || len(got.VoidReasons()) != 0 {
		t.Fatalf("tally %+v, reasons %v", got, got.VoidReasons())
	}
}
