package matchindex

const (
	// filterBitsPerTuple is the size of a run's filter: 12 bits a tuple,
	// 1.5 bytes, with five bits set by each in one 64-bit word (filterMask),
	// let about 1% of the keys a run does not hold through (computed for
	// words holding a Poisson number of tuples; TestFilterFalsePositives
	// measures it). Only the runs younger than a shard's oldest have one,
	// at most about a seventh of the tuples (runRatio), so filters add at
	// most about 0.2 bytes a tuple, and usually far less.
	filterBitsPerTuple = 12
)

// filter is a register-blocked Bloom filter of a run's sort keys: each key
// sets five bits of one 64-bit word. It answers "not in this run"
// for most keys the run does not hold, from memory small enough to stay
// in cache, so that a lookup reads a young run, a cache and TLB miss, only
// when the key may be there. A shard holds one old run and a few younger
// ones between two drops (the day's uploads); without filters a lookup
// misses once in each, with them about once in all.
//
// Sort keys are uniform (they are a pseudorandom function of the key), so
// the filter uses their bits directly: the top bits choose the word, as
// home does, and the lowest 30 the five bits in it. The two overlap only
// beyond 2^34 words, far more than a run holds.
type filter []uint64

// newFilter returns the filter of r's tuples.
func newFilter(r *run) filter {
	f := make(filter, max(1, (r.n*filterBitsPerTuple+63)/64))
	for i, c := range r.check {
		if c != 0 {
			f[home(r.fp[i], uint64(len(f)))] |= filterMask(r.fp[i])
		}
	}
	return f
}

// filterMask returns the bits that sort key x sets in its word.
func filterMask(x uint64) uint64 {
	return 1<<(x&63) | 1<<(x>>6&63) | 1<<(x>>12&63) | 1<<(x>>18&63) | 1<<(x>>24&63)
}

// mayHold reports whether the run may hold a tuple with sort key x: false
// means it holds none.
func (f filter) mayHold(x uint64) bool {
	m := filterMask(x)
	return f[home(x, uint64(len(f)))]&m == m
}

// filterYoung gives a filter to each of runs but the oldest that has none,
// and returns runs. The oldest, the largest by far, is read by every
// lookup anyway: a filter would cost its bytes and save nothing.
func filterYoung(runs []run) []run {
	for i := 1; i < len(runs); i++ {
		if runs[i].filter == nil {
			runs[i].filter = newFilter(&runs[i])
		}
	}
	return runs
}
