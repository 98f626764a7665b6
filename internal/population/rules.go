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
//     the backend took after the check (or in the same exchange: its
//     check is answered first);
//   - a day is exposed when its weighted minutes reach the policy's
//     threshold, and the device when a day is; the answer's last exposure
//     is the latest exposed day, and its rules those that matched on
//     exposed days. That is all a coarse answer (the policy's default)
//     says; a detailed one also lists every day of the window with its
//     figures, matches below the threshold included;
//   - n-order notifications (docs/n-order.md), when the policy's max_order
//     is above 1: every upload is of an order, 1 under a positive result,
//     k+1 under the order authorization of a phone exposed at order k;
//     each order is scored as above, from the uploads of that order alone,
//     against its own threshold (policy.OrderRisk), and the answer is that
//     of the lowest exposed order, with that order. A match at order j
//     above 1 does not count when the checking phone's own side of the
//     sighting is held at a lower order: its (own, heard) pair among the
//     uploaded sightings, or, if the policy lists "one_sided", its own
//     identifier among the uploaded keys' (the cycle rule at checks). An
//     upload of order k keeps the sightings and keys from its exposing
//     day on, less the sightings whose mirror a lower order holds when
//     the backend takes it (the cycle rule at uploads). A phone exposed
//     at order k below max_order is handed an authorization for order
//     k+1 and its exposing day, the earliest exposed day of order k,
//     unless it used that authorization already.

// held is what the backend holds of one uploaded sighting, or of one
// identifier that an uploaded or imported daily key derives.
type held struct {
	interval enid.Interval
	minutes  uint8     // the uploader's; 0 for a key's identifier
	at       time.Time // when the backend took the upload or import
	source   int32     // the person whose upload or export it came from
	order    uint8     // the order of the upload; imports are of order 1
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

// addUpload records an upload of order that the backend took at at: the
// uploader's sightings recs (with what it broadcast meanwhile) and its
// daily keys, by the rules the policy lists.
func (l *ledger) addUpload(recs []rec, keys []contactlog.DailyKey, source int32, at time.Time, order uint8) {
	if l.pol.Reciprocal() {
		for _, r := range recs {
			k := [2]enid.RPI{contactlog.RPIPrefix(r.own), contactlog.RPIPrefix(r.s.Heard)}
			l.recip[k] = append(l.recip[k], held{r.s.Interval, r.s.Minutes, at, source, order})
		}
	}
	if l.pol.OneSided() {
		l.addKeys(keys, source, at, order)
	}
}

// addKeys records the identifiers of daily keys, of order, that the
// backend matches one-sided from at on: every interval of each key's
// validity.
func (l *ledger) addKeys(keys []contactlog.DailyKey, source int32, at time.Time, order uint8) {
	for _, dk := range keys {
		k, err := dk.Key()
		if err != nil {
			continue // an invalid key derives nothing (the backend skips it)
		}
		for i := dk.Start; i < dk.End(); i++ {
			rpi := contactlog.RPIPrefix(k.RPI(i))
			l.oneSided[rpi] = append(l.oneSided[rpi], held{interval: i, at: at, source: source, order: order})
		}
	}
}

// find returns the first of hs of an order in orders that the backend
// holds at checkAt (the window begins on first) within tolerance of
// interval i, and the longest minutes among all those it holds: when
// several uploads hold the same pair, the backend scores the longest.
func (l *ledger) find(hs []held, i enid.Interval, checkAt time.Time, first calendar.Day, orders func(uint8) bool) (held, uint8, bool) {
	tol := enid.Interval(l.pol.Risk.IntervalTolerance)
	var (
		found   held
		ok      bool
		longest uint8
	)
	for _, h := range hs {
		near := h.interval <= i+tol && i <= h.interval+tol
		// Strictly before: an exchange's check is answered before the
		// exchange's own upload is taken, at the same simulated time.
		if near && orders(h.order) && h.at.Before(checkAt) && calendar.DayOf(h.interval.Time()) >= first {
			if !ok {
				found, ok = h, true
			}
			longest = max(longest, h.minutes)
		}
	}
	return found, longest, ok
}

// match applies the rules of order k to one checked sighting r at checkAt
// and returns the minutes it scores, the rule, and the source that
// matched; rule "" means no match.
func (l *ledger) match(r rec, checkAt time.Time, first calendar.Day, k uint8) (minutes int, rule string, source int32) {
	heard := contactlog.RPIPrefix(r.s.Heard)
	of := func(o uint8) bool { return o == k }
	h, longest, ok := l.find(l.recip[[2]enid.RPI{heard, contactlog.RPIPrefix(r.own)}], r.s.Interval, checkAt, first, of)
	if ok {
		minutes, rule, source = int(min(r.s.Minutes, longest)), api.RuleReciprocal, h.source
	} else if h, _, ok = l.find(l.oneSided[heard], r.s.Interval, checkAt, first, of); ok {
		minutes, rule, source = int(r.s.Minutes), api.RuleOneSided, h.source
	}
	if !ok || (k > 1 && l.heldBelow(r, checkAt, first, k)) {
		return 0, "", -1
	}
	return minutes, rule, source
}

// heldBelow reports whether the checking phone's own side of sighting r
// is held at an order below k: the cycle rule at checks.
func (l *ledger) heldBelow(r rec, checkAt time.Time, first calendar.Day, k uint8) bool {
	below := func(o uint8) bool { return o < k }
	own := contactlog.RPIPrefix(r.own)
	if _, _, ok := l.find(l.recip[[2]enid.RPI{own, contactlog.RPIPrefix(r.s.Heard)}], r.s.Interval, checkAt, first, below); ok {
		return true
	}
	_, _, ok := l.find(l.oneSided[own], r.s.Interval, checkAt, first, below)
	return ok && l.pol.OneSided()
}

// mirrored reports whether an upload of order k, taken at at with the
// window from first, leaves out sighting r of its uploader: whether a
// lower order holds r's mirror (the cycle rule at uploads).
func (l *ledger) mirrored(r rec, at time.Time, first calendar.Day, k uint8) bool {
	below := func(o uint8) bool { return o < k }
	_, _, ok := l.find(l.recip[[2]enid.RPI{contactlog.RPIPrefix(r.s.Heard), contactlog.RPIPrefix(r.own)}], r.s.Interval, at, first, below)
	return ok && l.pol.Reciprocal()
}

// answer computes the backend's full answer (detailed, whatever the policy
// says; see release) to an exposure check at checkAt by a device that
// sends the sightings of recs, in that order, and for each day of the
// answer the source of lowest rank among its order-1 matches, or -1: the
// answer of the lowest order at which the device is exposed, or order 1's
// if none, with its order (0 if none).
func (l *ledger) answer(recs []rec, checkAt time.Time) (api.ExposureResponse, []int32) {
	resp, causes := l.orderAnswer(recs, checkAt, 1)
	for k := uint8(2); !resp.Exposed && int(k) <= l.pol.MaxOrder(); k++ {
		if r, _ := l.orderAnswer(recs, checkAt, k); r.Exposed {
			resp = r
			for i := range causes {
				causes[i] = -1
			}
		}
	}
	return resp, causes
}

// orderAnswer is answer at order alone.
func (l *ledger) orderAnswer(recs []rec, checkAt time.Time, order uint8) (api.ExposureResponse, []int32) {
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
		minutes, rule, source := l.match(r, checkAt, first, order)
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
	risk := l.pol.OrderRisk(int(order))
	for j := range days {
		x := &days[j]
		x.Exposed = risk.Exposed(x.WeightedMinutes)
		if x.Exposed {
			resp.Exposed, resp.LastExposure, resp.Order = true, x.Date, int(order)
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
