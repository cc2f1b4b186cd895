package main

import (
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

var errEOF = io.EOF

func itoa(n int) string { return strconv.Itoa(n) }

func TestHistogramQuantilesWithinBucketPrecision(t *testing.T) {
	var h histogram
	var exact []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		// Log-uniform from 10 µs to 1 s, like latencies.
		d := time.Duration(10e3 * math.Pow(10, rng.Float64()*5))
		h.add(d)
		exact = append(exact, d.Truncate(time.Microsecond))
	}
	slices.Sort(exact)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := exact[int(q*float64(len(exact)))-1]
		got := h.quantile(q)
		if rel := float64(got-want) / float64(want); rel < 0 || rel > 0.035 {
			t.Errorf("p%g = %v, exact %v (%.1f%% off; buckets are at most 3.2%% wide and report their upper bound)", q*100, got, want, rel*100)
		}
	}
	if time.Duration(h.max)*time.Microsecond != exact[len(exact)-1] {
		t.Errorf("max %d µs, want %v", h.max, exact[len(exact)-1])
	}
}

func TestHistogramSmallValuesAreExact(t *testing.T) {
	var h histogram
	for v := range 64 {
		h.add(time.Duration(v) * time.Microsecond)
	}
	if got := h.quantile(0.5); got != 31*time.Microsecond {
		t.Errorf("p50 of 0..63 µs = %v, want 31µs", got)
	}
	if got := h.quantile(1); got != 63*time.Microsecond {
		t.Errorf("p100 = %v", got)
	}
}

func TestHistogramMergeEqualsOneHistogram(t *testing.T) {
	var a, b, all histogram
	for i := range 1000 {
		d := time.Duration(i*i) * time.Microsecond
		all.add(d)
		if i%2 == 0 {
			a.add(d)
		} else {
			b.add(d)
		}
	}
	a.merge(&b)
	if a != all {
		t.Error("merged histogram differs from the one fed every value")
	}
}

func TestHistogramEmptyReportsZero(t *testing.T) {
	var h histogram
	if h.quantile(0.99) != 0 || h.mean() != 0 {
		t.Error("empty histogram reports a value")
	}
}

func TestBucketsCoverEveryValue(t *testing.T) {
	for _, v := range []uint64{0, 63, 64, 65, 127, 128, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1<<64 - 1} {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, i)
		}
		if up := bucketUpper(i); up < v {
			t.Errorf("bucket %d upper bound %d below %d", i, up, v)
		}
		if i > 0 && bucketUpper(i-1) >= v {
			t.Errorf("value %d also fits bucket %d", v, i-1)
		}
	}
}
