package population

import (
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/policy"
)

// The matching rules of the protocol (report version 3), as the oracle
// applies them. They are written from the protocol's definition, not from
// the backend's code, and kept as plain maps of identifiers, so that a bug
// in the backend's indexes, key derivation or scoring shows as a
// difference. An identifier is compared by its prefix
// (contactlog.RPIPrefix), the part of a heard RPI that a report carries:
//
//   - reciprocal: a checked sighting (heard x in interval j, the device's
//     own identifier a at j) matches an uploaded sighting whose uploader
//     broadcast x (derived from its key) and heard a, in an interval
//     within the policy's tolerance of j; it scores the shorter of the two
//     durations with the checking device's attenuation;
//   - one-sided: x is the identifier of an uploaded daily key (only if the
//     policy lists "one_sided") or of an imported GAEN key, at an interval
//     of the key's validity within the tolerance of j; it scores the
//     checking device's own minutes and attenuation;
//   - a sighting counts once, by the reciprocal rule if both match, and a
//     (heard, interval) pair repeated in one check counts once, the first
//     time; sightings of days before the retention window count never,
//     and neither do uploads and imports of days the window left or that
//     the backend took after the check;
//   - a day is exposed when its weighted minutes reach the policy's
//     threshold, and the device when a day is; the answer's last exposure
//     is the latest exposed day, and its rules those that matched on
//     exposed days. That is all a coarse answer (the policy's default)
//     says; a detailed one also lists every day of the window with its
//     figures, matches below the threshold included.

// held is what the backend holds of one uploaded sighting, or of one
// identifier that an uploaded or imported daily key derives.
type held struct {
	interval enid.Interval
	minutes  uint8     // the uploader's; 0 for a key's identifier
	at       time.Time // when the backend took the upload or import
	source   int32     // the person whose upload or export it came from
}

// ledger is what the protocol says the backend holds, and how it answers.
type ledger struct {
	pol policy.Policy
	// recip holds uploaded sightings by (uploader's own identifier, heard
	// identifier); oneSided the identifiers of uploaded and imported keys;
	// each identifier by its prefix.
	recip    map[[2]enid.RPI][]held
	oneSided map[enid.RPI][]held
	// rank orders the sources of matches: the answer's cause on a day is
	// the source of lowest rank (the earliest-tested case). Nil ranks all
	// alike.
	rank func(source int32) int
}

func newLedger(pol policy.Policy) *ledger {
	return &ledger{pol: pol, recip: map[[2]enid.RPI][]held{}, oneSided: map[enid.RPI][]held{}}
}

// addUpload records an upload that the backend took at at: the
// uploader's sightings recs (with what it broadcast meanwhile) and its
// daily keys, by the rules the policy lists.
func (l *ledger) addUpload(recs []rec, keys []contactlog.DailyKey, source int32, at time.Time) {
	if l.pol.Reciprocal() {
		for _, r := range recs {
			k := [2]enid.RPI{contactlog.RPIPrefix(r.own), contactlog.RPIPrefix(r.s.Heard)}
			l.recip[k] = append(l.recip[k], held{r.s.Interval, r.s.Minutes, at, source})
		}
	}
	if l.pol.OneSided() {
		l.addKeys(keys, source, at)
	}
}

// addKeys records the identifiers of daily keys that the backend matches
// one-sided from at on: every interval of each key's validity.
func (l *ledger) addKeys(keys []contactlog.DailyKey, source int32, at time.Time) {
	for _, dk := range keys {
		k, err := dk.Key()
		if err != nil {
			continue // an invalid key derives nothing (the backend skips it)
		}
		for i := dk.Start; i < dk.End(); i++ {
			rpi := contactlog.RPIPrefix(k.RPI(i))
			l.oneSided[rpi] = append(l.oneSided[rpi], held{interval: i, at: at, source: source})
		}
	}
}

// find returns the first of hs that the backend holds at checkAt (the
// window begins on first) within tolerance of interval i, and the longest
// minutes among all those it holds: when several uploads hold the same
// pair, the backend scores the longest.
func (l *ledger) find(hs []held, i enid.Interval, checkAt time.Time, first calendar.Day) (held, uint8, bool) {
	tol := enid.Interval(l.pol.Risk.IntervalTolerance)
	var (
		found   held
		ok      bool
		longest uint8
	)
	for _, h := range hs {
		near := h.interval <= i+tol && i <= h.interval+tol
		if near && !h.at.After(checkAt) && calendar.DayOf(h.interval.Time()) >= first {
			if !ok {
				found, ok = h, true
			}
			longest = max(longest, h.minutes)
		}
	}
	return found, longest, ok
}

// match applies the rules to one checked sighting r at checkAt and returns
// the minutes it scores, the rule, and the source that matched; rule ""
// means no match.
func (l *ledger) match(r rec, checkAt time.Time, first calendar.Day) (minutes int, rule string, source int32) {
	heard := contactlog.RPIPrefix(r.s.Heard)
	if h, longest, ok := l.find(l.recip[[2]enid.RPI{heard, contactlog.RPIPrefix(r.own)}], r.s.Interval, checkAt, first); ok {
		return int(min(r.s.Minutes, longest)), api.RuleReciprocal, h.source
	}
	if h, _, ok := l.find(l.oneSided[heard], r.s.Interval, checkAt, first); ok {
		return int(r.s.Minutes), api.RuleOneSided, h.source
	}
	return 0, "", -1
}

// answer computes the backend's full answer (detailed, whatever the policy
// says; see release) to an exposure check at checkAt by a device that
// sends the sightings of recs, in that order, and for each day of the
// answer the source of lowest rank among its matches, or -1.
func (l *ledger) answer(recs []rec, checkAt time.Time) (api.ExposureResponse, []int32) {
	first, last := calendar.DayOf(l.pol.WindowStart(checkAt)), calendar.DayOf(checkAt)
	days := make([]api.ExposureDay, int(last-first)+1)
	causes := make([]int32, len(days))
	for k := range days {
		days[k] = api.ExposureDay{Date: (first + calendar.Day(k)).Time().Format(api.DateLayout), MinAttenuation: 255}
		causes[k] = -1
	}
	type pair struct {
		heard enid.RPI
		i     enid.Interval
	}
	counted := map[pair]bool{}
	for _, r := range recs {
		day := calendar.DayOf(r.s.Interval.Time())
		heard := contactlog.RPIPrefix(r.s.Heard)
		if day < first || counted[pair{heard, r.s.Interval}] {
			continue
		}
		minutes, rule, source := l.match(r, checkAt, first)
		if rule == "" {
			continue
		}
		counted[pair{heard, r.s.Interval}] = true
		// A sighting of the next day's first interval (clock skew) counts
		// on the last day.
		k := min(int(day-first), len(days)-1)
		x := &days[k]
		x.Minutes += minutes
		x.WeightedMinutes += l.pol.Risk.WeightedMinutes(minutes, int(r.s.Attenuation))
		x.MinAttenuation = min(x.MinAttenuation, int(r.s.Attenuation))
		x.Reciprocal = x.Reciprocal || rule == api.RuleReciprocal
		x.OneSided = x.OneSided || rule == api.RuleOneSided
		if c := causes[k]; c < 0 || (l.rank != nil && l.rank(source) < l.rank(c)) {
			causes[k] = source
		}
	}
	resp := api.ExposureResponse{Days: days}
	for k := range days {
		x := &days[k]
		x.Exposed = l.pol.Risk.Exposed(x.WeightedMinutes)
		if x.Exposed {
			resp.Exposed, resp.LastExposure = true, x.Date
			resp.Reciprocal = resp.Reciprocal || x.Reciprocal
			resp.OneSided = resp.OneSided || x.OneSided
		}
	}
	return resp, causes
}

// release returns what of the full answer resp (answer's) the backend
// gives the device: all of it when the policy's answers are detailed, and
// otherwise the coarse answer, without the days.
func (l *ledger) release(resp api.ExposureResponse) api.ExposureResponse {
	if !l.pol.Detailed() {
		resp.Days = nil
	}
	return resp
}
