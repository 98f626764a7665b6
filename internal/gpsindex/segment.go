package gpsindex

import (
	"cmp"
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
// empty entry (runs are never empty).
type entry struct {
	key        uint64
	start, end uint32
}

// segment is an immutable set of points within slotsPerSegment slots.
type segment struct {
	g0         int64 // first global slot
	base       int64 // Unix time of g0's start
	minT, maxT int64
	pts        []point
	table      []entry
}

// maxLoad is the hash table's largest fill ratio.
const maxLoad = 0.7

// build makes segments of items, which it sorts.
func (x *Index) build(items []item) []*segment {
	slices.SortFunc(items, func(a, b item) int {
		return cmp.Or(cmp.Compare(a.chunk, b.chunk), cmp.Compare(a.key, b.key), cmp.Compare(a.t, b.t),
			cmp.Compare(a.pos.Lat, b.pos.Lat), cmp.Compare(a.pos.Lon, b.pos.Lon))
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
		pts:  make([]point, len(items)),
	}
	runs := 0
	for i, it := range items {
		s.minT, s.maxT = min(s.minT, it.t), max(s.maxT, it.t)
		s.pts[i] = point{lat: it.pos.Lat, lon: it.pos.Lon, t: uint32(it.t - s.base)}
		if i == 0 || it.key != items[i-1].key {
			runs++
		}
	}
	s.table = make([]entry, int(float64(runs)/maxLoad)+1)
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].key == items[i].key {
			j++
		}
		s.insert(entry{key: items[i].key, start: uint32(i), end: uint32(j)})
		i = j
	}
	return s
}

func (s *segment) home(key uint64) int {
	h := key * 0x9e3779b97f4a7c15
	h ^= h >> 29
	hi, _ := bits.Mul64(h, uint64(len(s.table)))
	return int(hi)
}

func (s *segment) insert(e entry) {
	i := s.home(e.key)
	for s.table[i].end != 0 {
		if i++; i == len(s.table) {
			i = 0
		}
	}
	s.table[i] = e
}

// find returns the run of key, empty if there is none.
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

func (s *segment) bytes() int {
	return int(unsafe.Sizeof(*s)) + len(s.pts)*int(unsafe.Sizeof(point{})) + len(s.table)*int(unsafe.Sizeof(entry{}))
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
