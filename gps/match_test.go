package gps

import (
	"reflect"
	"testing"
	"time"
)

// at returns a point t0+minutes at the given offset in metres north of a
// base position, quantized as parsers do.
func at(minutes int, north float64) Point {
	const t0 = 1_700_000_000
	return quantize(Point{Time: t0 + int64(minutes)*60, Lat: 46.5 + north/111_195.08, Lon: 6.6})
}

func TestBruteForceMatches(t *testing.T) {
	p := DefaultParams()
	infected := []Trace{{at(0, 0), at(10, 0)}, {at(30, 50)}}
	device := Trace{
		at(-6, 0),  // 6 minutes before: outside ±5
		at(-5, 0),  // exactly 5 minutes before: inside
		at(0, 9),   // 9 m away, same time
		at(0, 11),  // 11 m away: outside 10 m
		at(20, 0),  // 10 minutes after the last point at this place
		at(30, 45), // 5 m from the second trace
	}
	got := BruteForceMatches(device, infected, p)
	wantMatched := []bool{false, true, true, false, false, true}
	for i, m := range got {
		if m.Matched != wantMatched[i] {
			t.Errorf("device point %d: matched %v, want %v", i, m.Matched, wantMatched[i])
		}
		if m.Matched {
			// The closest infected point within the time tolerance.
			best := 1e9
			for _, tr := range infected {
				for _, q := range tr {
					if d := Distance(device[i], q); abs(q.Time-device[i].Time) <= 300 && d < best {
						best = d
					}
				}
			}
			if m.Distance != best {
				t.Errorf("device point %d: distance %v, want %v", i, m.Distance, best)
			}
		} else if m.Distance != 0 {
			t.Errorf("device point %d: unmatched with distance %v", i, m.Distance)
		}
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestEpisodes(t *testing.T) {
	p := DefaultParams() // MaxGap 10 minutes
	device := Trace{at(0, 0), at(5, 0), at(10, 0), at(15, 0), at(40, 0), at(55, 0), at(60, 0), at(61, 0)}
	y := func(d float64) Match { return Match{Matched: true, Distance: d} }
	n := Match{}
	tests := []struct {
		name    string
		matches []Match
		want    []Episode
	}{
		{"none", []Match{n, n, n, n, n, n, n, n}, nil},
		{
			"one run, credit to the next fix",
			[]Match{y(3), y(2), y(4), n, n, n, n, n},
			[]Episode{{Start: device[0].Time, End: device[2].Time, Closest: 2, Minutes: 15, Points: 3}},
		},
		{
			"an unmatched point splits; the credit is capped at MaxGap",
			[]Match{y(1), n, y(5), y(6), n, n, n, n},
			[]Episode{
				{Start: device[0].Time, End: device[0].Time, Closest: 1, Minutes: 5, Points: 1},
				{Start: device[2].Time, End: device[3].Time, Closest: 5, Minutes: 5 + 10, Points: 2},
			},
		},
		{
			"a gap over MaxGap splits; the last fix gets no credit",
			[]Match{n, n, n, y(7), y(8), y(9), y(9), y(1)},
			[]Episode{
				{Start: device[3].Time, End: device[3].Time, Closest: 7, Minutes: 10, Points: 1},
				{Start: device[4].Time, End: device[4].Time, Closest: 8, Minutes: 10, Points: 1},
				{Start: device[5].Time, End: device[7].Time, Closest: 1, Minutes: 6, Points: 3},
			},
		},
	}
	for _, tt := range tests {
		got := Episodes(device, tt.matches, p)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
		// What the backend's index returns gives the same episodes.
		if got := Episodes(device, RunningClosest(device, tt.matches, p), p); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s, running closest:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	// Mismatched lengths are cut to the shorter, not a panic.
	if got := Episodes(device[:2], []Match{y(1), y(1), y(1)}, p); len(got) != 1 || got[0].Points != 2 {
		t.Errorf("short device: %+v", got)
	}
}

func TestRunningClosest(t *testing.T) {
	p := DefaultParams() // MaxGap 10 minutes
	device := Trace{at(0, 0), at(5, 0), at(10, 0), at(15, 0), at(40, 0), at(45, 0)}
	y := func(d float64) Match { return Match{Matched: true, Distance: d} }
	n := Match{}
	got := RunningClosest(device, []Match{y(3), y(2), y(4), n, y(7), y(8)}, p)
	// The closest so far within an episode; an unmatched fix or a gap
	// over MaxGap starts afresh.
	want := []Match{y(3), y(2), y(2), n, y(7), y(7)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := RunningClosest(device, []Match{y(3), n, y(4), y(9), y(8), y(1)}, p); !reflect.DeepEqual(got, []Match{y(3), n, y(4), y(4), y(8), y(1)}) {
		t.Errorf("gap of 25 minutes: got %+v", got)
	}
}

func TestExposed(t *testing.T) {
	p := DefaultParams() // 15 minutes
	const h = 3600
	ep := func(start int64, minutes float64) Episode {
		return Episode{Start: start, End: start, Minutes: minutes}
	}
	tests := []struct {
		name string
		eps  []Episode
		want bool
	}{
		{"nothing", nil, false},
		{"one long episode", []Episode{ep(0, 15)}, true},
		{"one short episode", []Episode{ep(0, 14)}, false},
		{"cumulative within 24 hours", []Episode{ep(0, 5), ep(2*h, 5), ep(23*h, 5)}, true},
		{"spread over more than 24 hours", []Episode{ep(0, 5), ep(12*h, 5), ep(24*h, 5), ep(36*h, 4)}, false},
		{"exactly 24 hours apart is outside", []Episode{ep(0, 10), ep(24*h, 10)}, false},
	}
	for _, tt := range tests {
		if got := Exposed(tt.eps, p); got != tt.want {
			t.Errorf("%s: Exposed = %v, want %v", tt.name, got, tt.want)
		}
	}
	p.MinMinutes = 0
	if !Exposed([]Episode{ep(0, 0)}, p) || Exposed(nil, p) {
		t.Error("MinMinutes 0: any episode should expose, none should not")
	}
}

func TestBruteForceToleranceWholeSeconds(t *testing.T) {
	p := DefaultParams()
	p.TimeTolerance = 90*time.Second + 999*time.Millisecond
	a, b := at(0, 0), at(0, 0)
	b.Time += 91
	if BruteForceMatches(Trace{a}, []Trace{{b}}, p)[0].Matched {
		t.Error("91 s matched under a tolerance of 90.999 s")
	}
	b.Time--
	if !BruteForceMatches(Trace{a}, []Trace{{b}}, p)[0].Matched {
		t.Error("90 s did not match under a tolerance of 90.999 s")
	}
}

// The most recent exposure is the last episode that completes an exposure,
// not a later short episode that does not.
func TestLastExposure(t *testing.T) {
	p := DefaultParams() // 15 minutes
	const h = 3600
	ep := func(start int64, minutes float64) Episode {
		return Episode{Start: start, End: start + int64(minutes*60), Minutes: minutes}
	}
	eps := []Episode{ep(0, 10), ep(2*h, 10), ep(30*h, 16), ep(60*h, 3)}
	last, ok := LastExposure(eps, p)
	if !ok || last != eps[2] {
		t.Errorf("LastExposure = %+v, %v; want the 16-minute episode at 30 h", last, ok)
	}
	if _, ok := LastExposure(eps[3:], p); ok {
		t.Error("a 3-minute episode alone is an exposure")
	}
	if last, ok := LastExposure(eps[:2], p); !ok || last != eps[1] {
		t.Errorf("two 10-minute episodes: %+v, %v; want the second", last, ok)
	}
}
