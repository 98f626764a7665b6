package population

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/policy"
)

// gpsConfig is a small run that uploads traces and notifies devices.
var gpsConfig = Config{People: 100, Days: 6, Seed: 9, GPS: true, GPSCheckEvery: 2}

// TestGPSRun runs the GPS mode twice with one seed, with coarse answers
// and with detailed ones, and once without GPS: it must be exact,
// exercise matching, come to the same with either kind of answers (which
// say more or less, never something else; only their padded size
// differs), and leave the Bluetooth side of the run as it is without GPS.
func TestGPSRun(t *testing.T) {
	t.Parallel()
	s := run(t, gpsConfig)
	g := s.GPSSummary
	if g == nil {
		t.Fatal("a GPS run has no GPS summary")
	}
	if err := s.Check(); err != nil || !g.GPSProtocolExact {
		t.Fatalf("GPS run not exact: %v, %+v", err, g)
	}
	if g.GPSUploads == 0 || g.GPSNotified == 0 || g.GPSShouldBeNotified != g.GPSNotified {
		t.Fatalf("GPS uploads %d, notified %d, should be notified %d: the run did not exercise matching", g.GPSUploads, g.GPSNotified, g.GPSShouldBeNotified)
	}
	// Each app user checks every other day, on its own phase, until its
	// own trace is uploaded.
	if most := s.AppUsers * ((s.Days + 1) / 2); g.GPSChecks > most || g.GPSChecks < most/2 {
		t.Fatalf("%d GPS checks; want about one per app user every 2 days (at most %d)", g.GPSChecks, most)
	}
	if g.GPSCheckedPoints <= g.GPSChecks*24*60/deviceFixMinutes || g.GPSUploadedPoints < g.GPSUploads*24*60 {
		t.Fatalf("%d fixes in %d checks, %d in %d uploads: want a day or more of fixes each", g.GPSCheckedPoints, g.GPSChecks, g.GPSUploadedPoints, g.GPSUploads)
	}

	pol := testPolicy()
	pol.Answers = policy.AnswersDetailed
	cfg := gpsConfig
	cfg.DetailedAnswers = true
	detailed := runPolicy(t, cfg, pol)
	if err := detailed.Check(); err != nil || !detailed.DetailedAnswers {
		t.Fatalf("detailed GPS run: %v, detailed %v", err, detailed.DetailedAnswers)
	}
	if detailed.BytesPerDeviceDay <= s.BytesPerDeviceDay {
		t.Fatalf("%v bytes a device and day with detailed answers, %v with coarse ones: detailed answers pad to a larger size", detailed.BytesPerDeviceDay, s.BytesPerDeviceDay)
	}
	s.Timing, detailed.Timing = Timing{}, Timing{}
	detailed.DetailedAnswers, detailed.BytesPerDeviceDay = false, s.BytesPerDeviceDay
	if !reflect.DeepEqual(s, detailed) {
		t.Fatalf("a GPS run with detailed answers differs from one with coarse answers:\n%+v\n%+v", *s, *detailed)
	}

	cfg = gpsConfig
	cfg.GPS = false
	plain := run(t, cfg)
	if plain.GPSSummary != nil {
		t.Fatal("a run without GPS has a GPS summary")
	}
	ble := *s
	ble.GPSSummary, plain.Timing = nil, Timing{}
	ble.Requests -= g.GPSUploads + g.GPSChecks
	ble.Definitions = definitions()
	if !reflect.DeepEqual(&ble, plain) {
		t.Fatalf("GPS changed the Bluetooth side of the run:\n%+v\n%+v", ble, *plain)
	}
}

// TestTruthIsBruteForce checks the simulator's grid-pruned ground truth
// against gps.BruteForce itself on dense random traces whose fixes
// straddle grid cells and sit around the distance threshold, for several
// thresholds, and that it leaves out the days before the window.
func TestTruthIsBruteForce(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	start := DefaultStart().Unix()
	trace := func(n int, c latLon, spread float64, step int64) gps.Trace {
		tr := make(gps.Trace, n)
		tm := start + r.Int64N(3600)
		for i := range tr {
			p := c.move(r.NormFloat64()*spread, r.NormFloat64()*spread)
			tr[i] = gps.Point{Time: tm, Lat: round7(p.lat), Lon: round7(p.lon)}
			tm += r.Int64N(step + 1)
		}
		return tr
	}
	for _, params := range []gps.Params{
		policy.Default().GPS.Params(),
		{DistanceMeters: 1, TimeTolerance: 0, MinMinutes: 1, MaxGap: time.Minute},
		{DistanceMeters: 30, TimeTolerance: time.Minute, MinMinutes: 5, MaxGap: 5 * time.Minute},
		{DistanceMeters: 1000, TimeTolerance: time.Hour, MinMinutes: 15, MaxGap: time.Hour},
	} {
		spread := params.DistanceMeters * 3
		c := latLon{cityLat, cityLon}
		var patients []gps.Trace
		days := map[int][]gps.Point{}
		for range 4 {
			tr := trace(400, c, spread, 40)
			patients = append(patients, tr)
			days[0] = append(days[0], tr...)
		}
		// A day before the window, at the same place and time of day: it
		// must not count.
		days[-1] = trace(400, c, spread, 40)
		for i := range days[-1] {
			days[-1][i].Time -= 24 * 60 * 60
		}
		truth := newTruth(params, days, 0, cityLat)
		matched := 0
		for range 8 {
			dev := trace(200, c, spread, 120)
			want := gps.BruteForce(dev, patients, params)
			got := truth.episodes(dev)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%+v: truth gives %+v, gps.BruteForce %+v", params, got, want)
			}
			matched += len(want)
		}
		if matched == 0 {
			t.Fatalf("%+v: no episodes at all; the test does not exercise matching", params)
		}
	}
}

// TestGPSModel checks the trace model: fixes a few metres around where
// people are, at the interval asked, the same whenever drawn, and traces
// that pass the validation the backend applies.
func TestGPSModel(t *testing.T) {
	offline := func(seed uint64) (*world, *gpsWorld) {
		pol := policy.Default()
		w := newWorld(Config{People: 40, Days: 3, Seed: seed}, pol, nil, &simClock{start: DefaultStart(), pol: pol}, nil)
		return w, newGPSWorld(w)
	}
	w, g := offline(9)
	if _, other := offline(10); reflect.DeepEqual(g.home, other.home) {
		t.Fatal("two seeds put people in the same homes")
	}
	for d := range 3 {
		g.plan(d, drawEncounters(w.rng, w.people, w.clock.weekday(d)))
	}
	// Day 1 (a Monday): a community encounter puts both at one place.
	var e *encounter
	es := []encounter{{a: 3, b: 7, start: 600, length: 20, dist: 2, kind: inCommunity}}
	g.plan(1, es)
	e = &es[0]
	pa, pb := g.where(e.a, 1, 610, true), g.where(e.b, 1, 610, true)
	if d := distance(pa, pb); math.Abs(d-e.dist) > 0.01 {
		t.Fatalf("people in an encounter %v m apart are %v m apart", e.dist, d)
	}
	if g.where(e.a, 1, 630, true) == pa {
		t.Fatal("a person stays at the encounter's place after it ended")
	}
	for i := range w.people {
		tr := g.appendDay(nil, i, 1, 1, 24*60-1)
		if len(tr) != 24*60 || tr[1].Time-tr[0].Time != 60 {
			t.Fatalf("person %d: %d fixes, %d s apart; want one a minute all day", i, len(tr), tr[1].Time-tr[0].Time)
		}
		if err := tr.Validate(gps.Limits{Now: func() time.Time { return DefaultStart().AddDate(0, 0, 3) }}); err != nil {
			t.Fatalf("person %d's trace does not validate: %v", i, err)
		}
		if again := g.appendDay(nil, i, 1, 1, 24*60-1); !reflect.DeepEqual(tr, again) {
			t.Fatalf("person %d's trace differs when drawn again", i)
		}
		home := g.home[i]
		if d := distance(home, latLon{tr[0].Lat, tr[0].Lon}); d > 5*gpsNoiseMeters {
			t.Fatalf("person %d's midnight fix is %v m from home", i, d)
		}
		dev := g.appendDay(nil, i, 1, deviceFixMinutes, gpsCheckMinute)
		if len(dev) != gpsCheckMinute/deviceFixMinutes+1 {
			t.Fatalf("person %d's device has %d fixes up to 23:40, want one every 5 minutes", i, len(dev))
		}
		// Traces of several days, as uploads and checks send them: they
		// validate across midnight too, and no two fixes share a second
		// (validation allows those only gps.SameTimeSlack apart).
		for _, tr := range []gps.Trace{g.patientTrace(i, 0, 2), g.appendDay(g.appendDay(nil, i, 0, deviceFixMinutes, 24*60-1), i, 1, deviceFixMinutes, gpsCheckMinute)} {
			if err := tr.Validate(gps.Limits{Now: func() time.Time { return DefaultStart().AddDate(0, 0, 3) }}); err != nil {
				t.Fatalf("person %d's trace of several days does not validate: %v", i, err)
			}
			for k := 1; k < len(tr); k++ {
				if tr[k].Time <= tr[k-1].Time {
					t.Fatalf("person %d's fixes %d and %d are at %d and %d: want one a second at most", i, k-1, k, tr[k-1].Time, tr[k].Time)
				}
			}
		}
	}
}

func distance(a, b latLon) float64 {
	return gps.Distance(gps.Point{Lat: round7(a.lat), Lon: round7(a.lon)}, gps.Point{Lat: round7(b.lat), Lon: round7(b.lon)})
}

func TestGPSReports(t *testing.T) {
	g := &GPSSummary{GPSCheckEvery: 3, GPSUploads: 2, GPSChecks: 40, GPSNotified: 5, GPSShouldBeNotified: 5, GPSProtocolExact: true}
	s := &Summary{People: 10, Days: 2, ProtocolExact: true, Definitions: definitions(), GPSSummary: g}
	var tbl, page strings.Builder
	WriteTable(&tbl, s)
	if !strings.Contains(tbl.String(), "GPS exact") || !strings.Contains(tbl.String(), "5 (brute force says 5)") {
		t.Fatalf("table lacks the GPS lines:\n%s", tbl.String())
	}
	WriteHTML(&page, s)
	if !strings.Contains(page.String(), "GPS exact: every one of 40") {
		t.Fatal("report page does not state GPS exactness")
	}
	g.GPSProtocolExact, g.GPSMismatchedAnswers = false, 1
	page.Reset()
	WriteHTML(&page, s)
	if !strings.Contains(page.String(), "GPS MISMATCH") || s.Check() == nil {
		t.Fatal("an inexact GPS run is not reported as such")
	}
	b, _ := json.Marshal(s)
	for _, k := range []string{"gps_checks", "gps_notified", "gps_should_be_notified", "gps_missed", "gps_false", "gps_protocol_exact"} {
		if !strings.Contains(string(b), `"`+k+`"`) {
			t.Errorf("JSON lacks %q", k)
		}
	}
	s.GPSSummary = nil
	if b, _ := json.Marshal(s); strings.Contains(string(b), "gps_") {
		t.Error("JSON of a run without GPS has GPS keys")
	}
	tbl.Reset()
	WriteTable(&tbl, s)
	if strings.Contains(tbl.String(), "GPS") {
		t.Error("table of a run without GPS has GPS lines")
	}
}

// TestCityOf checks that a nonce moves the city, to a place the truth's
// grid handles, and that no nonce keeps the default city.
func TestCityOf(t *testing.T) {
	if c := cityOf(nil); c != (latLon{cityLat, cityLon}) {
		t.Fatalf("no nonce: city %v, want the default", c)
	}
	seen := map[latLon]bool{}
	for i := range 100 {
		c := cityOf([]byte{byte(i), 1, 2, 3})
		if math.Abs(c.lat) > 50 || math.Abs(c.lon) > 170 || seen[c] {
			t.Fatalf("nonce %d: city %v outside the grid's range or seen before", i, c)
		}
		seen[c] = true
	}
	if cityOf([]byte{7}) != cityOf([]byte{7}) {
		t.Fatal("one nonce gave two cities")
	}
}
