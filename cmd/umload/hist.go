package main

import (
	"math/bits"
	"time"
)

// histogram records durations in microseconds in log-linear buckets: exact
// below 64 µs, then 32 buckets per power of two (at most 3.2 % wide), so
// percentiles are reported within ~3 % for any run length in constant
// memory. The zero value is ready; it is not safe for concurrent use (keep
// one per goroutine and merge).
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // µs
	max    uint64 // µs, exact
	min    uint64 // µs, exact
}

const (
	histExact   = 64 // values below are counted exactly
	histSub     = 32 // buckets per power of two above
	histBuckets = histExact + 58*histSub
)

func bucketOf(v uint64) int {
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) - 6 // >= 1: v>>e is in [32, 64)
	return histExact + (e-1)*histSub + int(v>>e) - histSub
}

// bucketUpper is the largest value counted in bucket i.
func bucketUpper(i int) uint64 {
	if i < histExact {
		return uint64(i)
	}
	e := (i-histExact)/histSub + 1
	m := uint64((i-histExact)%histSub + histSub)
	return (m+1)<<e - 1
}

func (h *histogram) add(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value at quantile q (0..1]: the upper bound of the
// bucket holding the ceil(q·n)-th smallest value, capped at the maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketUpper(i)
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return time.Duration(v) * time.Microsecond
		}
	}
	return time.Duration(h.max) * time.Microsecond
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum/h.n) * time.Microsecond
}

// summary is the histogram in milliseconds for reports.
func (h *histogram) summary() map[string]float64 {
	ms := func(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
	return map[string]float64{
		"count": float64(h.n),
		"p50":   ms(h.quantile(0.50)),
		"p90":   ms(h.quantile(0.90)),
		"p99":   ms(h.quantile(0.99)),
		"max":   ms(time.Duration(h.max) * time.Microsecond),
		"mean":  ms(h.mean()),
	}
}
