// Package gpsindex keeps, in enclave memory, the GPS points of infected
// patients' traces, and finds for each point of a device's trace whether
// an infected point was close enough at about the same time.
//
//	idx, err := gpsindex.New(params)             // params: the policy's gps.Params
//	for day, tr := range gpsindex.Days(upload) { // seal and index per day
//		err = idx.Add(day, tr)
//	}
//	matches, err := idx.Query(deviceTrace, params)
//	episodes := gps.Episodes(deviceTrace, matches, params)
//	exposed := gps.Exposed(episodes, params)
//	removed := idx.Drop(expiredDay)              // retention
//
// Query gives exactly what [gps.BruteForceMatches] gives against every
// trace added and not dropped: the same matched flags and the same
// closest distances, to the bit. So the episodes are identical too.
//
// # Memory layout
//
// Points are grouped by the day they are added under, and each day's
// points are stored in immutable segments. A segment covers up to 1,024
// time slots of a fixed width (12 times the time tolerance the index was
// made for: an hour by default) and stores each point in 12 bytes: latitude
// and longitude as int32 in 1e-7 degree (the resolution at which the gps
// package compares positions, so nothing is lost) and the time as a uint32
// offset in seconds from the segment's start. Points are sorted by (slot,
// spatial cell, time), so the points of one cell in one slot form a run,
// and an open-addressing hash table (16 bytes an entry, at most 70 % full)
// maps (slot, cell) to its run. Cells are cubes of a 3D grid over the unit
// vectors of positions, 8 times the distance threshold wide (at least
// 64 m): unlike a latitude/longitude grid, it has no special cases at the
// poles or the antimeridian. A point costs 12 bytes plus its share of the
// run table, which depends on how many points share a cell in a slot;
// BenchmarkQuery reports it (13 to 15 bytes a point on the synthetic city
// traces of package gpsbench). Within a run, points are in time order, so
// a query binary-searches the start of its time window.
//
// Adding a trace builds new segments; segments of the same day are merged
// when the older is less than twice the newer's size, so a day holds a
// logarithmic number of generations. Loading a whole day at once (as
// the backend does when it starts from its sealed store) gives one.
// Queries read an immutable snapshot without locks; Add and Drop are
// serialized and publish a new snapshot.
//
// # Exactness
//
// For each device point p the query visits the slots that overlap
// [p.Time − tolerance, p.Time + tolerance] and the cells that overlap a
// cube around p's unit vector whose half-width is the threshold angle plus
// a centimetre; a candidate passes cheap integer checks on its latitude and
// longitude difference (bounds derived from the haversine formula with the
// same centimetre of margin) before the exact comparison, which calls
// [gps.Position.Distance] on the same integer coordinates the brute force
// uses. Every pruning step only discards points whose true distance
// exceeds the threshold by at least a centimetre, while the floating-point
// error of the computed distances is below a nanometre at these scales, so
// no point that the brute force would accept is skipped, and the accepted
// ones are decided by the very same function. Property tests compare Query
// with gps.BruteForceMatches on random and adversarial traces (poles, the
// antimeridian, dense clusters, duplicate timestamps, the same place at
// different times, distances at the threshold to the centimetre).
//
// # Side channels
//
// Queries are not oblivious: which segments, table entries and points a
// query reads depends on where and when the device was, and a match reads
// more than a miss. A host that observes the enclave's memory accesses
// (page faults, cache timing) can learn which cells and slots a device
// visited, which is close to its trace. The TEE does not hide this; this
// package does nothing against it beyond keeping the data and answers
// inside the enclave. An oblivious scan costs a full pass over the index
// per check; see the package benchmarks for the brute-force rate.
package gpsindex

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/conftrace/conftrace/gps"
)

// Day is the unit of retention: [Index.Drop] removes every point added
// under a day. Queries are fastest when the points added under a day are
// the points recorded on that day, as [Days] splits them.
type Day uint32

// DayOf returns the day of a Unix time: days since 1970-01-01 UTC.
func DayOf(unix int64) Day { return Day(floorDiv(unix, 86400)) }

// Days splits a trace into the points of each UTC day, in order.
func Days(t gps.Trace) iter.Seq2[Day, gps.Trace] {
	return func(yield func(Day, gps.Trace) bool) {
		for i := 0; i < len(t); {
			d := DayOf(t[i].Time)
			j := i + 1
			for j < len(t) && DayOf(t[j].Time) == d {
				j++
			}
			if !yield(d, t[i:j:j]) {
				return
			}
			i = j
		}
	}
}

// ErrPoint is returned by Add and Query for points outside the valid
// ranges (see [gps.Trace.Validate]).
var ErrPoint = errors.New("gpsindex: invalid point")

// Index holds infected points. It is safe for concurrent use.
type Index struct {
	slotWidth int64   // seconds
	cellAngle float64 // cell edge on the unit sphere
	mu        sync.Mutex
	snap      atomic.Pointer[snapshot]
}

// snapshot is an immutable state of the index.
type snapshot struct {
	days map[Day][][]*segment // each day's generations, oldest first
	segs []*segment           // all segments, for queries
	n    int                  // points
}

// Stats describe an index's size.
type Stats struct {
	// Points is the number of points indexed.
	Points int
	// Bytes is the memory the index's arrays take.
	Bytes int
	// Segments is the number of segments.
	Segments int
}

// Minimum and maximum of the grid, see New.
const (
	minCellSize  = 64.0 // metres; keeps cell coordinates within 18 bits
	minSlotWidth = 60   // seconds
)

// New returns an empty index whose grid suits p: time slots 12 times
// p.TimeTolerance wide (at least a minute; an hour by default) and cells 8
// times p.DistanceMeters (at least 64 m; 80 m by default), the best of the
// grids BenchmarkGrid compares at 10^7 points of city traces. Queries with
// other parameters are exact too, only slower when they are much larger.
func New(p gps.Params) (*Index, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("gpsindex: %w", err)
	}
	return newIndex(max(12*p.ToleranceSeconds(), minSlotWidth), max(8*p.DistanceMeters, minCellSize)), nil
}

func newIndex(slotWidth int64, cellSize float64) *Index {
	x := &Index{slotWidth: slotWidth, cellAngle: cellSize / gps.EarthRadius}
	x.snap.Store(&snapshot{days: map[Day][][]*segment{}})
	return x
}

// Add indexes the points of t under day. The points need not be in time
// order, but must be valid (coordinates in range, times from 1970 to
// 2^40 s); otherwise Add adds nothing and returns an error wrapping
// [ErrPoint].
func (x *Index) Add(day Day, t gps.Trace) error {
	items := make([]item, len(t))
	for i, p := range t {
		if !(p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180) || p.Time < 0 || p.Time >= 1<<40 {
			return fmt.Errorf("%w: point %d: (%v, %v) at %d", ErrPoint, i, p.Lat, p.Lon, p.Time)
		}
		items[i] = x.item(p.Time, p.Position())
	}
	segs := x.build(items)
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.snap.Load()
	gens := append(slices.Clone(old.days[day]), segs)
	// Merge while the older generation is less than twice the newer.
	for len(gens) >= 2 && points(gens[len(gens)-2]) < 2*points(gens[len(gens)-1]) {
		merged := x.merge(gens[len(gens)-2], gens[len(gens)-1])
		gens = append(gens[:len(gens)-2], merged)
	}
	days := make(map[Day][][]*segment, len(old.days)+1)
	for d, g := range old.days {
		days[d] = g
	}
	days[day] = gens
	x.snap.Store(newSnapshot(days))
	return nil
}

// Drop removes the points added under day and returns how many.
func (x *Index) Drop(day Day) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.snap.Load()
	gens, ok := old.days[day]
	if !ok {
		return 0
	}
	days := make(map[Day][][]*segment, len(old.days))
	n := 0
	for d, g := range old.days {
		if d != day {
			days[d] = g
		}
	}
	for _, g := range gens {
		n += points(g)
	}
	x.snap.Store(newSnapshot(days))
	return n
}

// Days returns the days that hold points, in increasing order.
func (x *Index) Days() []Day {
	s := x.snap.Load()
	ds := make([]Day, 0, len(s.days))
	for d := range s.days {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

// Stats returns the index's size.
func (x *Index) Stats() Stats {
	s := x.snap.Load()
	st := Stats{Points: s.n, Segments: len(s.segs)}
	for _, sg := range s.segs {
		st.Bytes += sg.bytes()
	}
	return st
}

func newSnapshot(days map[Day][][]*segment) *snapshot {
	s := &snapshot{days: days}
	for _, gens := range days {
		for _, g := range gens {
			s.segs = append(s.segs, g...)
			s.n += points(g)
		}
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return int(a.minT - b.minT) })
	return s
}

func points(g []*segment) int {
	n := 0
	for _, s := range g {
		n += len(s.pts)
	}
	return n
}

// Query returns, for each point of device, whether an indexed point is
// within p's thresholds and the closest such distance: exactly
// gps.BruteForceMatches(device, indexed traces, p). It keeps no copy of
// device.
func (x *Index) Query(device gps.Trace, p gps.Params) ([]gps.Match, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("gpsindex: %w", err)
	}
	s := x.snap.Load()
	out := make([]gps.Match, len(device))
	tol := p.ToleranceSeconds()
	// The threshold plus a centimetre, as an angle: every pruning bound is
	// derived from it, so that pruning never discards a point whose
	// computed distance could be within the threshold.
	delta := (p.DistanceMeters*(1+1e-9) + 0.01) / gps.EarthRadius
	latBound := int64(math.Ceil(delta/radPerE7)) + 1
	lastBand, lastBound, lastCos2 := int32(-1), int64(-1), 0.0
	for i, d := range device {
		if !(d.Lat >= -90 && d.Lat <= 90 && d.Lon >= -180 && d.Lon <= 180) {
			clear(out)
			return nil, fmt.Errorf("%w: device point %d: (%v, %v)", ErrPoint, i, d.Lat, d.Lon)
		}
		q := query{
			pos:      d.Position(),
			t:        d.Time,
			tol:      tol,
			maxDist:  p.DistanceMeters,
			latBound: latBound,
			best:     math.Inf(1),
		}
		// The longitude bound grows with latitude: compute it at the
		// poleward edge of the point's 0.01° band, once per band.
		if band := abs32(q.pos.Lat) / lonBand; band != lastBand {
			lastBand = band
			edge := min((band+1)*lonBand, 90*e7)
			lastBound = lonBound(edge, delta, latBound)
			lastCos2 = cosFar2(edge, latBound)
		}
		q.lonBound = lastBound
		q.cos2 = lastCos2
		q.setSkip(p.DistanceMeters)
		ux, uy, uz := unit(q.pos)
		q.lo = [3]int64{x.cell(ux - delta), x.cell(uy - delta), x.cell(uz - delta)}
		q.hi = [3]int64{x.cell(ux + delta), x.cell(uy + delta), x.cell(uz + delta)}
		gLo, gHi := floorDiv(d.Time-tol, x.slotWidth), floorDiv(d.Time+tol, x.slotWidth)
		for _, sg := range s.segs {
			if sg.minT > d.Time+tol {
				break
			}
			if sg.maxT < d.Time-tol {
				continue
			}
			x.search(sg, &q, max(gLo, sg.g0), min(gHi, sg.g0+slotsPerSegment-1))
		}
		if q.best <= p.DistanceMeters {
			out[i] = gps.Match{Matched: true, Distance: q.best}
		}
	}
	return out, nil
}

// query is the state of the search for one device point.
type query struct {
	pos      gps.Position
	t, tol   int64
	maxDist  float64
	latBound int64 // E7 units; farther in latitude is farther than the threshold
	lonBound int64 // E7 units, or -1 for no bound
	lo, hi   [3]int64
	best     float64
	// cos2 and skip2 let the search skip, with two multiplications, a
	// point that cannot be closer than min(best, maxDist); see lowerBound2.
	cos2  float64
	skip2 float64
}

// Lower bound on the distance, to skip the haversine for points that
// cannot improve the answer. For angles of at most smallAngle (radians),
// sin x ≥ x(1 − x²/6), so with hav(d) = hav(Δφ) + cos φ1 cos φ2 hav(Δλ) and
// cos φ1 cos φ2 ≥ cos2:
//
//	d² ≥ (1 − boundSlack)·(Δφ² + cos2·Δλ²)
//
// The skip test adds skipMargin metres for the rounding of the haversine
// that Query would otherwise compute, so a point is skipped only when its
// computed distance could not have been within min(best, maxDist).
const (
	smallAngle = 0.01 // radians, about 64 km
	boundSlack = 1e-4
	skipMargin = 1e-3 // metres
)

// setSkip sets the squared bound above which lowerBound2 skips a point.
func (q *query) setSkip(bound float64) {
	r := (bound + skipMargin) / gps.EarthRadius
	q.skip2 = r * r / (1 - boundSlack)
}

// lowerBound2 returns a value whose square root, times
// sqrt(1 − boundSlack), is at most the angular distance from q to a point
// dLat and dLon (E7 units, dLon already wrapped) away.
func (q *query) lowerBound2(dLat, dLon int64) float64 {
	a := float64(dLat) * radPerE7
	b := float64(dLon) * radPerE7
	if a > smallAngle || a < -smallAngle {
		return 0 // outside the small-angle bound: never skip
	}
	if b > smallAngle || b < -smallAngle {
		return a * a
	}
	return a*a + q.cos2*b*b
}

// cosFar2 returns cos² of the most poleward latitude a point at most
// latBound E7 units from the band edge can have, or 0 past the pole.
func cosFar2(edge int32, latBound int64) float64 {
	far := float64(int64(edge)+latBound) * radPerE7
	if far >= math.Pi/2 {
		return 0
	}
	c := math.Cos(far)
	return c * c
}

// search visits global slots g0..g1 of sg.
func (x *Index) search(sg *segment, q *query, g0, g1 int64) {
	for g := g0; g <= g1; g++ {
		slot := uint64(g - sg.g0)
		for cx := q.lo[0]; cx <= q.hi[0]; cx++ {
			for cy := q.lo[1]; cy <= q.hi[1]; cy++ {
				for cz := q.lo[2]; cz <= q.hi[2]; cz++ {
					start, end := sg.find(slot<<cellBits | cellKey(cx, cy, cz))
					run := sg.pts[start:end]
					// A run is sorted by time: skip to the window's start
					// and stop at its end.
					from := q.t - q.tol - sg.base
					lo, hi := 0, len(run)
					for lo < hi {
						m := int(uint(lo+hi) >> 1)
						if int64(run[m].t) < from {
							lo = m + 1
						} else {
							hi = m
						}
					}
					for _, pt := range run[lo:] {
						if sg.base+int64(pt.t)-q.t > q.tol {
							break
						}
						dLat := int64(pt.lat) - int64(q.pos.Lat)
						if dLat > q.latBound || dLat < -q.latBound {
							continue
						}
						dLon := int64(pt.lon) - int64(q.pos.Lon)
						if dLon < 0 {
							dLon = -dLon
						}
						if dLon > 180*e7 {
							dLon = 360*e7 - dLon
						}
						if q.lonBound >= 0 && dLon > q.lonBound {
							continue
						}
						if q.lowerBound2(dLat, dLon) > q.skip2 {
							continue
						}
						if dist := q.pos.Distance(gps.Position{Lat: pt.lat, Lon: pt.lon}); dist <= q.maxDist && dist < q.best {
							q.best = dist
							q.setSkip(dist)
						}
					}
				}
			}
		}
	}
}

const (
	e7       = 1e7
	radPerE7 = math.Pi / 180 / e7
)

// lonBound returns the largest longitude difference, in E7 units, at which
// a point at most latBound E7 units away in latitude from latitude lat can
// be within the angle delta, or -1 if there is none (near the poles).
//
// By the haversine formula, hav(d) = hav(Δφ) + cos φ1 cos φ2 hav(Δλ) ≥
// cos φ1 cos φ2 hav(Δλ), and |φ2| ≤ |φ1| + latBound; so d ≤ delta implies
// hav(Δλ) ≤ hav(delta) / (cos φ1 cos(|φ1| + latBound)).
func lonBound(lat int32, delta float64, latBound int64) int64 {
	phi := math.Abs(float64(lat) * radPerE7) // lat is the band's poleward edge
	far := phi + float64(latBound)*radPerE7
	if far >= math.Pi/2-1e-6 {
		return -1
	}
	s := math.Sin(delta / 2)
	h := s * s / (math.Cos(phi) * math.Cos(far))
	if h >= 0.25 { // Δλ ≥ 60°: not worth bounding
		return -1
	}
	dLon := 2 * math.Asin(math.Sqrt(h))
	return int64(math.Ceil(dLon/radPerE7*(1+1e-9))) + 1
}

// lonBand is the width, in E7 units, of the latitude bands over which
// Query shares one longitude bound.
const lonBand = 100_000

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

// unit returns the unit vector of a position.
func unit(p gps.Position) (x, y, z float64) {
	lat, lon := float64(p.Lat)*radPerE7, float64(p.Lon)*radPerE7
	sl, cl := math.Sincos(lat)
	so, co := math.Sincos(lon)
	return cl * co, cl * so, sl
}

// Cell keys pack three 18-bit cell coordinates; the slot takes the
// remaining 10 bits.
const (
	coordBits       = 18
	cellBits        = 3 * coordBits
	slotsPerSegment = 1 << (64 - cellBits)
	coordBias       = 1 << (coordBits - 1)
)

// cell returns the grid coordinate of a unit-vector component.
func (x *Index) cell(v float64) int64 { return int64(math.Floor(v / x.cellAngle)) }

func cellKey(cx, cy, cz int64) uint64 {
	const m = 1<<coordBits - 1
	return uint64(cx+coordBias)&m<<(2*coordBits) | uint64(cy+coordBias)&m<<coordBits | uint64(cz+coordBias)&m
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// item is a point being built into segments.
type item struct {
	chunk int64  // global slot / slotsPerSegment
	key   uint64 // slot within the chunk << cellBits | cell key
	t     int64
	pos   gps.Position
}

func (x *Index) item(t int64, pos gps.Position) item {
	g := floorDiv(t, x.slotWidth)
	ux, uy, uz := unit(pos)
	chunk := floorDiv(g, slotsPerSegment)
	return item{
		chunk: chunk,
		key:   uint64(g-chunk*slotsPerSegment)<<cellBits | cellKey(x.cell(ux), x.cell(uy), x.cell(uz)),
		t:     t,
		pos:   pos,
	}
}
