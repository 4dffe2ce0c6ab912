package main

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// histogram is a log-linear latency histogram (HDR-like): each power of
// two of microseconds is split into 32 linear sub-buckets, so any
// percentile is exact to within ~3%, in constant memory.
type histogram struct {
	mu     sync.Mutex
	counts [64 * subBuckets]uint64
	n      uint64
	max    time.Duration
}

const subBits = 5
const subBuckets = 1 << subBits

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 1 - subBits // >= 0
	sub := (us >> uint(exp)) & (subBuckets - 1)
	return (exp+1)*subBuckets + int(sub)
}

// lowerBound is the smallest value in bucket b, in microseconds.
func lowerBound(b int) uint64 {
	if b < subBuckets {
		return uint64(b)
	}
	exp := b/subBuckets - 1
	sub := uint64(b % subBuckets)
	return (subBuckets + sub) << uint(exp)
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	b := bucketOf(us)
	h.mu.Lock()
	h.counts[b]++
	h.n++
	if d > h.max {
		h.max = d
	}
	h.mu.Unlock()
}

func (h *histogram) merge(o *histogram) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1), as the midpoint of its
// bucket; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	if rank >= h.n {
		return h.max
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := lowerBound(b), lowerBound(b+1)
			mid := time.Duration((lo+hi)/2) * time.Microsecond
			return min(mid, h.max)
		}
	}
	return h.max
}

func (h *histogram) count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
