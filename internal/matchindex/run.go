package matchindex

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
)

const (
	// slotsPerGap sets the load factor: a run has one free slot for every
	// slotsPerGap-1 tuples (9/10 full). Fuller runs cost fewer bytes per
	// tuple and longer scans: at 9/10 a lookup that finds nothing reads
	// about 5 slots from where it starts, 40 bytes.
	slotsPerGap = 10
	// slotBytes is what a slot costs: fp, check and payload.
	slotBytes = 8 + 2 + 4
)

// run is an immutable array of tuples sorted by fingerprint, with gaps, in
// which a tuple's place is predictable from its fingerprint alone: the
// tuple whose sort key is x sits at or shortly after its home slot
// ⌊x·slots/2^64⌋. A lookup therefore computes where to read, and reads
// one or two cache lines of one page; there is no directory to read
// first. (This is ordered linear probing, built from sorted input: each
// tuple goes to its home slot or, if the tuple before it took that, to the
// next free one. With uniform sort keys, as fingerprints are, the distance
// from home stays a few slots.)
//
// The three arrays are parallel, so that the scan reads fp alone and only
// a fingerprint match reads check and payload. A free slot is a filler:
// check 0, which no tuple has, and the fp of the next tuple (MaxUint64
// after the last), so that fp never decreases and a scan from any home
// slot stops at the first slot whose fp is at least the one it seeks.
type run struct {
	fp      []uint64
	check   []uint16
	payload []uint32
	slots   uint64 // the number of home slots; the arrays may be a little longer
	n       int    // tuples, not counting fillers
}

// tuple is a run's element while runs are built and merged.
type tuple struct {
	fp      uint64
	payload uint32
	check   uint16
}

func compareTuples(a, b tuple) int { return cmp.Compare(a.fp, b.fp) }

// home returns the home slot of sort key x among slots slots.
func home(x, slots uint64) int {
	h, _ := bits.Mul64(x, slots)
	return int(h)
}

// newRun makes a run of ts, which must be sorted by fp and have checks
// other than 0.
func newRun(ts []tuple) run {
	slots := uint64(len(ts)) + (uint64(len(ts))+slotsPerGap-2)/(slotsPerGap-1)
	// A tuple whose home is near the end can be pushed past it: size the
	// arrays for the last tuple's slot.
	last := -1
	for _, t := range ts {
		last = max(last+1, home(t.fp, slots))
	}
	size := max(int(slots), last+1)
	r := run{
		fp:      make([]uint64, size),
		check:   make([]uint16, size),
		payload: make([]uint32, size),
		slots:   slots,
		n:       len(ts),
	}
	p := -1
	for _, t := range ts {
		p = max(p+1, home(t.fp, slots))
		r.fp[p], r.check[p], r.payload[p] = t.fp, t.check, t.payload
	}
	next := uint64(math.MaxUint64)
	for i := size - 1; i >= 0; i-- {
		if r.check[i] == 0 {
			r.fp[i] = next
		} else {
			next = r.fp[i]
		}
	}
	return r
}

// appendTuples appends r's tuples to dst in order, leaving out those tagged
// drop unless drop is negative.
func (r *run) appendTuples(dst []tuple, drop int) []tuple {
	for i, c := range r.check {
		if c != 0 && (drop < 0 || int(tagOf(r.payload[i])) != drop) {
			dst = append(dst, tuple{fp: r.fp[i], payload: r.payload[i], check: c})
		}
	}
	return dst
}

// countTag returns how many of r's tuples are tagged tag.
func (r *run) countTag(tag uint8) int {
	n := 0
	for i, c := range r.check {
		if c != 0 && tagOf(r.payload[i]) == tag {
			n++
		}
	}
	return n
}

// mergeRuns returns one run with the tuples of runs, leaving out those
// tagged drop unless drop is negative. Each run's tuples are already in
// order, so it merges rather than sorts.
func mergeRuns(runs []run, drop int) run {
	var merged []tuple
	for i := range runs {
		next := runs[i].appendTuples(make([]tuple, 0, runs[i].n), drop)
		merged = mergeTuples(merged, next)
	}
	return newRun(merged)
}

// mergeTuples returns the tuples of a and b, each sorted, in order.
func mergeTuples(a, b []tuple) []tuple {
	switch {
	case len(a) == 0:
		return b
	case len(b) == 0:
		return a
	}
	out := make([]tuple, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if b[j].fp < a[i].fp {
			out = append(out, b[j])
			j++
		} else {
			out = append(out, a[i])
			i++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// normalize merges runs, oldest and largest first, until each is at least
// runRatio times larger than the next, keeping the number of runs
// logarithmic in the shard size. Only runs it merges are copied.
func normalize(runs []run) []run {
	// Scan from the newest pair down. A merge makes run i-1 larger, which
	// can only upset the pair below it, checked next.
	for i := len(runs) - 1; i > 0; i-- {
		if runs[i-1].n < runRatio*runs[i].n {
			runs[i-1] = mergeRuns(runs[i-1:i+1], -1)
			runs = slices.Delete(runs, i, i+1)
		}
	}
	return runs
}

// equal returns the slots [lo, hi) from start on whose sort key is x.
// start is x's home slot, or an earlier one.
func (r *run) equal(start int, x uint64) (lo, hi int) {
	fp := r.fp[start:]
	j := 0
	for j < len(fp) && fp[j] < x {
		j++
	}
	k := j
	for k < len(fp) && fp[k] == x {
		k++
	}
	return start + j, start + k
}
