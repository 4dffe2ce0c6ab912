package registry

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
)

// synthetic returns n webhooks spread over 100 workspaces and the 4 event
// types in groups of 3 per workflow id, so every event matches exactly 3
// whatever n is.
func synthetic(n int) []*Webhook {
	out := make([]*Webhook, n)
	base := time.Now()
	for i := range out {
		g := i / 3
		id, _ := newID(base.Add(time.Duration(i) * time.Millisecond))
		out[i] = &Webhook{
			ID: id, Workspace: fmt.Sprintf("ws-%d", g%100), URL: "https://example.com/h",
			EventType: events.Types[g%4], WorkflowID: fmt.Sprintf("WF-%d", g), Secret: "whsec_x", CreatedAt: base,
		}
	}
	return out
}

// BenchmarkMatch shows the match cost does not depend on how many
// subscriptions exist: it grows with the number of matches only.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			all := synthetic(n)
			ix := newIndex()
			ix.bulkLoad(all)
			probe := all[len(all)/2]
			var dst []*Webhook
			matches := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst = ix.Match(probe.Workspace, probe.EventType, probe.WorkflowID, dst[:0])
				matches = len(dst)
			}
			b.ReportMetric(float64(matches), "matches")
		})
	}
}

// BenchmarkOpen measures start-up with a large registry: bbolt load plus
// index rebuild, and the heap the index then holds.
func BenchmarkOpen(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			if testing.Short() && n > 100_000 {
				b.Skip("large registry")
			}
			path := writeSynthetic(b, n)
			b.ResetTimer()
			for b.Loop() {
				s, err := Open(Config{Path: path})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
				if s.Count() != n {
					b.Fatalf("count %d", s.Count())
				}
				s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkGet is the dispatcher's lookup of a job's webhook by id, for a
// webhook it holds (its target cache does).
func BenchmarkGet(b *testing.B) {
	all := synthetic(1_000_000)
	ix := newIndex()
	ix.bulkLoad(all)
	id := all[len(all)/2].ID
	held, _ := ix.Get(id)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if w, _ := ix.Get(id); w != held {
			b.Fatal("another pointer")
		}
	}
}
