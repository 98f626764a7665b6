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
// trace added and not dropped, in the form [gps.RunningClosest] puts it:
// the same matched flags, and for each matched fix the closest distance
// of its episode so far, to the bit. So the episodes are identical.
//
// # Memory layout
//
// Points are grouped by the day they are added under, and each day's
// points are stored in immutable segments. A segment covers up to 1,024
// time slots of a fixed width (12 times the time tolerance the index was
// made for: an hour by default) and stores each point in 12 bytes: latitude
// and longitude as int32 in 1e-7 degree (the resolution at which the gps
// package compares positions, so nothing is lost) and the time as a uint32
// offset in seconds from the segment's start. Cells are cubes of a 3D grid
// over the unit vectors of positions, 8 times the distance threshold wide
// (at least 64 m): unlike a latitude/longitude grid, it has no special
// cases at the poles or the antimeridian. The points of one cell in one
// slot form a run, sorted by time, and an open-addressing hash table (16
// bytes an entry, at most 70 % full) maps (slot, cell) to its run. Runs
// are stored cell by cell, and a cell's runs slot by slot: a device that
// stays in a place for hours reads the next hour's run, and its table
// entry, next to the last (checks 5% to 12% faster at 10^8 points than
// with runs stored slot by slot).
//
// A dense run (128 points or more: a busy building, a station) is split
// further into 4×4×4 leaves (20 m wide at the default grid, twice the
// distance threshold, so that a fix reaches at most two leaves along each
// axis) and sorted by leaf, then time; a 16-byte directory per dense run
// tells which leaves hold points and where each starts. A query reads
// the leaf it falls in first, which usually holds a close point, and then
// only the neighbouring leaves whose box is still closer than the best
// distance found: a few fixes instead of every fix of the hour. (Leaves
// of 10 m, 8×8×8, made checks 2% to 6% slower at 10^8 points: a fix
// reached up to 27 of them.)
//
// A point costs 12 bytes plus its share of the table and directories,
// which depends on how many points share a cell in a slot; BenchmarkQuery
// reports it (12.5 to 15 bytes a point on the synthetic city traces of
// package gpsbench). On Linux a new segment's arrays are backed by huge
// pages where the kernel allows it (see hugePages): a check reads a few
// points in each of many places, and with 4 KiB pages nearly every such
// read also missed the TLB. They share one allocation, which from 64 MiB
// on starts at a huge page, for at most 2 MiB of padding (see
// segment.alloc).
//
// Adding a trace builds new segments; segments of the same day are merged
// when the older is less than twice the newer's size, so a day holds a
// logarithmic number of generations, which every query reads. Compact
// rebuilds each day as one generation, beside queries and Adds; the
// backend compacts hourly. Load adds without merging, for the start-up,
// which loads its sealed store in batches and then compacts once.
// Queries read an immutable snapshot without locks; Add, Drop and the
// swaps of Compact are serialized and publish a new snapshot.
//
// # Exactness
//
// For each device point p the query visits the slots that overlap
// [p.Time − tolerance, p.Time + tolerance], the cells, and in dense runs
// the leaves, that can hold a point within the threshold, and the points
// of those runs and leaves within the time window. For each such point it
// computes a lower bound of the distance in a few multiplications (see
// lowerBound2) and keeps the point as a candidate if the bound does not
// exclude it; the exact distance, [gps.Position.Distance] on the same
// integer coordinates the brute force uses, is then computed for the
// candidate with the least bound and for any other whose bound does not
// exclude it from beating the best. Every pruning step (cells, leaves,
// bounds) only discards points whose distance exceeds the threshold, or
// the best distance found, by at least a millimetre, while the
// floating-point error of the computed distances and unit vectors is
// below a micrometre at these scales; so no point the brute force would
// pick is skipped, and the distance reported is computed by the very same
// function.
//
// Within an episode (a fix matched, and the one before it matched at
// most MaxGap earlier) a fix needs less: to be matched, and whether a
// point is closer than the episode's closest distance so far. Once a
// candidate is proven within the threshold by an upper bound of its
// distance (see provenWithin), the bounds drop to that closest distance,
// which after a few fixes in a busy building leaves only the fix's own
// leaf to read, and usually no haversine to compute.
//
// Property tests compare Query with gps.BruteForceMatches on
// random and adversarial traces (poles, the antimeridian, dense clusters,
// duplicate timestamps, the same place at different times, distances at
// the threshold to the centimetre), on grids where every run is dense and
// where none is.
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
	"time"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/calendar"
)

// Days splits a trace into the points of each UTC day, in order. Queries
// are fastest when the points added under a day are the points recorded on
// that day, as Days splits them.
func Days(t gps.Trace) iter.Seq2[calendar.Day, gps.Trace] {
	return func(yield func(calendar.Day, gps.Trace) bool) {
		for i := 0; i < len(t); {
			d := calendar.DayOfUnix(t[i].Time)
			j := i + 1
			for j < len(t) && calendar.DayOfUnix(t[j].Time) == d {
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
	perCell   float64 // cells per unit of the unit vectors' components
	denseMin  int     // runs of at least this many points are split by leaf
	mu        sync.Mutex
	snap      atomic.Pointer[snapshot]
}

// snapshot is an immutable state of the index.
type snapshot struct {
	days map[calendar.Day][][]*segment // each day's generations, oldest first
	segs []*segment                    // all segments by minT, for queries
	// reach[i] is the latest maxT of segs[:i+1]: a query skips the
	// segments before the first that reaches its time.
	reach []int64
	n     int // points
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
// grids BenchmarkGrid compares at 10^8 points of city traces. Queries with
// other parameters are exact too, only slower when they are much larger.
func New(p gps.Params) (*Index, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("gpsindex: %w", err)
	}
	return newIndex(max(12*p.ToleranceSeconds(), minSlotWidth), max(8*p.DistanceMeters, minCellSize), defaultDenseMin), nil
}

// defaultDenseMin is the length from which a run is split by leaf, the
// best of those BenchmarkGrid compares on city traces at 10^8 points.
const defaultDenseMin = 128

func newIndex(slotWidth int64, cellSize float64, denseMin int) *Index {
	x := &Index{slotWidth: slotWidth, perCell: gps.EarthRadius / cellSize, denseMin: max(denseMin, 1)}
	x.snap.Store(&snapshot{days: map[calendar.Day][][]*segment{}})
	return x
}

// Add indexes the points of t under day. The points need not be in time
// order, but must be valid (coordinates in range, times from 1970 to
// 2^40 s); otherwise Add adds nothing and returns an error wrapping
// [ErrPoint].
func (x *Index) Add(day calendar.Day, t gps.Trace) error { return x.add(day, t, true) }

// Load adds t under day like Add, but leaves the day's generations
// unmerged until the next Compact. It is for rebuilding an index from
// stored uploads: adding them one at a time merges each day's points a
// dozen times over (at 10^7 points, 35 s of Adds and 6 s of Compact
// against 7 s for whole days). Give it large batches (every Load lists
// the segments again) and call Compact or CompactParallel when done.
func (x *Index) Load(day calendar.Day, t gps.Trace) error { return x.add(day, t, false) }

func (x *Index) add(day calendar.Day, t gps.Trace, merge bool) error {
	if len(t) > maxSegment {
		return fmt.Errorf("gpsindex: %d points in one Add, at most %d", len(t), maxSegment)
	}
	items := make([]item, len(t))
	for i, p := range t {
		if !(p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180) || p.Time < 0 || p.Time >= 1<<40 {
			return fmt.Errorf("%w: point %d: (%v, %v) at %d", ErrPoint, i, p.Lat, p.Lon, p.Time)
		}
		items[i] = x.item(p.Time, p.Position())
	}
	segs := x.build(items)
	if len(segs) == 0 {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.snap.Load()
	gens := append(slices.Clone(old.days[day]), segs)
	// Merge while the older generation is less than twice the newer (and
	// the result fits a segment).
	for merge && len(gens) >= 2 && points(gens[len(gens)-2]) < 2*points(gens[len(gens)-1]) &&
		points(gens[len(gens)-2])+points(gens[len(gens)-1]) <= maxSegment {
		merged := x.merge(gens[len(gens)-2], gens[len(gens)-1])
		gens = append(gens[:len(gens)-2], merged)
	}
	days := make(map[calendar.Day][][]*segment, len(old.days)+1)
	for d, g := range old.days {
		days[d] = g
	}
	days[day] = gens
	x.snap.Store(newSnapshot(days))
	return nil
}

// Compact rebuilds every day held in more than one generation (as
// uploads one at a time leave it) as one, which makes queries several
// times faster (see BenchmarkQueryLive), and returns how many days it
// rebuilt. It merges without holding the index's lock, so Add, Drop and
// queries go on meanwhile; a day that Add or Drop changed under it is
// left for the next call. It uses one goroutine, so that queries keep
// the other CPUs.
func (x *Index) Compact() int { return x.CompactParallel(1) }

// CompactParallel is Compact with days rebuilt by up to workers
// goroutines at once: for the start-up, before any query, where it
// divides the time of compaction by the CPUs (each takes a day's points
// in memory twice while it merges).
func (x *Index) CompactParallel(workers int) int {
	days := make(chan calendar.Day)
	var n atomic.Int64
	var wg sync.WaitGroup
	gens := x.snap.Load().days
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range days {
				if x.compactDay(d, gens[d]) {
					n.Add(1)
				}
			}
		}()
	}
	for d, g := range gens {
		if len(g) >= 2 {
			days <- d
		}
	}
	close(days)
	wg.Wait()
	return int(n.Load())
}

// compactDay rebuilds the generations gens of day d as one, unless they
// hold more points than a segment or changed meanwhile.
func (x *Index) compactDay(d calendar.Day, gens [][]*segment) bool {
	var all []*segment
	for _, g := range gens {
		all = append(all, g...)
	}
	if points(all) > maxSegment {
		return false
	}
	return x.replace(d, gens, x.merge(all, nil))
}

// replace swaps the generations old of day d for merged, if they are
// still the day's oldest.
func (x *Index) replace(d calendar.Day, old [][]*segment, merged []*segment) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.snap.Load()
	cur := s.days[d]
	if len(cur) < len(old) {
		return false
	}
	for i, g := range old {
		// Generations are immutable: the same first segment and length
		// is the same generation.
		if len(cur[i]) != len(g) || len(g) > 0 && cur[i][0] != g[0] {
			return false
		}
	}
	days := make(map[calendar.Day][][]*segment, len(s.days))
	for k, g := range s.days {
		days[k] = g
	}
	days[d] = append([][]*segment{merged}, cur[len(old):]...)
	x.snap.Store(newSnapshot(days))
	return true
}

// Drop removes the points added under day and returns how many.
func (x *Index) Drop(day calendar.Day) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.snap.Load()
	gens, ok := old.days[day]
	if !ok {
		return 0
	}
	days := make(map[calendar.Day][][]*segment, len(old.days))
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
func (x *Index) Days() []calendar.Day {
	s := x.snap.Load()
	ds := make([]calendar.Day, 0, len(s.days))
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

func newSnapshot(days map[calendar.Day][][]*segment) *snapshot {
	s := &snapshot{days: days}
	for _, gens := range days {
		for _, g := range gens {
			s.segs = append(s.segs, g...)
			s.n += points(g)
		}
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return int(a.minT - b.minT) })
	s.reach = make([]int64, len(s.segs))
	for i, sg := range s.segs {
		s.reach[i] = sg.maxT
		if i > 0 {
			s.reach[i] = max(s.reach[i], s.reach[i-1])
		}
	}
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
		if band := abs32(q.pos.Lat) / lonBand; band != lastBand {
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
// device's consecutive fixes are close, and math.Sincos was a fifth of
// the cost of a query.
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
	// stays a division, and these were 5% of a check.
	sh := h * (1 - h2*(1.0/6))       // h − h³/6
	ch := 1 - h2*0.5*(1-h2*(1.0/12)) // 1 − h²/2 + h⁴/24
	return a.s*ch + a.c*sh, a.c*ch - a.s*sh
}

// candidate is an indexed point that passed the lower bound.
type candidate struct {
	m        uint64 // lowerBound2
	lat, lon int32
}

// maxCandidates bounds the scratch space of a query: when that many
// candidates are waiting, they are settled before the scan goes on.
const maxCandidates = 1024

// The exact distance (a haversine: four trigonometric functions, a square
// root and an arcsine) is the expensive step, so the scan computes only a
// lower bound for each point, in integer arithmetic and without
// unpredictable branches, and keeps the points that pass. For angles of
// at most smallAngle (radians), sin x ≥ x(1 − x²/6), so with
// hav(d) = hav(Δφ) + cos φ1 cos φ2 hav(Δλ), cos φ1 cos φ2 ≥ cos2, and
// hav increasing on [0, π] (which allows clamping Δφ and Δλ at
// smallAngle):
//
//	d² ≥ (1 − boundSlack)·(min(Δφ, smallAngle)² + cos2·min(Δλ, smallAngle)²)
//
// The scan computes the right-hand side's sum in units of
// radPerE7²/boundScale, from the differences in E7 units clamped at
// clampE7 (below smallAngle) and cos2 rounded down to a multiple of
// 1/boundScale: a lower bound of the sum, exactly, with no rounding.
// settle then computes the exact distance of the candidate with the least
// bound first, which is almost always the closest, and of the others only
// when their bound does not exclude them: usually none. The skip test adds
// skipMargin metres for the rounding of the haversine, so a point is
// dropped only when its computed distance could not have been within
// min(best, maxDist).
const (
	smallAngle = 0.001 // radians, about 6.4 km: above gps.MaxDistance
	boundSlack = 1e-4
	skipMargin = 1e-3 // metres
	// clampE7 is smallAngle in E7 units, rounded down.
	clampE7 = 572_957
	// boundScale keeps the sum within a uint64: 2·clampE7²·boundScale < 2^64.
	boundScale = 1 << 24
)

// skip2For returns the bound above which lowerBound2 excludes a point
// from being within bound metres, rounded up.
func skip2For(bound float64) uint64 {
	// Constant factors, which the compiler computes exactly and rounds
	// once: a division costs more than the rest of a setBound.
	const perMetre = 1 / gps.EarthRadius / radPerE7
	r := (bound + skipMargin) * perMetre
	return uint64(math.Ceil(r*r*(boundScale/(1-boundSlack)*(1+1e-9)))) + 1
}

// setBound sets skip2 and chord2 for points within bound metres. A leaf
// is skipped when the straight-line distance between unit vectors (the
// chord, never longer than the arc) from the point to the leaf's box
// exceeds the bound plus skipMargin plus leafMargin (which covers the
// rounding of unit vectors and leaf coordinates).
func (q *query) setBound(bound float64) {
	q.skip2 = skip2For(bound)
	r := (bound+skipMargin)*(1/gps.EarthRadius)*q.perLeaf + leafMargin
	q.chord, q.chord2 = r, r*r
}

// leafMargin is a distance in leaf edges (about 2e-7 m at the default
// grid) that absorbs the rounding of unit vectors and leaf coordinates:
// at most a few times 1e-10 leaf edges, as leaf coordinates are below
// 10^6 and computed with relative errors of about 1e-16.
const leafMargin = 1e-8

// lowerBound2 returns the lower bound of a point dLat and dLon (E7
// units, dLon wrapped into [0, 180°]) away from q, in units of
// radPerE7²/boundScale, provided the point's latitude is within the band
// cos2 was computed for; a point outside it has a bound above skip2
// through its latitude alone.
func (q *query) lowerBound2(dLat, dLon int64) uint64 {
	a := uint64(min(abs64(dLat), clampE7))
	b := uint64(min(dLon, clampE7))
	return a*a*boundScale + q.cos2*(b*b)
}

// settle computes the exact distances the waiting candidates need and
// updates best and the bounds. Most runs and leaves leave none waiting:
// settle is small enough to be inlined, so that they pay no call.
func (q *query) settle() {
	if len(q.cands) > 0 {
		q.settleCands()
	}
}

func (q *query) settleCands() {
	first := 0
	for i, c := range q.cands {
		if c.m < q.cands[first].m {
			first = i
		}
	}
	// Unless the scan proved the fix matched (and dropped the bound to
	// the episode's closest), the least bound is computed in any case.
	if !q.matched || q.cands[first].m <= q.skip2 {
		q.exact(q.cands[first])
	}
	for i, c := range q.cands {
		if i != first && c.m <= q.skip2 {
			q.exact(c)
		}
	}
	q.cands = q.cands[:0]
}

// exact computes a candidate's distance as the brute force does.
func (q *query) exact(c candidate) {
	if dist := q.pos.Distance(gps.Position{Lat: c.lat, Lon: c.lon}); dist <= q.maxDist && dist < q.best {
		q.best, q.matched = dist, true
		q.setBound(min(dist, q.epBest))
	}
}

// provenWithin reports whether candidate c is certainly within maxDist:
// whether its computed distance would be at most maxDist. With
// hav(d) = sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2), sin x ≤ x and
// asin x ≤ x(1 + x²), d ≤ R·√(Δφ² + cosMax2·Δλ²)·(1 + 1e-6) at these
// distances; the test keeps skipMargin for the rounding of the
// haversine, and a relative 1e-6 for its own.
func (q *query) provenWithin(c candidate) bool {
	dLat := float64(int64(c.lat) - int64(q.pos.Lat))
	dl := abs64(int64(c.lon) - int64(q.pos.Lon))
	dLon := float64(min(dl, 360*e7-dl))
	lim := (q.maxDist - skipMargin) / gps.EarthRadius / radPerE7 / (1 + 2e-6)
	return dLat*dLat+q.cosMax2*dLon*dLon <= lim*lim
}

// latBoundFor returns how far, in E7 units of latitude, a point can be
// and still pass the lower bound for points within dist metres.
func latBoundFor(dist float64) int64 {
	delta := (dist + skipMargin) / gps.EarthRadius / math.Sqrt(1-boundSlack) * (1 + 1e-9)
	return int64(math.Ceil(delta/radPerE7)) + 1
}

// bandCos2 returns the cos2 of lowerBound2 for points in latitude band
// band (|latitude| / lonBand), in units of 1/boundScale rounded down.
func bandCos2(band int32, latBound int64) uint64 {
	return uint64(cosFar2(min((band+1)*lonBand, 90*e7), latBound) * boundScale)
}

// bandCosMax2 returns an upper bound of cos φ1·cos φ2 for a point in
// latitude band band and one at most latBound E7 units from it: cos² at
// the latitude nearest the equator either can have.
func bandCosMax2(band int32, latBound int64) float64 {
	near := float64(int64(band)*lonBand-latBound) * radPerE7
	if near <= 0 {
		return 1
	}
	c := math.Cos(near)
	return c * c * (1 + 1e-12)
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

// scan adds the points of pts up to time to that pass the lower bound to
// the candidates. Most points fail it: the loop only computes bounds, and
// take, kept out of line, handles the rest, so that the loop's registers
// hold its own values rather than take's constants.
func (q *query) scan(pts []point, to int64) {
	if q.plain {
		q.scanPlain(pts, to)
		return
	}
	lat, lon := int64(q.pos.Lat), int64(q.pos.Lon)
	for _, pt := range pts {
		if int64(pt.t) > to {
			break
		}
		dLon := abs64(int64(pt.lon) - lon)
		dLon = min(dLon, 360*e7-dLon)
		if m := q.lowerBound2(int64(pt.lat)-lat, dLon); m <= q.skip2 {
			q.take(candidate{m: m, lat: pt.lat, lon: pt.lon})
		}
	}
}

// scanPlain is scan for a plain fix (see plainReach): the differences of
// every point it reads are below clampE7 and do not wrap around the
// antimeridian, so lowerBound2 is the same without its clamps and wrap,
// and this loop, with half the instructions, computes the same bounds.
func (q *query) scanPlain(pts []point, to int64) {
	lat, lon, cos2, skip2 := int64(q.pos.Lat), int64(q.pos.Lon), q.cos2, q.skip2
	for _, pt := range pts {
		if int64(pt.t) > to {
			break
		}
		dLat, dLon := int64(pt.lat)-lat, int64(pt.lon)-lon
		if m := uint64(dLat*dLat)*boundScale + cos2*uint64(dLon*dLon); m <= skip2 {
			q.take(candidate{m: m, lat: pt.lat, lon: pt.lon})
			skip2 = q.skip2
		}
	}
}

// A fix is plain when every point its search can read is within
// plainReach radians of it, and it lies within plainLat of the equator
// and plainLon of the prime meridian. A point that close differs from
// it by under plainReach (57,296 E7 units) in latitude and by under
// 2·asin(sin(plainReach/2)/cos(80.006°)) < 5.8e-4 rad (330,000 E7 units)
// in longitude: both below clampE7, and the point's longitude is within
// ±179.04°, so the difference does not wrap. The default grid's reach
// is 2.3e-5 rad (149 m).
const (
	plainReach = 1e-4
	plainLat   = 80 * e7
	plainLon   = 179 * e7
)

// searchReach returns an upper bound, in radians, of the angle between
// a fix and any point of the cells a search for points within dist
// metres visits: their boxes are within the bound's chord of the fix
// (see search; the bound never exceeds dist), and a point is within its
// box's diagonal of the box. The angle of a chord c is 2·asin(c/2), at
// most 1.001·c for the chords that matter here (under 0.1).
func searchReach(dist, perCell float64) float64 {
	chord := (dist+skipMargin)/gps.EarthRadius + leafMargin/(leavesPerAxis*perCell) + math.Sqrt(3)/perCell
	return 1.001 * chord
}

// take adds a candidate that passed the lower bound.
//
//go:noinline
func (q *query) take(c candidate) {
	if !q.matched && q.epBest < q.maxDist && q.provenWithin(c) {
		// The episode's closest distance so far is known: the rest of
		// the search looks only for points closer than it.
		q.matched = true
		q.setBound(q.epBest)
		if c.m > q.skip2 {
			return
		}
	}
	q.cands = append(q.cands, c)
	if len(q.cands) == maxCandidates {
		q.settle()
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
		// toss (checks were 0.2% to 1% faster without the branch).
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

const (
	e7       = 1e7
	radPerE7 = math.Pi / 180 / e7
)

// lonBand is the width, in E7 units, of the latitude bands over which
// Query shares one cos².
const lonBand = 100_000

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// unit returns the unit vector of a position.
func unit(p gps.Position) [3]float64 {
	lat, lon := float64(p.Lat)*radPerE7, float64(p.Lon)*radPerE7
	sl, cl := math.Sincos(lat)
	so, co := math.Sincos(lon)
	return [3]float64{cl * co, cl * so, sl}
}

// Cell keys pack three 18-bit cell coordinates; a run's key adds the
// slot in the remaining 10 bits.
const (
	coordBits       = 18
	cellBits        = 3 * coordBits
	slotBits        = 64 - cellBits
	slotsPerSegment = 1 << slotBits
	coordBias       = 1 << (coordBits - 1)
)

// runKey is the key of a run: the cell, then the slot, so that a cell's
// runs of consecutive slots are stored one after the other.
func runKey(slot, cell uint64) uint64 { return cell<<slotBits | slot }

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
	key   uint64 // runKey(slot within the chunk, cell key)
	t     int64
	pos   gps.Position
	leaf  uint16 // leafIndex within the cell
}

func (x *Index) item(t int64, pos gps.Position) item {
	g := floorDiv(t, x.slotWidth)
	u := unit(pos)
	var c, l [3]int64
	for a := range 3 {
		// The query computes u * perCell * leavesPerAxis the same way.
		w := u[a] * x.perCell
		c[a] = int64(math.Floor(w))
		l[a] = int64(math.Floor(w*leavesPerAxis)) - c[a]*leavesPerAxis
	}
	chunk := floorDiv(g, slotsPerSegment)
	return item{
		chunk: chunk,
		key:   runKey(uint64(g-chunk*slotsPerSegment), cellKey(c[0], c[1], c[2])),
		t:     t,
		pos:   pos,
		leaf:  uint16(leafIndex(l[0], l[1], l[2])),
	}
}
