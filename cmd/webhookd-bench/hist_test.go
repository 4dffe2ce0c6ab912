package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// exactQuantile is the reference: the smallest value with at least q of
// the values at or below it.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := []struct {
		name string
		gen  func(i int) time.Duration
		n    int
	}{
		{"uniform 1µs..10ms", func(i int) time.Duration { return time.Duration(i+1) * time.Microsecond }, 10000},
		{"exponential mean 5ms", func(int) time.Duration { return time.Duration(rng.ExpFloat64() * 5e6) }, 50000},
		{"bimodal 1ms and 2s", func(i int) time.Duration {
			if i%100 == 0 {
				return 2*time.Second + time.Duration(rng.IntN(1000))*time.Microsecond
			}
			return time.Millisecond + time.Duration(rng.IntN(100))*time.Microsecond
		}, 20000},
		{"long tail up to an hour", func(int) time.Duration { return time.Duration(math.Pow(10, rng.Float64()*12.5)) }, 20000},
	}
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			var h histogram
			vals := make([]time.Duration, d.n)
			for i := range vals {
				vals[i] = d.gen(i)
				h.record(vals[i])
			}
			slices.Sort(vals)
			if h.count() != uint64(d.n) {
				t.Fatalf("count %d, want %d", h.count(), d.n)
			}
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				want, got := exactQuantile(vals, q), h.quantile(q)
				// Bucket width is 1/32 of its lower bound, the report is its
				// midpoint, plus the 1 µs resolution at the bottom.
				tol := time.Duration(float64(want)/64) + time.Microsecond
				if got < want-tol || got > want+tol {
					t.Errorf("q%v = %v, want %v ± %v", q, got, want, tol)
				}
			}
			if h.quantile(0) != vals[0] || h.quantile(1) != vals[len(vals)-1] {
				t.Errorf("min/max not exact: %v %v, want %v %v", h.quantile(0), h.quantile(1), vals[0], vals[len(vals)-1])
			}
		})
	}
}

func TestHistogramEdges(t *testing.T) {
	var empty histogram
	if empty.quantile(0.99) != 0 || empty.summary().Count != 0 {
		t.Error("empty histogram must report 0")
	}
	var h histogram
	h.record(-time.Second)         // clock step: counted as 0
	h.record(3 * time.Microsecond) // reported as its 1 µs bucket's midpoint
	h.record(time.Hour)
	cases := []struct {
		q    float64
		want time.Duration
	}{{0, 0}, {0.5, 3500 * time.Nanosecond}, {0.66, 3500 * time.Nanosecond}, {0.67, time.Hour}, {1, time.Hour}}
	for _, c := range cases {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("q%v = %v, want %v", c.q, got, c.want)
		}
	}
	s := h.summary()
	if s.Count != 3 || s.Max != float64(time.Hour/time.Millisecond) {
		t.Errorf("summary %+v", s)
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.record(time.Duration(g*1000+i+1) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if h.count() != 8000 || h.quantile(1) != 8*time.Millisecond || h.quantile(0) != time.Microsecond {
		t.Errorf("count %d min %v max %v", h.count(), h.quantile(0), h.quantile(1))
	}
}

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<24; us = us + 1 + us/97 {
		b := bucketOf(us)
		if b < prev || lowerBound(b) > us || lowerBound(b+1) <= us {
			t.Fatalf("%d µs -> bucket %d [%d, %d)", us, b, lowerBound(b), lowerBound(b+1))
		}
		if w := lowerBound(b+1) - lowerBound(b); us >= subBuckets && w > us/subBuckets+1 {
			t.Fatalf("%d µs: bucket %d is %d wide, more than 1/%d", us, b, w, subBuckets)
		}
		prev = b
	}
	if b := bucketOf(math.MaxInt64 / 1000); b >= len(histogram{}.counts) {
		t.Fatalf("largest duration lands in bucket %d of %d", b, len(histogram{}.counts))
	}
}
