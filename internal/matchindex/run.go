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
// a few adjacent cache lines (lookahead); there is no directory to read
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
	// filter, if not nil, says which sort keys the run may hold: a lookup
	// that it rules out does not read the run (filterYoung).
	filter filter
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
	w := newRunWriter(len(ts))
	for _, t := range ts {
		w.put(t.fp, t.check, t.payload)
	}
	return w.finish()
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
// order, so it merges them, in one pass, straight from their slots into the
// new run's: each tuple is read once and written once, and nothing is
// allocated but the new run. (Merges are most of what Add costs: between
// two drops a tuple is merged about runRatio/2 times per run size it goes
// through.)
func mergeRuns(runs []run, drop int) run {
	n := 0
	for i := range runs {
		n += runs[i].n
		if drop >= 0 {
			n -= runs[i].countTag(uint8(drop))
		}
	}
	cur := make([]cursor, 0, len(runs))
	for i := range runs {
		c := cursor{r: &runs[i], drop: drop}
		if c.skip() {
			cur = append(cur, c)
		}
	}
	w := newRunWriter(n)
	for len(cur) > 1 {
		// The runs to merge are few (a handful per shard): a linear
		// search for the smallest head beats a heap.
		best := 0
		for k := 1; k < len(cur); k++ {
			if cur[k].head < cur[best].head {
				best = k
			}
		}
		c := &cur[best]
		// Take c's tuples while they come before every other head: the
		// runs merged are mostly of unequal sizes, so runs of several
		// tuples come from one.
		limit := uint64(math.MaxUint64)
		for k := range cur {
			if k != best {
				limit = min(limit, cur[k].head)
			}
		}
		if !w.copyFrom(c, limit) {
			cur = slices.Delete(cur, best, best+1)
		}
	}
	if len(cur) == 1 {
		w.copyFrom(&cur[0], math.MaxUint64)
	}
	return w.finish()
}

// cursor reads the tuples of a run in order, leaving out free slots and
// the tuples tagged drop (unless drop is negative).
type cursor struct {
	r    *run
	i    int    // the slot of the current tuple
	head uint64 // its fingerprint
	drop int
}

// skip moves c to the first tuple at or after slot c.i and reports whether
// there is one.
func (c *cursor) skip() bool {
	r := c.r
	for ; c.i < len(r.check); c.i++ {
		if r.check[c.i] != 0 && (c.drop < 0 || int(tagOf(r.payload[c.i])) != c.drop) {
			c.head = r.fp[c.i]
			return true
		}
	}
	return false
}

// runWriter lays out a run of n tuples given in order of fingerprint: each
// at its home slot or, when the tuple before took that, at the next one.
type runWriter struct {
	r run
	p int // the slot of the last tuple written, or -1
}

// newRunWriter returns a writer of a run of n tuples.
func newRunWriter(n int) *runWriter {
	slots := uint64(n) + (uint64(n)+slotsPerGap-2)/(slotsPerGap-1)
	// A tuple whose home is near the end can be pushed past it, by a few
	// slots (about as many as a lookup scans): the arrays have room for
	// that beyond their length, so that growing them copies nothing.
	size, room := int(slots), min(int(slots)/8, 64)
	return &runWriter{p: -1, r: run{
		fp:      make([]uint64, size, size+room),
		check:   make([]uint16, size, size+room),
		payload: make([]uint32, size, size+room),
		slots:   slots,
		n:       n,
	}}
}

// put writes the next tuple, and its fingerprint into the free slots it
// skips.
func (w *runWriter) put(fp uint64, check uint16, payload uint32) {
	p := max(w.p+1, home(fp, w.r.slots))
	if p >= len(w.r.fp) {
		w.grow(p + 1)
	}
	fps := w.r.fp[w.p+1 : p+1]
	for q := range fps {
		fps[q] = fp
	}
	w.r.check[p], w.r.payload[p] = check, payload
	w.p = p
}

// copyFrom writes c's tuples whose fingerprint is below limit (at least
// its current one), and reports whether c has tuples left. It is put and
// cursor.skip in one loop: it is where merges spend their time.
func (w *runWriter) copyFrom(c *cursor, limit uint64) bool {
	src := c.r
	sfp, scheck, spayload := src.fp, src.check, src.payload
	i, fp, p := c.i, c.head, w.p
	defer func() { c.i, c.head, w.p = i, fp, p }()
	for {
		q := max(p+1, home(fp, w.r.slots))
		if q >= len(w.r.fp) {
			w.grow(q + 1)
		}
		dfp := w.r.fp[p+1 : q+1]
		for k := range dfp {
			dfp[k] = fp // the free slots skipped, then the tuple's
		}
		w.r.check[q], w.r.payload[q] = scheck[i], spayload[i]
		p = q
		for i++; i < len(scheck) && (scheck[i] == 0 || c.drop >= 0 && int(tagOf(spayload[i])) == c.drop); i++ {
		}
		if i == len(scheck) {
			return false
		}
		if fp = sfp[i]; fp >= limit {
			return true
		}
	}
}

// grow extends the arrays to size slots.
func (w *runWriter) grow(size int) {
	r := &w.r
	if size <= cap(r.fp) {
		// The room newRunWriter left, zeroed by make.
		r.fp, r.check, r.payload = r.fp[:size], r.check[:size], r.payload[:size]
		return
	}
	r.fp = append(r.fp, make([]uint64, size-len(r.fp))...)
	r.check = append(r.check, make([]uint16, size-len(r.check))...)
	r.payload = append(r.payload, make([]uint32, size-len(r.payload))...)
}

// finish fills the free slots after the last tuple and returns the run.
func (w *runWriter) finish() run {
	r := w.r
	for q := w.p + 1; q < len(r.fp); q++ {
		r.fp[q] = math.MaxUint64
	}
	return r
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
// logarithmic in the shard size. runs is what held that but for its last,
// newest run; it merges the shortest suffix of runs after which it holds
// again, in one merge, so that no tuple is copied twice by one call. Only
// runs it merges are copied.
func normalize(runs []run) []run {
	start, sum := len(runs)-1, runs[len(runs)-1].n
	for start > 0 && runs[start-1].n < runRatio*sum {
		start--
		sum += runs[start].n
	}
	if start == len(runs)-1 {
		return runs
	}
	merged := mergeRuns(runs[start:], -1)
	return append(runs[:start], merged)
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

// equalNear is equal from home slot h when x is known to sort at or before
// slot h+lookahead, which must exist: the slots below x are then among the
// lookahead from h, and it counts them without a branch that depends on
// the keys, instead of scanning to the first that is not, which ends at
// an unpredictable slot and costs a mispredicted branch a lookup.
func (r *run) equalNear(h int, x uint64) (lo, hi int) {
	w := (*[lookahead]uint64)(r.fp[h : h+lookahead])
	lo = h
	for _, v := range w {
		_, below := bits.Sub64(v, x, 0) // 1 if v < x: a borrow, not a branch
		lo += int(below)
	}
	hi = lo
	for hi < len(r.fp) && r.fp[hi] == x {
		hi++
	}
	return lo, hi
}
