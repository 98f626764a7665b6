package gpsindex

import "math"

// A device stays in the same few cells for hours while its fixes are
// minutes apart, so the next fix usually reads the same runs and leaves
// with a time window that starts inside the part just read. runCache and
// leafCache remember them, and where the last window started, which
// saves the hash lookups, the binary searches and their cache misses.
type (
	runCache  [cacheSize]runRef
	leafCache [cacheSize]leafRef
)

const cacheSize = 64 // a power of two

// span is a slice of a segment's points sorted by time, and the first
// index in it whose time is at least at.
type span struct {
	start, end uint32
	pos        uint32 // start ≤ pos ≤ end
	at         int64  // seconds from the segment's base
}

func newSpan(start, end uint32) span {
	return span{start: start, end: end, pos: start, at: math.MinInt64}
}

// window returns the index of the span's first point whose time (seconds
// from the segment's base) is at least from, or its end.
func (s *span) window(pts []point, from int64) uint32 {
	// The answer is in [lo, lo+n].
	lo, n := s.start, s.end-s.start
	if s.at <= from {
		// Gallop forward from the last position, whose predecessors are
		// all earlier than from: the window usually moved by minutes.
		lo = s.pos
		step := uint32(1)
		for lo+step < s.end && int64(pts[lo+step-1].t) < from {
			lo += step
			step *= 2
		}
		n = s.end - lo
		if lo+step < s.end {
			n = step - 1 // pts[lo+step-1].t ≥ from
		}
	}
	if n > 0 {
		// A binary search whose steps depend only on n and that moves
		// by arithmetic, not by a branch: which way it goes is a coin
		// toss, which a branch predictor cannot learn.
		// before(i) is all ones if pts[i] is before from, else 0.
		before := func(i uint32) uint32 { return uint32((int64(pts[i].t) - from) >> 63) }
		for n > 1 {
			half := n / 2
			lo += half & before(lo+half)
			n -= half
		}
		lo += 1 & before(lo)
	}
	s.pos, s.at = lo, from
	return lo
}

// runRef is the run of key in sg: its directory if it is dense, else -1
// and its points.
type runRef struct {
	sg  *segment
	key uint64
	dir int32
	span
}

// get returns the run of key in sg.
func (c *runCache) get(sg *segment, key uint64) *runRef {
	r := &c[(key*0x9e3779b97f4a7c15)>>(64-6)]
	if r.sg != sg || r.key != key {
		start, end := sg.find(key)
		dir := int32(-1)
		if end == denseEntry {
			dir, start, end = int32(start), 0, 0
		}
		*r = runRef{sg: sg, key: key, dir: dir, span: newSpan(start, end)}
	}
	return r
}

// leafRef is leaf i of the dense run key in sg.
type leafRef struct {
	sg   *segment
	key  uint64
	leaf int64
	span
}

// get returns leaf i, which holds points, of the dense run key in sg,
// whose directory is d.
func (c *leafCache) get(sg *segment, key uint64, d *dir, i int64) *leafRef {
	r := &c[((key+uint64(i))*0x9e3779b97f4a7c15)>>(64-6)]
	if r.sg != sg || r.key != key || r.leaf != i {
		start, end := d.leaf(sg, i)
		*r = leafRef{sg: sg, key: key, leaf: i, span: newSpan(start, end)}
	}
	return r
}
