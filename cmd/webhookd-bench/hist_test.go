package main

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	cases := []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.9, 9000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10000 * time.Microsecond}}
	for _, c := range cases {
		got := h.quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff > 0.04 || diff < -0.04 {
			t.Errorf("q%.2f = %v, want %v ±4%%", c.q, got, c.want)
		}
	}
	if h.count() != 10000 || h.max != 10*time.Millisecond {
		t.Errorf("count %d max %v", h.count(), h.max)
	}
	var empty histogram
	if empty.quantile(0.99) != 0 {
		t.Error("empty histogram")
	}
	var small histogram
	small.record(3 * time.Microsecond)
	small.record(time.Hour)
	if small.quantile(0.5) != 3*time.Microsecond || small.quantile(1) != time.Hour {
		t.Errorf("small: %v %v", small.quantile(0.5), small.quantile(1))
	}
}

func TestBucketsMonotonic(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<22; us += 7 {
		b := bucketOf(us)
		if b < prev || lowerBound(b) > us || lowerBound(b+1) <= us {
			t.Fatalf("us %d -> bucket %d [%d,%d)", us, b, lowerBound(b), lowerBound(b+1))
		}
		prev = b
	}
}
