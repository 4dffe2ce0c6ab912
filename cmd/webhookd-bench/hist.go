package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a log-linear (HDR-like) latency histogram over microseconds:
// values below 2^subBits µs get a bucket each, and every further power of
// two is cut into 2^subBits equal sub-buckets, so a reported percentile is
// within 1/2^(subBits+1) ≈ 1.6% of the true value, in fixed memory, and
// recording is one atomic add (receivers record from many goroutines).
type histogram struct {
	counts [(64 - subBits + 1) * subBuckets]atomic.Uint64
	n      atomic.Uint64
	min    atomic.Int64 // nanoseconds+1; 0 = nothing recorded
	max    atomic.Int64 // nanoseconds
}

const (
	subBits    = 5
	subBuckets = 1 << subBits
)

// bucketOf maps a value in µs to its bucket index.
func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	shift := bits.Len64(us) - 1 - subBits // >= 0: us has more than subBits significant bits
	sub := (us >> uint(shift)) & (subBuckets - 1)
	return (shift+1)*subBuckets + int(sub)
}

// lowerBound is the smallest µs value of bucket b.
func lowerBound(b int) uint64 {
	if b < subBuckets {
		return uint64(b)
	}
	shift := b/subBuckets - 1
	return (subBuckets + uint64(b%subBuckets)) << uint(shift)
}

func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(uint64(d/time.Microsecond))].Add(1)
	h.n.Add(1)
	for {
		m := h.min.Load()
		if (m != 0 && int64(d)+1 >= m) || h.min.CompareAndSwap(m, int64(d)+1) {
			break
		}
	}
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

func (h *histogram) count() uint64 { return h.n.Load() }

// quantile returns the value at quantile q in [0, 1]: the smallest
// recorded value with at least q of all values at or below it, reported
// as the midpoint of its bucket and clamped to the exact minimum and
// maximum (so q=0 and q=1 are exact). Empty: 0.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	lo, hi := time.Duration(h.min.Load()-1), time.Duration(h.max.Load())
	rank := uint64(math.Ceil(q * float64(n)))
	if rank <= 1 {
		return lo
	}
	if rank >= n {
		return hi
	}
	var seen uint64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			mid := (lowerBound(b) + lowerBound(b+1)) * uint64(time.Microsecond) / 2
			return min(max(time.Duration(mid), lo), hi)
		}
	}
	return hi
}

// percentiles is the summary the report prints.
type percentiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50ms"`
	P90   float64 `json:"p90ms"`
	P99   float64 `json:"p99ms"`
	P999  float64 `json:"p999ms"`
	Max   float64 `json:"maxms"`
}

func (h *histogram) summary() percentiles {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return percentiles{Count: h.count(), P50: ms(h.quantile(.5)), P90: ms(h.quantile(.9)),
		P99: ms(h.quantile(.99)), P999: ms(h.quantile(.999)), Max: ms(h.quantile(1))}
}
