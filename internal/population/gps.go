package population

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"math/rand/v2"

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
	// brute force says are exposed, and the reverse; GPSMismatchedAnswers
	// checks whose answer differs from the brute force's in anything it
	// carries: the verdict and the last exposed day, and in detailed
	// answers every episode.
	GPSMissed            int  `json:"gps_missed"`
	GPSFalse             int  `json:"gps_false"`
	GPSMismatchedAnswers int  `json:"gps_mismatched_answers"`
	GPSProtocolExact     bool `json:"gps_protocol_exact"`
}

// gpsDefinitions explain the GPS figures.
func gpsDefinitions() map[string]string {
	return map[string]string{
		"gps_protocol_exact":     "every GPS check answered exactly as gps.BruteForce requires: the device's fixes of the retention window against every uploaded patient fix of the window, with the attested GPS thresholds; the same verdict and last exposed day (the UTC day of the last episode at which 24 hours of episodes reach the minimum), and with detailed answers the same episodes (start, end, minutes and closest distance to 0.1)",
		"gps_checks":             "device GPS trace checks: every app user every gps_check_every_days days, one fix every 5 minutes over the retention window",
		"gps_uploads":            "patients' traces the health authority uploaded: people who tested positive and consented, one fix a minute from two days before symptom onset (or the test) to the upload",
		"gps_notified":           "devices a GPS check told 'exposed' at least once",
		"gps_should_be_notified": "devices the brute force says a GPS check must tell 'exposed' at least once",
		"gps_missed":             "GPS checks answered 'not exposed' that the brute force says are exposed",
		"gps_false":              "GPS checks answered 'exposed' that the brute force says are not",
		"gps_mismatched_answers": "GPS checks whose answer differs from the brute force's in anything it carries: the verdict, the last exposed day, and with detailed answers the episodes",
	}
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

// newGPSWorld sets up the GPS side of w: homes, workplaces and schools
// at random places in the city, and everyone's spot in them.
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
	base, weekday := g.w.clock.at(d, 0).Unix(), g.w.clock.weekday(d)
	for m := 0; m <= last; m += step {
		p := g.where(i, d, m, weekday).move(r.NormFloat64()*gpsNoiseMeters, r.NormFloat64()*gpsNoiseMeters)
		tr = append(tr, gps.Point{Time: base + int64(m)*60, Lat: round7(p.lat), Lon: round7(p.lon), Accuracy: gpsAccuracy})
	}
	return tr
}

// round7 rounds deg to 1e-7 degree, the resolution of gps positions.
func round7(deg float64) float64 { return math.Round(deg*1e7) / 1e7 }
