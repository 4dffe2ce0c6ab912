package registry

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeSynthetic stores synthetic(n) straight into a fresh registry file,
// as fast as bbolt takes it, and returns its path.
func writeSynthetic(tb testing.TB, n int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "r.db")
	s, err := Open(Config{Path: path})
	if err != nil {
		tb.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, w := range synthetic(n) {
			ws, err := tx.Bucket(bucketWebhooks).CreateBucketIfNotExists([]byte(w.Workspace))
			if err != nil {
				return err
			}
			ws.FillPercent = 1
			v, _ := json.Marshal(w)
			if err := ws.Put([]byte(w.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkRegistryMemory measures what a loaded registry costs the
// process: live heap bytes per subscription once Open returned, and how
// long a full collection takes while it is live (the mark work the
// registry adds to every GC cycle).
func BenchmarkRegistryMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			if testing.Short() && n > 100_000 {
				b.Skip("large registry")
			}
			path := writeSynthetic(b, n)
			for b.Loop() {
				b.StopTimer()
				before := heapInUse()
				start := time.Now()
				s, err := Open(Config{Path: path})
				if err != nil {
					b.Fatal(err)
				}
				opened := time.Since(start)
				after := heapInUse()
				const rounds = 5
				start = time.Now()
				for range rounds {
					runtime.GC()
				}
				gc := time.Since(start) / rounds
				if s.Index().Len() != n {
					b.Fatalf("indexed %d", s.Index().Len())
				}
				b.ReportMetric(float64(after-before)/float64(n), "heap-B/sub")
				b.ReportMetric(float64(gc.Microseconds())/1000, "gc-ms")
				b.ReportMetric(opened.Seconds(), "open-s")
				runtime.KeepAlive(s)
				s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCompact measures one compaction of a loaded registry: the
// pause a write takes (holding the index's writer lock) when replaced
// records come to outnumber the live ones.
func BenchmarkCompact(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	ix := newIndex()
	ix.bulkLoad(synthetic(n))
	b.ResetTimer()
	for b.Loop() {
		ix.mu.Lock()
		ix.compact(ix.gen.Load())
		ix.mu.Unlock()
	}
	b.ReportMetric(float64(n), "subs")
}
