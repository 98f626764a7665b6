package enclave

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/policy"
)

// TestMatchExactness compares every exposure answer with a brute-force
// reimplementation of the matching rules, over random small worlds: a few
// devices with random key layouts (daily, rotated at odd lengths across
// midnight, with gaps), random encounters (heard both ways or one way,
// with clock skew, some older than the window), some uploads, under each
// matching policy, coarse or detailed answers, a random tolerance and
// threshold. The uploads are written; time passes; every device checks,
// with its sightings shuffled and some repeated; then the enclave restarts
// and every device checks again. The seed is logged, so that a failure can
// be replayed.
func TestMatchExactness(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	matchings := [][]string{
		{policy.MatchReciprocal},
		{policy.MatchReciprocal, policy.MatchOneSided},
		{policy.MatchOneSided},
	}
	var seen struct{ reciprocal, oneSided, exposed, belowOnly, checks int }
	for world := range 18 {
		edit := func(p *policy.Policy) {
			p.RetentionDays = 3
			p.Matching = matchings[world%len(matchings)]
			p.Answers = []string{policy.AnswersDetailed, policy.AnswersCoarse}[world/len(matchings)%2]
			p.Risk.IntervalTolerance = rng.IntN(3)
			p.Risk.MinimumWeightedMinutes = 5 + rng.IntN(16)
		}
		v := newEnv(t, edit)
		w := newRandomWorld(rng, v, 5, 60)
		var uploads []contactlog.Report
		for _, d := range rng.Perm(len(w.devices))[:2] {
			if r, ok := w.upload(d); ok {
				v.mustUpload(r)
				uploads = append(uploads, r)
			}
		}
		v.flushAll()
		// Time passes, at times past midnight: the first round of checks
		// runs before Expire, the second after a restart, which runs it.
		v.clock.Advance(time.Duration(rng.IntN(36)) * time.Hour)
		for round := range 2 {
			for d := range w.devices {
				r := w.check(rng, d)
				got, want := v.check(r), bruteForce(v.pol, v.now(), uploads, r)
				full := want
				if !v.pol.Detailed() {
					want.Days = nil
				}
				if !equalExposure(got, want) {
					t.Fatalf("seed %d, world %d (matching %v, %s answers, tolerance %d), device %d, round %d:\n got  %+v\n want %+v",
						seed, world, v.pol.Matching, v.pol.Answers, v.pol.Risk.IntervalTolerance, d, round, got, want)
				}
				seen.checks++
				seen.exposed += btoi(got.Exposed)
				seen.belowOnly += btoi(!got.Exposed && slices.ContainsFunc(full.Days, func(d api.ExposureDay) bool { return d.Minutes > 0 }))
				for _, day := range full.Days {
					seen.reciprocal += btoi(day.Reciprocal)
					seen.oneSided += btoi(day.OneSided)
				}
			}
			v.restart()
		}
	}
	t.Logf("%d checks, %d exposed, %d with matches below the threshold only; %d days with reciprocal and %d with one-sided matches",
		seen.checks, seen.exposed, seen.belowOnly, seen.reciprocal, seen.oneSided)
	// The worlds must exercise what they test: otherwise the generator,
	// not the enclave, is broken.
	if seen.reciprocal == 0 || seen.oneSided == 0 || seen.exposed == 0 || seen.exposed == seen.checks || seen.belowOnly == 0 {
		t.Errorf("seed %d: the worlds exercised too little: %+v", seed, seen)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// randomWorld is a few devices' keys and sightings.
type randomWorld struct {
	devices  []randomDevice
	first    enid.Interval // the window's first interval
	firstDay calendar.Day
	latest   enid.Interval // the last interval a device may report
}

type randomDevice struct {
	keys      []contactlog.DailyKey
	sightings []contactlog.Sighting
}

// newRandomWorld makes n devices whose keys run from a day and a half
// before the window to now, and lets them meet about encounters times,
// mostly in a few crowded places.
func newRandomWorld(rng *rand.Rand, v *env, n, encounters int) *randomWorld {
	now := v.now()
	w := &randomWorld{
		first:    enid.IntervalOf(v.pol.WindowStart(now)),
		firstDay: utcDay(v.pol.WindowStart(now)),
		latest:   enid.IntervalOf(now) + 1,
	}
	lo := w.first - 3*enid.RollingPeriod/2
	ds := make([]*device, n)
	w.devices = make([]randomDevice, n)
	for i := range ds {
		w.devices[i].keys = randomKeys(rng, lo, w.latest, v.pol.MaxKeys())
		ds[i] = newDevice(w.devices[i].keys...)
	}
	covered := func(d int, i enid.Interval) bool {
		return i <= w.latest && slices.ContainsFunc(w.devices[d].keys, func(k contactlog.DailyKey) bool { return k.Contains(i) })
	}
	// One place straddles the midnight that starts the window once the
	// clock has moved on a day, where the window's edge cuts encounters.
	places := []enid.Interval{w.first + enid.RollingPeriod - 3}
	for range 4 {
		places = append(places, lo+enid.Interval(rng.IntN(int(w.latest-lo)+1)))
	}
	attenuations := []uint8{30, 55, 56, 63, 64, 73, 74, 90}
	record := func(d int, s contactlog.Sighting) {
		rec := &w.devices[d]
		if !slices.ContainsFunc(rec.sightings, func(o contactlog.Sighting) bool { return o.Heard == s.Heard && o.Interval == s.Interval }) {
			rec.sightings = append(rec.sightings, s)
		}
	}
	sighting := func(heard enid.RPI, at enid.Interval) contactlog.Sighting {
		return contactlog.Sighting{Heard: heard, Interval: at, Minutes: uint8(1 + rng.IntN(10)), Attenuation: attenuations[rng.IntN(len(attenuations))]}
	}
	for range encounters {
		a, b := rng.IntN(n), rng.IntN(n-1)
		if b >= a {
			b++
		}
		ia := places[rng.IntN(len(places))] + enid.Interval(rng.IntN(6))
		ib := ia
		if rng.IntN(3) == 0 {
			ib = enid.Interval(int(ia) + rng.IntN(7) - 3) // clock skew, at times beyond tolerance
		}
		if !covered(a, ia) || !covered(b, ib) {
			continue // a device without a key at the time was not broadcasting
		}
		heardByA, heardByB := ds[b].rpi(ib), ds[a].rpi(ia)
		switch k := rng.IntN(10); {
		case k < 6:
			record(a, sighting(heardByA, ia))
			record(b, sighting(heardByB, ib))
		case k < 8:
			record(a, sighting(heardByA, ia))
		default:
			record(b, sighting(heardByB, ib))
		}
		// The RPI heard on into the hearer's next interval too.
		if rng.IntN(8) == 0 && covered(a, ia+1) {
			record(a, sighting(heardByA, ia+1))
		}
	}
	return w
}

// randomKeys returns the keys of a device from about lo to hi in one of
// three layouts, at most most of them (the latest).
func randomKeys(rng *rand.Rand, lo, hi enid.Interval, most int) []contactlog.DailyKey {
	var ks []contactlog.DailyKey
	add := func(start enid.Interval, period int) {
		ks = append(ks, contactlog.DailyKey{TEK: enid.NewTEK(), Start: start, Period: uint8(period)})
	}
	start := lo - enid.Interval(rng.IntN(enid.RollingPeriod))
	switch rng.IntN(3) {
	case 0: // a key a day, from midnight
		for s := lo.RollingStart(); s <= hi; s += enid.RollingPeriod {
			add(s, enid.RollingPeriod)
		}
	case 1: // rotated at odd lengths, across midnight
		for s := start; s <= hi; {
			p := 96 + rng.IntN(enid.RollingPeriod-96+1)
			add(s, p)
			s += enid.Interval(p)
		}
	default: // with gaps: the phone was off
		for s := start; s <= hi; {
			p := 72 + rng.IntN(enid.RollingPeriod-72+1)
			add(s, p)
			s += enid.Interval(p + rng.IntN(30))
		}
	}
	return ks[len(ks)-min(len(ks), most):]
}

// upload returns device d's upload, what a well-behaved device sends: its
// keys and sightings of the window. ok is false if it has no key there.
func (w *randomWorld) upload(d int) (r contactlog.Report, ok bool) {
	dev := w.devices[d]
	for _, k := range dev.keys {
		if k.End() > w.first {
			r.Keys = append(r.Keys, k)
		}
	}
	for _, s := range dev.sightings {
		if utcDay(s.Interval.Time()) >= w.firstDay {
			r.Sightings = append(r.Sightings, s)
		}
	}
	return r, len(r.Keys) > 0
}

// check returns device d's check: all its keys and sightings, those before
// the window too, shuffled, some of them twice.
func (w *randomWorld) check(rng *rand.Rand, d int) contactlog.Report {
	dev := w.devices[d]
	ss := slices.Clone(dev.sightings)
	for _, s := range dev.sightings {
		if rng.IntN(5) == 0 {
			ss = append(ss, s)
		}
	}
	rng.Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
	return contactlog.Report{Keys: slices.Clone(dev.keys), Sightings: ss}
}

// bruteForce answers a check by the rules, the slow and obvious way:
//   - a sighting counts if its day is in the window, and only uploaded
//     sightings and key intervals of days in the window match it;
//   - reciprocal (if the policy has it): an upload holds a sighting of the
//     checking device's own RPI at the check's sighting's interval, made
//     under the uploader's RPI that the check's sighting heard, the two
//     intervals within the tolerance; scored with the shorter of the two
//     durations and the checking device's attenuation;
//   - else one-sided (if the policy has it): an uploaded key derives the
//     heard RPI for an interval of the window within the tolerance of the
//     sighting's; scored with the checking device's own figures;
//   - the same (heard RPI, interval) counts once;
//   - a day is exposed when its weighted minutes reach the threshold;
//   - the answer is exposed if a day is, its last exposure is the latest
//     exposed day, and its rules are those that matched on exposed days.
func bruteForce(p policy.Policy, now time.Time, uploads []contactlog.Report, check contactlog.Report) api.ExposureResponse {
	firstDay, lastDay := utcDay(p.WindowStart(now)), utcDay(now)
	first := enid.IntervalOf(p.WindowStart(now))
	tol := p.Risk.IntervalTolerance
	near := func(a, b enid.Interval) bool { return int(a)-int(b) <= tol && int(b)-int(a) <= tol }

	type pair struct {
		own, heard enid.RPI
		s          contactlog.Sighting
	}
	var pairs []pair
	oneSided := map[enid.RPI][]enid.Interval{}
	for _, u := range uploads {
		for _, s := range u.Sightings {
			if utcDay(s.Interval.Time()) >= firstDay {
				pairs = append(pairs, pair{rpiAt(u.Keys, s.Interval), s.Heard, s})
			}
		}
		for _, k := range u.Keys {
			key, err := k.Key()
			if err != nil {
				panic(err)
			}
			for i := max(k.Start, first); i < k.End(); i++ {
				oneSided[key.RPI(i)] = append(oneSided[key.RPI(i)], i)
			}
		}
	}

	resp := api.ExposureResponse{}
	for d := firstDay; d <= lastDay; d++ {
		resp.Days = append(resp.Days, api.ExposureDay{Date: d.String(), MinAttenuation: 255})
	}
	type seen struct {
		heard enid.RPI
		at    enid.Interval
	}
	counted := map[seen]bool{}
	for _, s := range check.Sightings {
		day := utcDay(s.Interval.Time())
		if day < firstDay {
			continue
		}
		own := rpiAt(check.Keys, s.Interval)
		minutes, reciprocal, oneSidedMatch := 0, false, false
		if p.Reciprocal() {
			for _, u := range pairs {
				if u.own == s.Heard && u.heard == own && near(u.s.Interval, s.Interval) {
					minutes, reciprocal = min(int(s.Minutes), int(u.s.Minutes)), true
					break
				}
			}
		}
		if !reciprocal && p.OneSided() && slices.ContainsFunc(oneSided[s.Heard], func(i enid.Interval) bool { return near(i, s.Interval) }) {
			minutes, oneSidedMatch = int(s.Minutes), true
		}
		if !reciprocal && !oneSidedMatch || counted[seen{s.Heard, s.Interval}] {
			continue
		}
		counted[seen{s.Heard, s.Interval}] = true
		x := &resp.Days[int(min(day, lastDay)-firstDay)]
		x.Minutes += minutes
		bucket := len(p.Risk.AttenuationThresholds)
		for i, th := range p.Risk.AttenuationThresholds {
			if int(s.Attenuation) <= th {
				bucket = i
				break
			}
		}
		x.WeightedMinutes += minutes * p.Risk.WeightsPercent[bucket]
		x.MinAttenuation = min(x.MinAttenuation, int(s.Attenuation))
		x.Reciprocal = x.Reciprocal || reciprocal
		x.OneSided = x.OneSided || oneSidedMatch
	}
	for i := range resp.Days {
		d := &resp.Days[i]
		d.Exposed = d.WeightedMinutes >= 100*p.Risk.MinimumWeightedMinutes
		if d.Exposed {
			resp.Exposed = true
			resp.LastExposure = d.Date
			resp.Reciprocal = resp.Reciprocal || d.Reciprocal
			resp.OneSided = resp.OneSided || d.OneSided
		}
	}
	return resp
}

// rpiAt returns the RPI that the key of keys valid at i derives for i.
func rpiAt(keys []contactlog.DailyKey, i enid.Interval) enid.RPI {
	for _, k := range keys {
		if k.Contains(i) {
			key, err := k.Key()
			if err != nil {
				panic(err)
			}
			return key.RPI(i)
		}
	}
	panic("no key covers the interval")
}
