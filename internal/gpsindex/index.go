package gpsindex

import (
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"

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
// times p.DistanceMeters (at least 64 m; 80 m by default), chosen among
// the grids BenchmarkGrid compares on city traces. Queries with other
// parameters are exact too, only slower when they are much larger.
func New(p gps.Params) (*Index, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("gpsindex: %w", err)
	}
	return newIndex(max(12*p.ToleranceSeconds(), minSlotWidth), max(8*p.DistanceMeters, minCellSize), defaultDenseMin), nil
}

// defaultDenseMin is the length from which a run is split by leaf,
// chosen among those BenchmarkGrid compares on city traces: a shorter
// run costs less to scan whole than its directory costs to keep and read.
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
// stored uploads: adding them one at a time rebuilds each day's points
// again every time the day doubles, where one Compact at the end builds
// each day once. Give it large batches (every Load lists the segments
// again) and call Compact or CompactParallel when done.
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
// uploads one at a time leave it) as one, so that queries read one
// generation of it instead of several (BenchmarkQueryLive measures the
// difference), and returns how many days it rebuilt. It merges without
// holding the index's lock, so Add, Drop and queries go on meanwhile; a
// day that Add or Drop changed under it is left for the next call. It
// uses one goroutine, so that queries keep the other CPUs.
func (x *Index) Compact() int { return x.CompactParallel(1) }

// CompactParallel is Compact with days rebuilt by up to workers
// goroutines at once: for the start-up, before any query, where the
// CPUs have nothing else to do (each worker holds a day's points in
// memory twice while it merges).
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
