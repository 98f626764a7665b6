package gpsindex

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/conftrace/conftrace/gps"
)

// Query returns, for each point of device, whether an indexed point is
// within p's thresholds, and the closest distance of the episode so far:
// exactly gps.RunningClosest(device, gps.BruteForceMatches(device,
// indexed traces, p), p), so that gps.Episodes gives the brute force's
// episodes. (Within an episode, a fix needs only to be matched and to be
// checked for points closer than the episode's closest so far, which
// spares most of the search in a crowded place.) It keeps no copy of
// device beyond the call, and clears its own scratch space.
func (x *Index) Query(device gps.Trace, p gps.Params) ([]gps.Match, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("gpsindex: %w", err)
	}
	s := x.snap.Load()
	out := make([]gps.Match, len(device))
	tol := p.ToleranceSeconds()
	gap := int64(p.MaxGap / time.Second)
	q := &query{maxDist: p.DistanceMeters, tol: tol, perLeaf: leavesPerAxis * x.perCell}
	q.setBound(p.DistanceMeters)
	skipMax, chordMax, reachMax := q.skip2, q.chord2, q.chord
	latBound := latBoundFor(p.DistanceMeters)
	plainGrid := searchReach(p.DistanceMeters, x.perCell) <= plainReach
	lastBand := int32(-1)
	first := 0
	// The scratch space holds the device's positions (and cells, sines
	// and cosines derived from them): overwrite it all when done.
	defer func() {
		clear(q.cands[:cap(q.cands)])
		*q = query{}
	}()
	for i, d := range device {
		if !(d.Lat >= -90 && d.Lat <= 90 && d.Lon >= -180 && d.Lon <= 180) {
			clear(out)
			return nil, fmt.Errorf("%w: device point %d: (%v, %v)", ErrPoint, i, d.Lat, d.Lon)
		}
		q.pos, q.t = d.Position(), d.Time
		q.plain = plainGrid && abs32(q.pos.Lat) <= plainLat && abs32(q.pos.Lon) <= plainLon
		// cos² in the lower bound is taken at the poleward edge of the
		// point's 0.01° band, once per band.
		if band := abs32(q.pos.Lat) / bandWidth; band != lastBand {
			lastBand = band
			q.cos2 = bandCos2(band, latBound)
			q.cosMax2 = bandCosMax2(band, latBound)
		}
		q.cands = q.cands[:0]
		q.best, q.matched = math.Inf(1), false
		// A fix continues the episode of the one before if both match
		// and they are at most MaxGap apart, as gps.Episodes has it.
		if i == 0 || !out[i-1].Matched || d.Time-device[i-1].Time > gap {
			q.epBest = math.Inf(1)
		}
		q.skip2, q.chord2, q.chord = skipMax, chordMax, reachMax
		u := q.unit()
		for a := range 3 {
			// The cells follow from the leaf coordinates exactly, as
			// dividing by leavesPerAxis is exact.
			q.leaf[a] = u[a] * x.perCell * leavesPerAxis
			q.own[a] = int64(math.Floor(q.leaf[a]))
			q.cell[a] = floorDiv(q.own[a], leavesPerAxis)
		}
		gLo, gHi := floorDiv(d.Time-tol, x.slotWidth), floorDiv(d.Time+tol, x.slotWidth)
		// The first segment that reaches the window: device fixes come in
		// time order, so it is usually the last one's, or the next.
		if i == 0 || d.Time < device[i-1].Time {
			first, _ = slices.BinarySearch(s.reach, d.Time-tol)
		}
		for first < len(s.reach) && s.reach[first] < d.Time-tol {
			first++
		}
		for _, sg := range s.segs[first:] {
			if sg.minT > d.Time+tol {
				break
			}
			if sg.maxT < d.Time-tol {
				continue
			}
			q.search(sg, max(gLo, sg.g0), min(gHi, sg.g0+slotsPerSegment-1))
		}
		q.settle()
		if q.matched {
			q.epBest = min(q.epBest, q.best)
			out[i] = gps.Match{Matched: true, Distance: q.epBest}
		} else {
			q.epBest = math.Inf(1)
		}
	}
	return out, nil
}

// query is the state of the search for one device point.
type query struct {
	pos     gps.Position
	t, tol  int64
	maxDist float64
	cell    [3]int64 // the cell the point is in
	cos2    uint64   // see lowerBound2
	// leaf is the point's unit vector in leaf edges (see dir), and
	// perLeaf the number of leaf edges in a unit of the unit sphere.
	leaf    [3]float64
	perLeaf float64
	// A candidate is kept only while its lower bound is at most skip2,
	// and a leaf is visited only while its squared distance in leaf
	// edges is at most chord2; both follow min(best, maxDist), where
	// best is the closest exact distance so far, and once the fix is
	// matched min(best, epBest).
	skip2  uint64
	chord2 float64
	chord  float64 // √chord2
	best   float64
	// matched is set once a point within maxDist is known; epBest is the
	// closest distance of the episode the fix would continue (+Inf if
	// none).
	matched bool
	epBest  float64
	// plain is set when the fix's search reads only points near it, far
	// from the poles and the antimeridian: see scanPlain.
	plain bool
	// cosMax2 is an upper bound of cos φ1·cos φ2 for points that pass
	// the lower bound, for provenWithin.
	cosMax2  float64
	cands    []candidate
	runs     runCache
	leaves   leafCache
	own      [3]int64 // the leaf the point is in, in global leaf coordinates
	lat, lon angle
}

// unit returns the unit vector of q.pos, within a few times 1e-16 of
// what unit(q.pos) returns: the leaf margin covers the difference.
func (q *query) unit() [3]float64 {
	sl, cl := q.lat.sincos(q.pos.Lat)
	so, co := q.lon.sincos(q.pos.Lon)
	return [3]float64{cl * co, cl * so, sl}
}

// angle computes sines and cosines of angles near the last one it
// computed exactly, from that one by the angle-addition formulas: a
// device's consecutive fixes are close, and a short series and a few
// multiplications cost much less than math.Sincos, which every fix
// would otherwise call twice.
type angle struct {
	e7    int32
	valid bool
	s, c  float64
}

// maxStep is the largest difference, in E7 units (0.05°, under 1e-3
// radians), that angle bridges with a series: the terms it drops are
// below h⁵/120 ≈ 5e-18, under a fortieth of an ulp of 1.
const maxStep = 500_000

func (a *angle) sincos(v int32) (s, c float64) {
	d := int64(v) - int64(a.e7)
	if !a.valid || d > maxStep || d < -maxStep {
		a.e7, a.valid = v, true
		a.s, a.c = math.Sincos(float64(v) * radPerE7)
		return a.s, a.c
	}
	h := float64(d) * radPerE7
	h2 := h * h
	// Multiplications by the reciprocals: a float division by a constant
	// stays a division, which costs far more than a multiplication.
	sh := h * (1 - h2*(1.0/6))       // h − h³/6
	ch := 1 - h2*0.5*(1-h2*(1.0/12)) // 1 − h²/2 + h⁴/24
	return a.s*ch + a.c*sh, a.c*ch - a.s*sh
}

// search visits global slots g0..g1 of sg: the point's own cell first,
// so that the bound shrinks, then the neighbouring cells whose box is
// still within it.
func (q *query) search(sg *segment, g0, g1 int64) {
	from, to := q.t-q.tol-sg.base, q.t+q.tol-sg.base
	own := q.cell
	for g := g0; g <= g1; g++ {
		q.searchRun(sg, uint64(g-sg.g0), own, from, to)
	}
	q.settle()
	// The bound, which the own cell usually shrank, limits the cells.
	var lo, hi [3]int64
	r := q.chord
	for a := range 3 {
		lo[a] = int64(math.Floor((q.leaf[a] - r) / leavesPerAxis))
		hi[a] = int64(math.Floor((q.leaf[a] + r) / leavesPerAxis))
	}
	if lo == hi {
		return
	}
	for cx := lo[0]; cx <= hi[0]; cx++ {
		for cy := lo[1]; cy <= hi[1]; cy++ {
			for cz := lo[2]; cz <= hi[2]; cz++ {
				c := [3]int64{cx, cy, cz}
				if c == own || q.boxGap2(c, leavesPerAxis) > q.chord2 {
					continue
				}
				for g := g0; g <= g1; g++ {
					q.searchRun(sg, uint64(g-sg.g0), c, from, to)
				}
				q.settle()
			}
		}
	}
}

// boxGap2 returns the squared distance, in leaf edges, from the point to
// the box of n×n×n leaves whose lowest corner is n·b in leaf coordinates:
// cell b for n = leavesPerAxis, leaf b for n = 1.
func (q *query) boxGap2(b [3]int64, n int64) float64 {
	var gap2 float64
	for a := range 3 {
		edge := float64(b[a] * n)
		g := max(edge-q.leaf[a], q.leaf[a]-(edge+float64(n)), 0)
		gap2 += g * g
	}
	return gap2
}

// searchRun visits the run of cell c in a slot of sg.
func (q *query) searchRun(sg *segment, slot uint64, c [3]int64, from, to int64) {
	key := runKey(slot, cellKey(c[0], c[1], c[2]))
	r := q.runs.get(sg, key)
	if r.dir < 0 {
		q.scan(sg.pts[r.window(sg.pts, from):r.end], to)
	} else {
		q.searchDense(sg, key, &sg.dirs[r.dir], c, from, to)
	}
}

// searchDense visits the leaves of the dense run key, of cell c, that can
// hold a point within the bound: the point's own leaf first, which
// usually holds a close point and so shrinks the bound, then the others
// whose box is still close enough.
func (q *query) searchDense(sg *segment, key uint64, d *dir, c [3]int64, from, to int64) {
	var rel [3]float64
	var own [3]int64
	inside := true
	for a := range 3 {
		rel[a] = q.leaf[a] - float64(c[a]*leavesPerAxis)
		own[a] = q.own[a] - c[a]*leavesPerAxis
		inside = inside && own[a] >= 0 && own[a] < leavesPerAxis
	}
	ownLeaf := int64(-1)
	if inside {
		ownLeaf = leafIndex(own[0], own[1], own[2])
		if d.has(ownLeaf) {
			q.visitLeaf(sg, key, d, ownLeaf, from, to)
		}
	}
	// The bound (which the own leaf, or the own cell, usually shrank)
	// limits the leaves to visit; gaps[a][l] is the squared distance
	// along axis a from the point to leaf l's slab, in leaf edges.
	r := q.chord
	if inside && r < 1 {
		// Within an episode the bound is often a fraction of a leaf:
		// when it stays inside the own leaf, there is nothing else.
		in := true
		for a := range 3 {
			f := rel[a] - float64(own[a])
			in = in && f > r && 1-f > r
		}
		if in {
			return
		}
	}
	var lo, hi [3]int64
	var gaps [3][leavesPerAxis]float64
	for a := range 3 {
		lo[a] = max(int64(math.Floor(rel[a]-r)), 0)
		hi[a] = min(int64(math.Floor(rel[a]+r)), leavesPerAxis-1)
		for l := lo[a]; l <= hi[a]; l++ {
			g := max(float64(l)-rel[a], rel[a]-float64(l+1), 0)
			gaps[a][l] = g * g
		}
	}
	for lx := lo[0]; lx <= hi[0]; lx++ {
		for ly := lo[1]; ly <= hi[1]; ly++ {
			gxy := gaps[0][lx] + gaps[1][ly]
			for lz := lo[2]; lz <= hi[2]; lz++ {
				if l := leafIndex(lx, ly, lz); l != ownLeaf && d.has(l) && gxy+gaps[2][lz] <= q.chord2 {
					q.visitLeaf(sg, key, d, l, from, to)
				}
			}
		}
	}
}

// visitLeaf scans leaf i, which holds points, of the dense run key.
func (q *query) visitLeaf(sg *segment, key uint64, d *dir, i int64, from, to int64) {
	lr := q.leaves.get(sg, key, d, i)
	q.scan(sg.pts[lr.window(sg.pts, from):lr.end], to)
	q.settle()
}
