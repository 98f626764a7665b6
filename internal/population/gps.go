package population

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/gps"
)

// The GPS mode (Config.GPS) gives everyone a location trace drawn from the
// same encounter model as the Bluetooth side: people are at home, at their
// workplace or school on weekdays from 9:00 to 17:00, and, for each
// community encounter, at a random place in the city together with the
// person they meet, dist metres apart. Every fix adds a few metres of GPS
// noise to the position. The health authority uploads the trace of every
// person who tests positive and consents (Config.Consent), one fix a
// minute, from two days before symptom onset (or the test, without
// symptoms) to the upload. App users' devices record one fix every 5
// minutes and check their retention window's trace every
// Config.GPSCheckEvery days, each on its own phase so that the load is
// even; patients whose trace was uploaded stop checking.
//
// GPS draws its randomness from a generator of its own and its answers
// change nobody's behaviour, so the Bluetooth side of a run, and every
// figure of it, is the same with and without GPS.
//
// With a Config.Nonce the city lies at a place on Earth drawn from the
// nonce, so that the traces of runs against one live backend, which cover
// the same real days, never come near each other.

// Where the simulated city lies and how big it is: an 8 km square, so
// that even the farthest jump between two fixes a minute apart stays
// below the speed limit that trace validation applies.
const (
	cityLat, cityLon = 46.52, 6.63
	cityHalfMeters   = 4000
	gpsNoiseMeters   = 2  // standard deviation of GPS noise, per axis
	homeRadius       = 5  // where in their home people are
	deskRadius       = 15 // where in their workplace or school
	deviceFixMinutes = 5  // a phone's fix interval
	gpsCheckMinute   = 23*60 + 40
	gpsUploadMinute  = 23 * 60
	gpsAccuracy      = 5.0 // the accuracy every fix reports, metres
)

// metresPerDegree is the length of a degree of latitude on the sphere
// package gps measures on.
const metresPerDegree = gps.EarthRadius * math.Pi / 180

// GPSSummary is what the GPS mode did, beside the brute-force truth.
type GPSSummary struct {
	// GPSCheckEvery is how many days apart each device checks its trace.
	GPSCheckEvery int `json:"gps_check_every_days"`
	// GPSUploads counts patients' traces uploaded, GPSUploadedPoints their
	// fixes.
	GPSUploads        int `json:"gps_uploads"`
	GPSUploadedPoints int `json:"gps_uploaded_points"`
	// GPSChecks counts device trace checks, GPSCheckedPoints their fixes.
	GPSChecks        int `json:"gps_checks"`
	GPSCheckedPoints int `json:"gps_checked_points"`
	// GPSNotified counts devices the backend told "exposed" at least once;
	// GPSShouldBeNotified those the brute force says it must.
	GPSNotified         int `json:"gps_notified"`
	GPSShouldBeNotified int `json:"gps_should_be_notified"`
	// GPSMissed and GPSFalse count checks answered "not exposed" that the
	// brute force says are exposed, and the reverse; GPSEpisodeMismatches
	// checks whose episodes differ from the brute force's in any way.
	GPSMissed            int  `json:"gps_missed"`
	GPSFalse             int  `json:"gps_false"`
	GPSEpisodeMismatches int  `json:"gps_episode_mismatches"`
	GPSProtocolExact     bool `json:"gps_protocol_exact"`
}

var gpsDefinitions = map[string]string{
	"gps_protocol_exact":     "every GPS check answered exactly as gps.BruteForce requires: the device's fixes of the retention window against every uploaded patient fix of the window, with the attested GPS thresholds; the same verdict and the same episodes (start, end, minutes and closest distance to 0.1)",
	"gps_checks":             "device GPS trace checks: every app user every gps_check_every_days days, one fix every 5 minutes over the retention window",
	"gps_uploads":            "patients' traces the health authority uploaded: people who tested positive and consented, one fix a minute from two days before symptom onset (or the test) to the upload",
	"gps_notified":           "devices a GPS check told 'exposed' at least once",
	"gps_should_be_notified": "devices the brute force says a GPS check must tell 'exposed' at least once",
	"gps_missed":             "GPS checks answered 'not exposed' that the brute force says are exposed",
	"gps_false":              "GPS checks answered 'exposed' that the brute force says are not",
	"gps_episode_mismatches": "GPS checks whose episodes differ from the brute force's",
}

type latLon struct{ lat, lon float64 }

// move returns p moved east and north by the given metres.
func (p latLon) move(east, north float64) latLon {
	return latLon{
		lat: p.lat + north/metresPerDegree,
		lon: p.lon + east/(metresPerDegree*math.Cos(p.lat*math.Pi/180)),
	}
}

// stay is a stretch of a day someone spends away from their usual place.
type stay struct {
	from, to int // minutes of the day, [from, to)
	at       latLon
}

// gpsWorld is the GPS side of a run.
type gpsWorld struct {
	w      *world
	rng    *rand.Rand
	params gps.Params
	every  int
	city   latLon

	home, desk []latLon         // by person
	stays      []map[int][]stay // by day, then person; old days freed
	uploaded   []bool           // by person: their trace was uploaded
	// patientDays holds the uploaded fixes by day, for the truth.
	patientDays map[int][]gps.Point

	notified, should []bool
	sum              *GPSSummary
}

func newGPSWorld(w *world) *gpsWorld {
	every := w.cfg.GPSCheckEvery
	if every <= 0 {
		every = 3
	}
	g := &gpsWorld{
		w:           w,
		rng:         rand.New(rand.NewPCG(w.cfg.Seed, 0x6770732074726163)),
		params:      w.pol.GPS.Params(),
		every:       every,
		stays:       make([]map[int][]stay, w.cfg.Days),
		uploaded:    make([]bool, len(w.people)),
		patientDays: map[int][]gps.Point{},
		notified:    make([]bool, len(w.people)),
		should:      make([]bool, len(w.people)),
		sum:         &GPSSummary{GPSCheckEvery: every},
		city:        cityOf(w.cfg.Nonce),
	}
	place := func() latLon {
		return g.city.move((2*g.rng.Float64()-1)*cityHalfMeters, (2*g.rng.Float64()-1)*cityHalfMeters)
	}
	households, groups := 0, 0
	for _, p := range w.people {
		households, groups = max(households, p.household+1), max(groups, p.group+1)
	}
	homes, sites := make([]latLon, households), make([]latLon, groups)
	for i := range homes {
		homes[i] = place()
	}
	for i := range sites {
		sites[i] = place()
	}
	g.home, g.desk = make([]latLon, len(w.people)), make([]latLon, len(w.people))
	for i, p := range w.people {
		g.home[i] = g.inDisc(homes[p.household], homeRadius)
		if p.group >= 0 {
			g.desk[i] = g.inDisc(sites[p.group], deskRadius)
		}
	}
	return g
}

// cityOf returns the city's centre: the default one without a nonce, and
// otherwise a place drawn from the nonce within 50 degrees of the equator
// and 170 of the prime meridian, where the truth's plain latitude and
// longitude grid works (far from the poles and the antimeridian).
func cityOf(nonce []byte) latLon {
	if nonce == nil {
		return latLon{cityLat, cityLon}
	}
	h := sha256.Sum256(append([]byte("conftrace sim GPS city\x00"), nonce...))
	u := func(b []byte) float64 { return float64(binary.BigEndian.Uint64(b)>>11) / (1 << 53) }
	return latLon{lat: round7(-50 + 100*u(h[:8])), lon: round7(-170 + 340*u(h[8:16]))}
}

// inDisc returns a uniformly random point within radius metres of c.
func (g *gpsWorld) inDisc(c latLon, radius float64) latLon {
	r, a := radius*math.Sqrt(g.rng.Float64()), 2*math.Pi*g.rng.Float64()
	return c.move(r*math.Cos(a), r*math.Sin(a))
}

// plan records where day d's community encounters take place: a random
// place, with the two people dist metres apart. A person in two
// overlapping encounters is at the later one's place.
func (g *gpsWorld) plan(d int, es []encounter) {
	city := g.city
	day := map[int][]stay{}
	for _, e := range es {
		if e.kind != inCommunity {
			continue
		}
		c := city.move((2*g.rng.Float64()-1)*cityHalfMeters, (2*g.rng.Float64()-1)*cityHalfMeters)
		a := 2 * math.Pi * g.rng.Float64()
		dx, dy := e.dist/2*math.Cos(a), e.dist/2*math.Sin(a)
		day[e.a] = append(day[e.a], stay{e.start, e.start + e.length, c.move(dx, dy)})
		day[e.b] = append(day[e.b], stay{e.start, e.start + e.length, c.move(-dx, -dy)})
	}
	g.stays[d] = day
	// Nothing older than the retention window is needed again.
	if old := d - g.w.pol.RetentionDays; old >= 0 {
		g.stays[old] = nil
	}
}

// where returns where person i is at minute m of day d, before noise.
func (g *gpsWorld) where(i, d, m int, weekday bool) latLon {
	ss := g.stays[d][i]
	for k := len(ss) - 1; k >= 0; k-- {
		if m >= ss[k].from && m < ss[k].to {
			return ss[k].at
		}
	}
	if weekday && g.w.people[i].group >= 0 && m >= 9*60 && m < 17*60 {
		return g.desk[i]
	}
	return g.home[i]
}

// appendDay appends person i's fixes of day d, one every step minutes up
// to minute last. The noise comes from a generator of its own per person,
// day and step, so a day's fixes are the same whenever they are drawn.
func (g *gpsWorld) appendDay(tr gps.Trace, i, d, step, last int) gps.Trace {
	var seed [24]byte
	binary.BigEndian.PutUint64(seed[:], g.w.cfg.Seed)
	binary.BigEndian.PutUint64(seed[8:], uint64(i))
	binary.BigEndian.PutUint64(seed[16:], uint64(d))
	r := rand.New(rand.NewChaCha8([32]byte(append(seed[:], byte(step), 'g', 'p', 's', 'f', 'i', 'x', 0))))
	midnight := g.w.at(d, 0)
	base, wd := midnight.Unix(), midnight.Weekday()
	weekday := wd != time.Saturday && wd != time.Sunday
	for m := 0; m <= last; m += step {
		p := g.where(i, d, m, weekday).move(r.NormFloat64()*gpsNoiseMeters, r.NormFloat64()*gpsNoiseMeters)
		tr = append(tr, gps.Point{Time: base + int64(m)*60, Lat: round7(p.lat), Lon: round7(p.lon), Accuracy: gpsAccuracy})
	}
	return tr
}

func round7(deg float64) float64 { return math.Round(deg*1e7) / 1e7 }

// upload has the health authority upload, at 23:00 of day d, the traces
// of the people whose positive result it signed today and who consent.
func (g *gpsWorld) upload(ctx context.Context, d int) error {
	w := g.w
	now := w.advance(d, gpsUploadMinute)
	first := w.uploadFirst(now)
	for i := range w.people {
		p := &w.people[i]
		for _, t := range p.pending {
			if !t.submitted || t.resultDay != d || !t.positive || g.uploaded[i] || g.rng.Float64() >= w.cfg.Consent {
				continue
			}
			from := t.day - 2
			if p.symptomatic && p.onset <= t.day {
				from = p.onset - 2
			}
			var tr gps.Trace
			for k := max(from, first); k <= d; k++ {
				last := 24*60 - 1
				if k == d {
					last = gpsUploadMinute
				}
				tr = g.appendDay(tr, i, k, 1, last)
			}
			if n := w.pol.GPS.MaxTracePoints; len(tr) > n {
				tr = tr[len(tr)-n:]
			}
			signed, err := w.cfg.Authority.SignTrace(tr, now)
			if err != nil {
				return fmt.Errorf("sim: signing a trace: %w", err)
			}
			if _, err := w.c.SubmitTrace(ctx, signed); err != nil {
				return fmt.Errorf("sim: day %d: uploading a trace: %w", d, err)
			}
			w.sum.Requests++
			g.uploaded[i] = true
			g.sum.GPSUploads++
			g.sum.GPSUploadedPoints += len(tr)
			for _, q := range tr {
				k := w.dayOf(time.Unix(q.Time, 0))
				g.patientDays[k] = append(g.patientDays[k], q)
			}
		}
	}
	return nil
}

// gpsAnswer is one device's check: what the backend said and what the
// brute force says.
type gpsAnswer struct {
	checked        bool
	points         int
	got, want      bool
	episodesDiffer bool
}

// check has the app users whose turn it is check their traces at 23:40 of
// day d, and compares every answer with the brute force.
//
// A live backend expires old days on a timer of its own, so when its
// window moves during a run, the simulator cannot know whether the fixes
// of the day that left are still there. Live devices therefore leave out
// their fixes within the time tolerance of the window's start: no fix
// from before the window can then match theirs, present or not.
func (g *gpsWorld) check(ctx context.Context, d int) error {
	w := g.w
	checkAt := w.advance(d, gpsCheckMinute)
	first := w.firstDay(checkAt)
	for k := range g.patientDays {
		if k < first {
			delete(g.patientDays, k) // expired on the backend too
		}
	}
	truth := newTruth(g.params, g.patientDays, first, g.city.lat)
	var users []int
	for i, p := range w.people {
		if p.app && !g.uploaded[i] && (d+i)%g.every == 0 {
			users = append(users, i)
		}
	}
	answers := make([]gpsAnswer, len(users))
	err := w.checkEach(ctx, len(users), checkAt, func(ctx context.Context, j int, now time.Time) error {
		i := users[j]
		var tr gps.Trace
		for k := w.firstDay(now); k <= d; k++ {
			last := 24*60 - 1
			if k == d {
				last = gpsCheckMinute
			}
			tr = g.appendDay(tr, i, k, deviceFixMinutes, last)
		}
		if w.live {
			edge := w.pol.WindowStart(now).Unix() + g.params.ToleranceSeconds()
			tr = slices.DeleteFunc(tr, func(p gps.Point) bool { return p.Time <= edge })
		}
		resp, err := w.c.CheckTrace(ctx, tr)
		if err != nil {
			return fmt.Errorf("sim: day %d: checking a GPS trace: %w", d, err)
		}
		eps := truth.episodes(tr)
		answers[j] = gpsAnswer{
			checked:        true,
			points:         len(tr),
			got:            resp.Exposed,
			want:           gps.Exposed(eps, g.params),
			episodesDiffer: !sameEpisodes(resp, eps),
		}
		return nil
	})
	if err != nil {
		return err
	}
	s := g.sum
	for j, i := range users {
		a := answers[j]
		s.GPSChecks++
		w.sum.Requests++
		s.GPSCheckedPoints += a.points
		switch {
		case a.want && !a.got:
			s.GPSMissed++
		case a.got && !a.want:
			s.GPSFalse++
		}
		if a.episodesDiffer {
			s.GPSEpisodeMismatches++
		}
		if a.got && !g.notified[i] {
			g.notified[i] = true
			s.GPSNotified++
		}
		if a.want && !g.should[i] {
			g.should[i] = true
			s.GPSShouldBeNotified++
		}
	}
	return nil
}

// sameEpisodes reports whether the backend's episodes are the brute
// force's, at the backend's rounding to 0.1 and its MaxEpisodes cap.
func sameEpisodes(resp api.TraceCheckResponse, eps []gps.Episode) bool {
	n := min(len(eps), api.MaxEpisodes)
	if len(resp.Episodes) != n || resp.Truncated != (len(eps) > n) {
		return false
	}
	for k, e := range resp.Episodes {
		want := eps[k]
		if e.Start != want.Start || e.End != want.End ||
			e.Minutes != math.Round(want.Minutes*10)/10 || e.ClosestMeters != math.Round(want.Closest*10)/10 {
			return false
		}
	}
	return true
}

func (g *gpsWorld) finish() {
	s := g.sum
	s.GPSProtocolExact = s.GPSMissed == 0 && s.GPSFalse == 0 && s.GPSEpisodeMismatches == 0
}

// truth computes gps.BruteForce of device traces against the uploaded
// fixes of the retention window. Calling it on whole traces would compare
// every device fix with a million patient fixes; instead it hands
// gps.BruteForceMatches, per device fix, only the patient fixes of the
// grid cells around it within the time tolerance. The cells are wider than
// the distance threshold by a safety factor, so the fixes left out are
// all farther than the threshold and the result is the brute force's
// exactly (TestTruthIsBruteForce checks it). The grid is a plain
// latitude/longitude grid: fine for a city far from the poles and the
// antimeridian, which is all the simulator has.
type truth struct {
	params           gps.Params
	tol              int64
	latHalf          float64 // E7 units of latitude that the threshold spans, with margin
	latCell, lonCell int64   // E7 units
	cells            map[[2]int64][]gps.Point
}

// metresPerE7 is the length of 1e-7 degree of latitude, in metres.
const metresPerE7 = metresPerDegree / 1e7

// newTruth indexes the fixes of days first and later, for a city around
// latitude lat.
func newTruth(params gps.Params, days map[int][]gps.Point, first int, lat float64) *truth {
	t := &truth{params: params, tol: params.ToleranceSeconds(), cells: map[[2]int64][]gps.Point{}}
	t.latHalf = (params.DistanceMeters*1.001 + 0.01) / metresPerE7
	t.latCell = int64(math.Ceil(4 * t.latHalf))
	t.lonCell = int64(math.Ceil(4 * t.lonHalf(lat)))
	for k, pts := range days {
		if k < first {
			continue
		}
		for _, p := range pts {
			key := t.cell(p.Position())
			t.cells[key] = append(t.cells[key], p)
		}
	}
	for _, pts := range t.cells {
		slices.SortStableFunc(pts, func(a, b gps.Point) int { return cmp.Compare(a.Time, b.Time) })
	}
	return t
}

// lonHalf returns the E7 units of longitude that the threshold can span
// around latitude lat (degrees): the latitude span over the cosine of the
// highest latitude the span reaches, with margin.
func (t *truth) lonHalf(lat float64) float64 {
	top := min(89.9, math.Abs(lat)+t.latHalf/1e7)
	return t.latHalf / math.Cos(top*math.Pi/180) * 1.001
}

func (t *truth) cell(p gps.Position) [2]int64 {
	return [2]int64{floorDiv(int64(p.Lat), t.latCell), floorDiv(int64(p.Lon), t.lonCell)}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// episodes returns gps.BruteForce(device, uploaded fixes, params).
func (t *truth) episodes(device gps.Trace) []gps.Episode {
	matches := make([]gps.Match, len(device))
	var cands gps.Trace
	for j, p := range device {
		pos := p.Position()
		lonHalf := t.lonHalf(p.Lat)
		lo := t.cell(gps.Position{Lat: int32(math.Floor(float64(pos.Lat) - t.latHalf)), Lon: int32(math.Floor(float64(pos.Lon) - lonHalf))})
		hi := t.cell(gps.Position{Lat: int32(math.Ceil(float64(pos.Lat) + t.latHalf)), Lon: int32(math.Ceil(float64(pos.Lon) + lonHalf))})
		cands = cands[:0]
		for a := lo[0]; a <= hi[0]; a++ {
			for b := lo[1]; b <= hi[1]; b++ {
				pts := t.cells[[2]int64{a, b}]
				k, _ := slices.BinarySearchFunc(pts, p.Time-t.tol, func(q gps.Point, tm int64) int { return cmp.Compare(q.Time, tm) })
				for ; k < len(pts) && pts[k].Time <= p.Time+t.tol; k++ {
					cands = append(cands, pts[k])
				}
			}
		}
		if len(cands) > 0 {
			matches[j] = gps.BruteForceMatches(device[j:j+1], []gps.Trace{cands}, t.params)[0]
		}
	}
	return gps.Episodes(device, matches, t.params)
}
