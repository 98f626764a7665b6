package gpsindex

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/calendar"
)

const t0 = 1_709_294_400 // 2024-03-01T12:00:00Z

// offset returns the point dist metres from p at the bearing, on the
// sphere, rounded to 1e-7 degree.
func offset(p gps.Point, dist, bearing float64) gps.Point {
	d := dist / gps.EarthRadius
	lat1, lon1 := p.Lat*math.Pi/180, p.Lon*math.Pi/180
	lat2 := math.Asin(math.Sin(lat1)*math.Cos(d) + math.Cos(lat1)*math.Sin(d)*math.Cos(bearing))
	lon2 := lon1 + math.Atan2(math.Sin(bearing)*math.Sin(d)*math.Cos(lat1), math.Cos(d)-math.Sin(lat1)*math.Sin(lat2))
	lon := math.Remainder(lon2*180/math.Pi, 360)
	return mkPoint(p.Time, lat2*180/math.Pi, lon)
}

// mkPoint returns a point with coordinates rounded to 1e-7 degree.
func mkPoint(t int64, lat, lon float64) gps.Point {
	lat = max(min(lat, 90), -90)
	if lon > 180 {
		lon -= 360
	} else if lon < -180 {
		lon += 360
	}
	pos := gps.Point{Lat: lat, Lon: lon}.Position()
	return gps.Point{Time: t, Lat: float64(pos.Lat) / 1e7, Lon: float64(pos.Lon) / 1e7}
}

// scenario is one exactness test case.
type scenario struct {
	name     string
	device   gps.Trace
	infected []gps.Trace
	params   gps.Params
}

// walk returns n points starting at start, moving up to step metres and
// stepT seconds (at least minT) between points; times never decrease.
func walk(r *rand.Rand, start gps.Point, n int, step float64, minT, stepT int64) gps.Trace {
	tr := gps.Trace{start}
	for len(tr) < n {
		last := tr[len(tr)-1]
		next := offset(last, r.Float64()*step, r.Float64()*2*math.Pi)
		next.Time = last.Time + minT + r.Int64N(stepT-minT+1)
		tr = append(tr, next)
	}
	return tr
}

func randomParams(r *rand.Rand) gps.Params {
	p := gps.DefaultParams()
	p.DistanceMeters = []float64{0.5, 3, 10, 10, 37.5, 100, 1000}[r.IntN(7)]
	p.TimeTolerance = []time.Duration{0, time.Second, 30 * time.Second, 5 * time.Minute, 5 * time.Minute, time.Hour}[r.IntN(6)]
	return p
}

// scenarios returns random and adversarial cases.
func scenarios(r *rand.Rand, n int) []scenario {
	var out []scenario
	for i := range n {
		p := randomParams(r)
		var s scenario
		switch i % 8 {
		case 0: // a city anywhere on Earth, including the edges
			c := mkPoint(t0, r.Float64()*180-90, r.Float64()*360-180)
			s = scenario{name: "random place", device: walk(r, c, 60, 60, 0, 120)}
			for range 1 + r.IntN(5) {
				st := offset(c, r.Float64()*300, r.Float64()*2*math.Pi)
				st.Time = t0 + r.Int64N(3600) - 1800
				s.infected = append(s.infected, walk(r, st, 100, 30, 0, 90))
			}
		case 1: // around a pole, all longitudes
			lat := 90 - r.Float64()*0.002
			if r.IntN(2) == 0 {
				lat = -lat
			}
			c := mkPoint(t0, lat, r.Float64()*360-180)
			s = scenario{name: "pole", device: walk(r, c, 80, 40, 0, 60)}
			for range 3 {
				st := mkPoint(t0+r.Int64N(600), lat+(r.Float64()-0.5)*0.0005, r.Float64()*360-180)
				s.infected = append(s.infected, walk(r, st, 100, 40, 0, 60))
			}
		case 2: // straddling the antimeridian
			c := mkPoint(t0, r.Float64()*170-85, 180-r.Float64()*0.0002)
			s = scenario{name: "antimeridian", device: walk(r, c, 80, 15, 0, 60)}
			for range 3 {
				st := offset(c, r.Float64()*40, r.Float64()*2*math.Pi)
				st.Time = t0 + r.Int64N(600)
				s.infected = append(s.infected, walk(r, st, 100, 15, 0, 60))
			}
		case 3: // a dense cluster with duplicate timestamps
			c := mkPoint(t0, r.Float64()*120-60, r.Float64()*360-180)
			s = scenario{name: "dense cluster", device: walk(r, c, 60, 3, 0, 20)}
			for range 6 {
				st := offset(c, r.Float64()*8, r.Float64()*2*math.Pi)
				st.Time = t0 + r.Int64N(60)
				s.infected = append(s.infected, walk(r, st, 80, 3, 0, 2))
			}
		case 4: // the same place at times around the tolerance and days apart
			c := mkPoint(t0, r.Float64()*120-60, r.Float64()*360-180)
			tol := p.ToleranceSeconds()
			var inf gps.Trace
			for _, dt := range []int64{-86400 * 3, -tol - 1, -tol, 0, tol, tol + 1, 3600 * 30, 86400 * 9} {
				q := offset(c, r.Float64()*p.DistanceMeters*1.5, r.Float64()*2*math.Pi)
				q.Time = t0 + dt
				inf = append(inf, q)
			}
			slices.SortFunc(inf, func(a, b gps.Point) int { return int(a.Time - b.Time) })
			s = scenario{name: "same place, other times", device: gps.Trace{c, c, c}, infected: []gps.Trace{inf}}
		case 5: // distances at the threshold, to the bit
			// Cardinal directions from points where they align with the
			// grid's axes, or with a latitude or longitude bound, are
			// where pruning is tightest.
			lat := []float64{0, 0, r.Float64()*178 - 89, 45, 89.9999, -89.99}[r.IntN(6)] + (r.Float64()-0.5)*1e-4
			lon := []float64{0, 90, -90, 180, r.Float64()*360 - 180}[r.IntN(5)] + (r.Float64()-0.5)*1e-4
			c := mkPoint(t0, lat, lon)
			p.DistanceMeters = min(p.DistanceMeters, 999)
			var inf gps.Trace
			for k := range 20 {
				bearing := r.Float64() * 2 * math.Pi
				if r.IntN(4) != 0 {
					bearing = float64(r.IntN(4)) * math.Pi / 2
				}
				q := offset(c, p.DistanceMeters+(r.Float64()-0.5)*0.05, bearing)
				q.Time = t0 + int64(k)
				inf = append(inf, q)
			}
			// The threshold is one of the actual distances.
			p.DistanceMeters = gps.Distance(c, inf[r.IntN(len(inf))])
			if !(p.DistanceMeters > 0) {
				p.DistanceMeters = 1
			}
			s = scenario{name: "threshold", device: gps.Trace{c}, infected: []gps.Trace{inf}}
		case 6: // long traces over many days and segments
			c := mkPoint(t0, r.Float64()*120-60, r.Float64()*360-180)
			s = scenario{name: "many days", device: walk(r, c, 120, 100, 600, 3600)}
			for range 3 {
				st := offset(c, r.Float64()*200, r.Float64()*2*math.Pi)
				st.Time = t0 + r.Int64N(3600)
				s.infected = append(s.infected, walk(r, st, 200, 100, 300, 3000))
			}
		case 7: // duplicate device timestamps inside a crowd
			c := mkPoint(t0, r.Float64()*120-60, r.Float64()*360-180)
			var dev gps.Trace
			for k := range 30 {
				q := offset(c, r.Float64()*20, r.Float64()*2*math.Pi)
				q.Time = t0 + int64(k/5)*60
				dev = append(dev, q)
			}
			s = scenario{name: "duplicate timestamps", device: dev}
			for range 4 {
				st := offset(c, r.Float64()*20, r.Float64()*2*math.Pi)
				st.Time = t0 - 60
				s.infected = append(s.infected, walk(r, st, 50, 10, 0, 10))
			}
		}
		s.params = p
		out = append(out, s)
	}
	return out
}

// checkExact compares Query with the brute force, and returns the
// brute force's matches.
func checkExact(t *testing.T, x *Index, s scenario) []gps.Match {
	t.Helper()
	got, err := x.Query(s.device, s.params)
	if err != nil {
		t.Fatalf("%s: %v", s.name, err)
	}
	want := gps.RunningClosest(s.device, gps.BruteForceMatches(s.device, s.infected, s.params), s.params)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s, params %+v: device point %d %+v: index %+v, brute force %+v",
				s.name, s.params, i, s.device[i], got[i], want[i])
		}
	}
	if ge, we := gps.Episodes(s.device, got, s.params), gps.Episodes(s.device, want, s.params); !reflect.DeepEqual(ge, we) {
		t.Fatalf("%s: episodes differ: %+v, %+v", s.name, ge, we)
	}
	return want
}

// addAll indexes the traces split by day, one Add per trace and day.
func addAll(t *testing.T, x *Index, infected []gps.Trace) {
	t.Helper()
	for _, tr := range infected {
		for d, part := range Days(tr) {
			if err := x.Add(d, part); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestQueryExact(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	matched := map[string]int{}
	for _, s := range scenarios(r, 800) {
		x, err := New(s.params)
		if err != nil {
			t.Fatal(err)
		}
		addAll(t, x, s.infected)
		for _, m := range checkExact(t, x, s) {
			if m.Matched {
				matched[s.name]++
			}
		}
		// Query takes fixes in any order, though it is faster in time
		// order: a trace backwards reads the segments afresh at each fix.
		back := slices.Clone(s.device)
		slices.Reverse(back)
		s.device = back
		checkExact(t, x, s)
	}
	// The cases must exercise matches, or they prove little.
	for _, name := range []string{"random place", "pole", "antimeridian", "dense cluster", "same place, other times", "threshold", "many days", "duplicate timestamps"} {
		if matched[name] == 0 {
			t.Errorf("scenario %q never matched", name)
		}
	}
}

// TestQueryExactOtherGrids checks exactness when the grid does not suit
// the query: the finest grid, a coarse one, and parameters larger than
// the index was made for.
func TestQueryExactOtherGrids(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for _, s := range scenarios(r, 120) {
		if s.params.DistanceMeters > 100 {
			s.params.DistanceMeters = 100 // keeps the finest grid's cube small
		}
		for _, x := range []*Index{newIndex(minSlotWidth, minCellSize, defaultDenseMin), newIndex(7200, 5000, defaultDenseMin), newIndex(minSlotWidth, minCellSize, 1), newIndex(3600, 80, 3), mustNew(t, gps.DefaultParams())} {
			addAll(t, x, s.infected)
			checkExact(t, x, s)
		}
	}
}

func mustNew(t *testing.T, p gps.Params) *Index {
	x, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestAddMergeDrop(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	p := gps.DefaultParams()
	c := mkPoint(t0, 46.5, 6.6)
	var all []gps.Trace
	x := mustNew(t, p)
	// Many small uploads into the same days make generations that merge.
	for i := range 40 {
		st := offset(c, r.Float64()*100, r.Float64()*2*math.Pi)
		st.Time = t0 + int64(i)*1000
		tr := walk(r, st, 20+r.IntN(100), 20, 30, 90)
		all = append(all, tr)
		addAll(t, x, []gps.Trace{tr})
	}
	n := 0
	for _, tr := range all {
		n += len(tr)
	}
	st := x.Stats()
	if st.Points != n {
		t.Fatalf("Stats().Points = %d, want %d", st.Points, n)
	}
	if perDay := st.Segments / len(x.Days()); perDay > 8 {
		t.Errorf("%d segments for %d days: merging does not keep generations logarithmic", st.Segments, len(x.Days()))
	}
	device := walk(r, c, 500, 30, 20, 60)
	checkExact(t, x, scenario{name: "merged", device: device, infected: all, params: p})

	// Drop the first day: the index must equal the brute force over what
	// remains.
	day := x.Days()[0]
	var kept []gps.Trace
	dropped := 0
	for _, tr := range all {
		for d, part := range Days(tr) {
			if d == day {
				dropped += len(part)
			} else {
				kept = append(kept, part)
			}
		}
	}
	if got := x.Drop(day); got != dropped {
		t.Errorf("Drop = %d, want %d", got, dropped)
	}
	if got := x.Drop(day); got != 0 {
		t.Errorf("second Drop = %d, want 0", got)
	}
	if slices.Contains(x.Days(), day) {
		t.Errorf("day %d still listed", day)
	}
	checkExact(t, x, scenario{name: "after drop", device: device, infected: kept, params: p})
}

func TestInvalidInput(t *testing.T) {
	x := mustNew(t, gps.DefaultParams())
	bad := []gps.Point{
		{Time: t0, Lat: 91},
		{Time: t0, Lon: math.NaN()},
		{Time: -1},
		{Time: 1 << 41},
	}
	for _, p := range bad {
		if err := x.Add(0, gps.Trace{{Time: t0}, p}); err == nil {
			t.Errorf("Add accepted %+v", p)
		}
	}
	if x.Stats().Points != 0 {
		t.Error("a refused Add added points")
	}
	if _, err := x.Query(gps.Trace{{Time: t0, Lat: math.Inf(1)}}, gps.DefaultParams()); err == nil {
		t.Error("Query accepted an infinite latitude")
	}
	if _, err := x.Query(nil, gps.Params{}); err == nil {
		t.Error("Query accepted zero parameters")
	}
	if _, err := New(gps.Params{DistanceMeters: -1}); err == nil {
		t.Error("New accepted a negative distance")
	}
	// Empty inputs are fine.
	if err := x.Add(3, nil); err != nil {
		t.Errorf("empty Add: %v", err)
	}
	if m, err := x.Query(nil, gps.DefaultParams()); err != nil || len(m) != 0 {
		t.Errorf("empty Query: %v, %v", m, err)
	}
}

func TestDays(t *testing.T) {
	tr := gps.Trace{{Time: 86400*5 - 1}, {Time: 86400 * 5}, {Time: 86400*5 + 7}, {Time: 86400 * 9}}
	var got []string
	for d, part := range Days(tr) {
		got = append(got, fmt.Sprint(uint32(d), len(part)))
	}
	if want := []string{"4 1", "5 2", "9 1"}; !slices.Equal(got, want) {
		t.Errorf("Days = %v, want %v", got, want)
	}
}

// TestConcurrent runs queries while adding and dropping (for -race) and
// checks that every query sees a consistent state: before or after.
func TestConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	p := gps.DefaultParams()
	c := mkPoint(t0, -33.9, 151.2)
	x := mustNew(t, p)
	base := walk(r, c, 300, 10, 10, 60)
	addAll(t, x, []gps.Trace{base})
	device := walk(r, c, 200, 10, 20, 60)
	want := gps.RunningClosest(device, gps.BruteForceMatches(device, []gps.Trace{base}, p), p)
	extra := walk(r, offset(c, 500, 0), 300, 10, 10, 60) // far away: changes no answer
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 20 {
				got, err := x.Query(device, p)
				if err != nil || !slices.Equal(got, want) {
					t.Error("concurrent query differs")
					return
				}
			}
		})
	}
	for i := range 20 {
		if err := x.Add(calendar.Day(1000+i), extra); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			x.Drop(calendar.Day(1000 + i))
		}
	}
	wg.Wait()
}

// TestAngleSeries checks that the angle-addition shortcut stays within
// 1e-15 of math.Sincos, far inside the leaf margin, for every step it
// takes and around the poles and the antimeridian.
func TestAngleSeries(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for range 20000 {
		anchor := int32(r.Int64N(360*e7+1) - 180*e7)
		var a angle
		a.sincos(anchor)
		for range 8 {
			v := anchor + int32(r.Int64N(2*maxStep+1)-maxStep)
			s, c := a.sincos(v)
			ws, wc := math.Sincos(float64(v) * radPerE7)
			if math.Abs(s-ws) > 1e-15 || math.Abs(c-wc) > 1e-15 {
				t.Fatalf("anchor %d, v %d: got (%v, %v), want (%v, %v)", anchor, v, s, c, ws, wc)
			}
			if a.e7 != anchor {
				t.Fatalf("anchor moved from %d to %d within a step", anchor, a.e7)
			}
		}
	}
}

// TestDenseRuns checks that dense runs are built and queried: an index
// that splits every run and one that splits none give the brute force's
// answers on a crowd, and the splitting one holds directories.
func TestDenseRuns(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	p := gps.DefaultParams()
	c := mkPoint(t0, 51.5, -0.12)
	var crowd []gps.Trace
	for range 60 {
		crowd = append(crowd, walk(r, offset(c, r.Float64()*40, r.Float64()*2*math.Pi), 120, 3, 30, 90))
	}
	device := walk(r, c, 150, 4, 30, 60)
	s := scenario{name: "crowd", device: device, infected: crowd, params: p}
	matched := 0
	for _, dense := range []int{1, 50, 1 << 30} {
		x := newIndex(3600, 80, dense)
		addAll(t, x, crowd)
		for _, m := range checkExact(t, x, s) {
			if m.Matched {
				matched++
			}
		}
		dirs := 0
		for _, sg := range x.snap.Load().segs {
			dirs += len(sg.dirs)
		}
		if (dirs > 0) != (dense < 1<<30) {
			t.Errorf("denseMin %d: %d directories", dense, dirs)
		}
	}
	if matched == 0 {
		t.Error("the crowd never matched")
	}
}

// TestCompact checks that compacting a day fed one trace at a time leaves
// one generation per day and the same answers.
func TestCompact(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	p := gps.DefaultParams()
	c := mkPoint(t0, 40.4, -3.7)
	x := mustNew(t, p)
	var all []gps.Trace
	for range 40 {
		tr := walk(r, offset(c, r.Float64()*200, r.Float64()*2*math.Pi), 50, 20, 30, 90)
		all = append(all, tr)
		addAll(t, x, []gps.Trace{tr})
	}
	device := walk(r, c, 200, 30, 30, 90)
	s := scenario{name: "compact", device: device, infected: all, params: p}
	before := checkExact(t, x, s)
	if !slices.ContainsFunc(before, func(m gps.Match) bool { return m.Matched }) {
		t.Fatal("the device never matched: the test proves little")
	}
	days := len(x.Days())
	if generations(x) <= days {
		t.Fatalf("%d generations over %d days before compacting: the test proves nothing", generations(x), days)
	}
	x.Compact()
	if generations(x) != days {
		t.Errorf("%d generations over %d days after compacting, want one a day", generations(x), days)
	}
	if after := checkExact(t, x, s); !slices.Equal(before, after) {
		t.Error("compacting changed the answers")
	}
	if x.Stats().Points != 40*50 {
		t.Errorf("%d points after compacting, want %d", x.Stats().Points, 40*50)
	}
}

// generations returns how many generations x's days are held in.
func generations(x *Index) (n int) {
	for _, g := range x.snap.Load().days {
		n += len(g)
	}
	return n
}

// TestLoad loads traces without merging, as the backend's start-up does,
// and checks that queries are exact before and after CompactParallel.
func TestLoad(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	p := gps.DefaultParams()
	c := mkPoint(t0, 48.9, 2.3)
	x := mustNew(t, p)
	var all []gps.Trace
	loads := 0
	for range 30 {
		tr := walk(r, offset(c, r.Float64()*200, r.Float64()*2*math.Pi), 50, 20, 30, 90)
		all = append(all, tr)
		for d, dt := range Days(tr) {
			if err := x.Load(d, dt); err != nil {
				t.Fatal(err)
			}
			loads++
		}
	}
	if gens := generations(x); gens != loads {
		t.Fatalf("%d generations after %d loads: Load merged", gens, loads)
	}
	s := scenario{name: "load", device: walk(r, c, 200, 30, 30, 90), infected: all, params: p}
	before := checkExact(t, x, s)
	if !slices.ContainsFunc(before, func(m gps.Match) bool { return m.Matched }) {
		t.Fatal("the device never matched: the test proves little")
	}
	if n := x.CompactParallel(3); n != len(x.Days()) {
		t.Errorf("CompactParallel rebuilt %d days of %d", n, len(x.Days()))
	}
	if gens := generations(x); gens != len(x.Days()) {
		t.Errorf("%d generations over %d days after compacting, want one a day", gens, len(x.Days()))
	}
	if after := checkExact(t, x, s); !slices.Equal(before, after) {
		t.Error("compacting changed the answers")
	}
}

// TestCompactConcurrent compacts while traces are added and queried (for
// -race) and checks that nothing added is lost.
func TestCompactConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	p := gps.DefaultParams()
	c := mkPoint(t0, 35.7, 139.7)
	x := mustNew(t, p)
	var traces []gps.Trace
	for range 60 {
		traces = append(traces, walk(r, offset(c, r.Float64()*300, r.Float64()*2*math.Pi), 30, 20, 30, 90))
	}
	device := walk(r, c, 100, 30, 30, 90)
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, tr := range traces {
			if err := x.Add(calendar.DayOfUnix(tr[0].Time), tr); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range 30 {
			x.Compact()
			if _, err := x.Query(device, p); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	x.Compact()
	if got := x.Stats().Points; got != 60*30 {
		t.Fatalf("%d points after concurrent compaction, want %d", got, 60*30)
	}
	checkExact(t, x, scenario{name: "compacted", device: device, infected: traces, params: p})
}
