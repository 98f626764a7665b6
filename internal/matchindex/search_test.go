package matchindex

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// lowerBound is the specification of search: binary search.
func lowerBound(a []uint64, x uint64) int {
	i, _ := slices.BinarySearch(a, x)
	return i
}

// TestSearch checks search against binary search on uniform values, which
// interpolation suits, and on distributions it does not, where it must
// still be right.
func TestSearch(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{10}))
	gen := map[string]func(n int) []uint64{
		"uniform": func(n int) []uint64 {
			a := make([]uint64, n)
			for i := range a {
				a[i] = r.Uint64()
			}
			return a
		},
		"duplicates": func(n int) []uint64 {
			a := make([]uint64, n)
			for i := range a {
				a[i] = r.Uint64N(8) << 61
			}
			return a
		},
		"all equal": func(n int) []uint64 {
			return slices.Repeat([]uint64{42}, n)
		},
		"extremes": func(n int) []uint64 {
			a := make([]uint64, n)
			for i := range a {
				a[i] = []uint64{0, 1, math.MaxUint64 - 1, math.MaxUint64}[r.IntN(4)]
			}
			return a
		},
		"exponential": func(n int) []uint64 {
			a := make([]uint64, n)
			for i := range a {
				a[i] = 1 << r.IntN(64)
			}
			return a
		},
		"clustered low": func(n int) []uint64 {
			a := make([]uint64, n)
			for i := range a {
				a[i] = r.Uint64N(1000)
			}
			a[n-1] = math.MaxUint64
			return a
		},
	}
	for name, g := range gen {
		for _, n := range []int{0, 1, 2, 7, 8, 9, 100, 10_000} {
			t.Run(fmt.Sprintf("%s/n=%d", name, n), func(t *testing.T) {
				var a []uint64
				if n > 0 {
					a = g(n)
				}
				slices.Sort(a)
				probes := []uint64{0, 1, math.MaxUint64 - 1, math.MaxUint64, 42, 1 << 61}
				for _, v := range a {
					probes = append(probes, v, v-1, v+1)
				}
				for range 200 {
					probes = append(probes, r.Uint64())
				}
				for _, x := range probes {
					if got, want := search(a, x), lowerBound(a, x); got != want {
						t.Fatalf("search(%d) = %d, want %d", x, got, want)
					}
				}
			})
		}
	}
}

func TestInterpolate(t *testing.T) {
	cases := []struct {
		off, span uint64
		n, want   int
	}{
		{0, math.MaxUint64, 10, 0},
		{math.MaxUint64, math.MaxUint64, 10, 9},
		{1 << 63, math.MaxUint64, 10, 5},
		{0, 0, 1, 0},
		{5, 9, 10, 5},
		{9, 9, 10, 9},
		{math.MaxUint64 - 1, math.MaxUint64 - 1, math.MaxInt, math.MaxInt - 1},
	}
	for _, tc := range cases {
		if got := interpolate(tc.off, tc.span, tc.n); got != tc.want {
			t.Errorf("interpolate(%d, %d, %d) = %d, want %d", tc.off, tc.span, tc.n, got, tc.want)
		}
	}
}
