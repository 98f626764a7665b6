package matchindex

import (
	"math"
	"math/bits"
)

const (
	// linearCutoff is the range size below which search scans: 8 values
	// are one 64-byte cache line.
	linearCutoff = 16
	// maxInterpolations bounds the interpolation probes. Uniform values
	// need about log2(log2(n)) of them (4 for a run of 10^6); if the
	// values are not uniform, binary search takes over, so the worst case
	// stays logarithmic.
	maxInterpolations = 8
)

// search returns the index of the first value in a, which is sorted in
// ascending order, that is not less than x (len(a) if none is).
func search(a []uint64, x uint64) int {
	lo, hi := 0, len(a)
	// Invariants: a[:lo] < x <= a[hi:], and the values in a[lo:hi] lie in
	// [lv, hv], with lv <= x <= hv.
	lv, hv := uint64(0), uint64(math.MaxUint64)
	for probes := 0; hi-lo > linearCutoff; probes++ {
		var p int
		if probes < maxInterpolations {
			p = lo + interpolate(x-lv, hv-lv, hi-lo)
		} else {
			p = int(uint(lo+hi) >> 1)
		}
		if v := a[p]; v < x {
			lo, lv = p+1, v
		} else {
			hi, hv = p, v
		}
	}
	for lo < hi && a[lo] < x {
		lo++
	}
	return lo
}

// interpolate returns ⌊off·n/(span+1)⌋, where off <= span and n > 0: the
// expected position among n uniform values in [v, v+span] of the value
// v+off. It is in [0, n).
func interpolate(off, span uint64, n int) int {
	h, l := bits.Mul64(off, uint64(n))
	if span == math.MaxUint64 {
		return int(h) // division by 2^64
	}
	// h < span+1 because off < span+1 and n < 2^64, so Div64 cannot
	// overflow.
	q, _ := bits.Div64(h, l, span+1)
	return int(q)
}
