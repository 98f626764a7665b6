package population

import (
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/policy"
)

// oracle is the Bluetooth side's ground truth: what the protocol requires
// the backend to answer, recomputed by the rules of rules.go from the
// simulator's own record of the sightings each phone recorded, what it
// broadcast meanwhile, and what reached the backend (uploads, GAEN
// imports); and who truly was close to an infectious person.
type oracle struct {
	ledger *ledger
	clock  *simClock
	people []person
	// close accumulates true minutes within closeMeters of (infector,
	// contact) while the infector is infectious.
	close map[[2]int32]int
	// should is set for the devices the protocol required the backend to
	// tell "exposed" at least once.
	should []bool
	// used holds the order authorizations the backend took an upload
	// under (orders.go).
	used map[orderUse]bool
}

func newOracle(pol policy.Policy, clock *simClock, people []person) *oracle {
	o := &oracle{ledger: newLedger(pol), clock: clock, people: people, close: map[[2]int32]int{}, should: make([]bool, len(people)), used: map[orderUse]bool{}}
	o.ledger.rank = func(source int32) int { return o.testDay(int(source)) }
	return o
}

// addClose records minutes that infectious person infector spent within
// closeMeters of contact.
func (o *oracle) addClose(infector, contact, minutes int) {
	o.close[[2]int32{int32(infector), int32(contact)}] += minutes
}

// uploaded records that the backend took at at person i's upload of its
// sightings of days first to last and of keys: from then on they match.
func (o *oracle) uploaded(i, first, last int, keys []contactlog.DailyKey, at time.Time) {
	o.ledger.addUpload(o.people[i].phone.recs(first, last), keys, int32(i), at, 1)
}

// imported records that the backend imported, at at, the keys of GAEN-only
// person i that it takes (see importable).
func (o *oracle) imported(i int, keys []contactlog.DailyKey, at time.Time) {
	o.ledger.addKeys(keys, int32(i), at, 1)
}

// mustNotify records that the protocol requires device i to be told
// "exposed", and reports whether that is the first time.
func (o *oracle) mustNotify(i int) bool {
	if o.should[i] {
		return false
	}
	o.should[i] = true
	return true
}

// expected computes the full answer (ledger.answer's, with every day's
// figures; ledger.release gives what the policy has the backend say) that
// the protocol requires the backend to give device i, which holds the
// sightings of days up to d, checking at the backend's time checkAt: its
// sightings of the retention window at checkAt, scored against the
// uploads and imports the backend took by then. It also returns which case
// (the one tested earliest) contributed to an exposed day, or -1. Both the
// simulated and the live clock come through checkAt, so one rule serves
// both.
func (o *oracle) expected(i, d int, checkAt time.Time) (api.ExposureResponse, int) {
	resp, causes := o.ledger.answer(o.people[i].phone.recs(o.clock.firstDay(checkAt), d), checkAt)
	o.authorize(i, &resp, checkAt)
	cause := -1
	for k, day := range resp.Days {
		if c := int(causes[k]); day.Exposed && (cause < 0 || o.testDay(c) < o.testDay(cause)) {
			cause = c
		}
	}
	return resp, cause
}

// testDay returns the day on which case i's positive test was taken, for
// an app user who uploaded or a GAEN-only person whose keys were exported.
func (o *oracle) testDay(i int) int {
	if p := &o.people[i]; p.gaen {
		return p.shared.testDay
	}
	return o.people[i].phone.upload.testDay
}

// sharedKeys reports whether person i's keys reached the backend: by
// upload, or in a GAEN export.
func (o *oracle) sharedKeys(i int) bool {
	p := &o.people[i]
	return p.phone.upload.done || p.shared.done
}

// trueContacts counts the distinct people who spent at least closeMinutes
// within closeMeters of a case whose keys reached the backend while it was
// infectious, those of them with the app, and those of them notified.
func (o *oracle) trueContacts() (all, withApp, notified int) {
	contacts := map[int32]bool{}
	for k, m := range o.close {
		if m >= closeMinutes && o.sharedKeys(int(k[0])) {
			contacts[k[1]] = true
		}
	}
	for c := range contacts {
		all++
		if o.people[c].app {
			withApp++
		}
		if o.people[c].phone.firstNotified >= 0 {
			notified++
		}
	}
	return all, withApp, notified
}
