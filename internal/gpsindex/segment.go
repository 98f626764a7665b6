package gpsindex

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
	"unsafe"

	"github.com/conftrace/conftrace/gps"
)

// point is an indexed point: 12 bytes.
type point struct {
	lat, lon int32  // 1e-7 degree
	t        uint32 // seconds since the segment's base
}

// entry maps a (slot, cell) key to its run of points; end == 0 marks an
// empty entry (runs are never empty), and end == denseEntry a dense run
// whose directory is dirs[start].
type entry struct {
	key        uint64
	start, end uint32
}

const denseEntry = math.MaxUint32

// maxSegment bounds the points of a segment, so that their indexes fit
// in an entry's uint32 without reaching denseEntry.
const maxSegment = 1<<31 - 1

// segment is an immutable set of points within slotsPerSegment slots.
type segment struct {
	g0         int64 // first global slot
	base       int64 // Unix time of g0's start
	minT, maxT int64
	pts        []point
	table      []entry
	dirs       []dir    // of the dense runs
	leafOffs   []uint32 // see dir
	// mem is the memory the four arrays above share, and allocated the
	// bytes allocated for it, see alloc.
	mem       []byte
	allocated int
}

// Leaves split the cell of a dense run (a run of at least the index's
// denseMin points) into leavesPerAxis³ cubes. A dense run's points are
// sorted by leaf, then time, so each leaf is a slice of the run, and a
// query reads only the leaves near the point, nearest first: in a busy
// building, a handful of fixes instead of every fix of the hour. With 4,
// a dense run's directory is one word.
const leavesPerAxis = 4

func leafIndex(lx, ly, lz int64) int64 {
	return (lx*leavesPerAxis+ly)*leavesPerAxis + lz
}

// dir is the directory of a dense run: which leaves hold points, and
// where each starts. The run's k-th non-empty leaf (in leafIndex order)
// is sg.pts[sg.leafOffs[first+k]:sg.leafOffs[first+k+1]].
type dir struct {
	first uint32
	bits  [leavesPerAxis * leavesPerAxis * leavesPerAxis / 64]uint64
}

// has reports whether leaf i holds points.
func (d *dir) has(i int64) bool { return d.bits[i/64]&(1<<(i%64)) != 0 }

// leaf returns the points of the non-empty leaf i.
func (d *dir) leaf(sg *segment, i int64) (start, end uint32) {
	k := uint32(bits.OnesCount64(d.bits[i/64] & (1<<(i%64) - 1)))
	for _, w := range d.bits[:i/64] {
		k += uint32(bits.OnesCount64(w))
	}
	return sg.leafOffs[d.first+k], sg.leafOffs[d.first+k+1]
}

// maxLoad is the hash table's largest fill ratio.
const maxLoad = 0.7

// build makes segments of items, which it sorts.
func (x *Index) build(items []item) []*segment {
	// The order is total, so that a build does not depend on the order
	// of its input. Early returns: cmp.Or would compare every field.
	slices.SortFunc(items, func(a, b item) int {
		if a.chunk != b.chunk {
			return cmp.Compare(a.chunk, b.chunk)
		}
		if a.key != b.key {
			return cmp.Compare(a.key, b.key)
		}
		if a.t != b.t {
			return cmp.Compare(a.t, b.t)
		}
		if a.pos.Lat != b.pos.Lat {
			return cmp.Compare(a.pos.Lat, b.pos.Lat)
		}
		return cmp.Compare(a.pos.Lon, b.pos.Lon)
	})
	var segs []*segment
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].chunk == items[i].chunk {
			j++
		}
		segs = append(segs, x.segment(items[i:j]))
		i = j
	}
	return segs
}

// segment makes a segment of sorted items of one chunk.
func (x *Index) segment(items []item) *segment {
	g0 := items[0].chunk * slotsPerSegment
	s := &segment{
		g0:   g0,
		base: g0 * x.slotWidth,
		minT: items[0].t,
		maxT: items[0].t,
	}
	// Dense runs are sorted by leaf, keeping time order within a leaf.
	runs, dense, leaves := 0, 0, 0
	var scratch []item
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].key == items[i].key {
			j++
		}
		if j-i >= x.denseMin {
			scratch = sortByLeaf(items[i:j], scratch)
			dense++
			leaves += countLeaves(items[i:j]) + 1
		}
		runs++
		i = j
	}
	s.alloc(len(items), int(float64(runs)/maxLoad)+1, dense, leaves)
	for i, it := range items {
		s.minT, s.maxT = min(s.minT, it.t), max(s.maxT, it.t)
		s.pts[i] = point{lat: it.pos.Lat, lon: it.pos.Lon, t: uint32(it.t - s.base)}
	}
	s.dirs, s.leafOffs = s.dirs[:0], s.leafOffs[:0]
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].key == items[i].key {
			j++
		}
		e := entry{key: items[i].key, start: uint32(i), end: uint32(j)}
		if j-i >= x.denseMin {
			e.start, e.end = uint32(len(s.dirs)), denseEntry
			s.addDir(uint32(i), items[i:j])
		}
		s.insert(e)
		i = j
	}
	// Pages the memory already had when the advice came (reused
	// memory the runtime cleared) are collapsed now.
	hugePages(s.mem)
	return s
}

// alloc makes the segment's arrays, with room for the given numbers of
// elements (dirs and leafOffs as zero-length slices of that capacity),
// in one allocation: large segments are then aligned to huge pages by
// one padding (see alignedHuge) instead of four, and the table, which
// every query probes at random, lies wholly within huge pages. (With four
// allocations, the unaligned ends of each array stayed in small pages.)
func (s *segment) alloc(points, entries, dirs, leafOffs int) {
	const (
		entrySize = int(unsafe.Sizeof(entry{}))
		dirSize   = int(unsafe.Sizeof(dir{}))
		pointSize = int(unsafe.Sizeof(point{}))
	)
	// The most aligned arrays first, so that each starts aligned.
	size := entries*entrySize + dirs*dirSize + leafOffs*4 + points*pointSize
	s.mem, s.allocated = alignedHuge(size)
	rest := s.mem
	s.table = carve[entry](&rest, entries)
	s.dirs = carve[dir](&rest, dirs)[:0]
	s.leafOffs = carve[uint32](&rest, leafOffs)[:0]
	s.pts = carve[point](&rest, points)
}

// carve returns the first n elements of type T of *mem, which must be
// aligned for T and long enough, and advances *mem past them.
func carve[T any](mem *[]byte, n int) []T {
	if n == 0 {
		return nil
	}
	var zero T
	size := n * int(unsafe.Sizeof(zero))
	v := unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(*mem))), n)
	*mem = (*mem)[size:]
	return v
}

// countLeaves returns the number of leaves of a run sorted by leaf.
func countLeaves(run []item) int {
	n := 0
	for k, it := range run {
		if k == 0 || it.leaf != run[k-1].leaf {
			n++
		}
	}
	return n
}

// sortByLeaf sorts run by leaf, keeping the order of items in the same
// leaf (a counting sort, linear in the run, as there are only 64 leaves),
// with scratch space it returns for the next call.
func sortByLeaf(run, scratch []item) []item {
	var start [leavesPerAxis*leavesPerAxis*leavesPerAxis + 1]int
	for _, it := range run {
		start[it.leaf+1]++
	}
	for l := 1; l < len(start); l++ {
		start[l] += start[l-1]
	}
	scratch = slices.Grow(scratch[:0], len(run))[:len(run)]
	for _, it := range run {
		scratch[start[it.leaf]] = it
		start[it.leaf]++
	}
	copy(run, scratch)
	return scratch
}

// addDir records the directory of a dense run, sorted by leaf, that
// starts at start.
func (s *segment) addDir(start uint32, run []item) {
	d := dir{first: uint32(len(s.leafOffs))}
	for k, it := range run {
		if k == 0 || it.leaf != run[k-1].leaf {
			d.bits[it.leaf/64] |= 1 << (it.leaf % 64)
			s.leafOffs = append(s.leafOffs, start+uint32(k))
		}
	}
	s.leafOffs = append(s.leafOffs, start+uint32(len(run)))
	s.dirs = append(s.dirs, d)
}

// home returns where the search for key starts. A cell's runs of
// slots within the same group of homeGroup slots have consecutive homes,
// so their entries usually share a cache line: a device that stays in a
// cell finds the next hour's run next to the last one.
func (s *segment) home(key uint64) int {
	h := (key >> homeGroup) * 0x9e3779b97f4a7c15
	h ^= h >> 29
	hi, _ := bits.Mul64(h, uint64(len(s.table)))
	i := int(hi) + int(key&(1<<homeGroup-1))
	for i >= len(s.table) {
		i -= len(s.table)
	}
	return i
}

// homeGroup is log2 of the slots whose homes are consecutive: 32 slots,
// more than a day's 24 at the default hour-wide slots, so that a cell's
// runs of a day usually lie in one group.
const homeGroup = 5

func (s *segment) insert(e entry) {
	i := s.home(e.key)
	for s.table[i].end != 0 {
		if i++; i == len(s.table) {
			i = 0
		}
	}
	s.table[i] = e
}

// find returns the entry of key: start == end if there is none.
func (s *segment) find(key uint64) (start, end uint32) {
	i := s.home(key)
	for {
		e := &s.table[i]
		if e.end == 0 {
			return 0, 0
		}
		if e.key == key {
			return e.start, e.end
		}
		if i++; i == len(s.table) {
			i = 0
		}
	}
}

// bytes returns the memory the segment takes, with the padding that
// aligns it.
func (s *segment) bytes() int {
	return int(unsafe.Sizeof(*s)) + s.allocated
}

// merge rebuilds two generations of segments as one.
func (x *Index) merge(a, b []*segment) []*segment {
	items := make([]item, 0, points(a)+points(b))
	for _, g := range [][]*segment{a, b} {
		for _, s := range g {
			for _, p := range s.pts {
				items = append(items, x.item(s.base+int64(p.t), gps.Position{Lat: p.lat, Lon: p.lon}))
			}
		}
	}
	return x.build(items)
}
