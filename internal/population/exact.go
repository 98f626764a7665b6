package population

import (
	"time"

	"github.com/conftrace/conftrace/policy"
)

// oracle is the Bluetooth side's ground truth: what the protocol requires
// the backend to answer, computed from the simulator's own record of the
// tuples each phone logged and uploaded, and who truly was close to an
// infectious person.
type oracle struct {
	risk   policy.Risk // the attested risk policy
	clock  *simClock
	people []person
	// close accumulates true minutes within closeMeters of (infector,
	// contact) while the infector is infectious.
	close map[[2]int32]int
	// should is set for the devices the protocol required the backend to
	// tell "exposed" at least once.
	should []bool
}

func newOracle(risk policy.Risk, clock *simClock, people []person) *oracle {
	return &oracle{risk: risk, clock: clock, people: people, close: map[[2]int32]int{}, should: make([]bool, len(people))}
}

// addClose records minutes that infectious person infector spent within
// closeMeters of contact.
func (o *oracle) addClose(infector, contact, minutes int) {
	o.close[[2]int32{int32(infector), int32(contact)}] += minutes
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

// expected computes, from the simulator's own record, whether the protocol
// requires the backend to answer "exposed" to device i, which holds the
// tuples of days up to d, checking at the backend's time checkAt: the
// tuples of the retention window at checkAt, against the uploads the
// backend acknowledged by then. It also returns which uploading case (the
// one tested earliest) contributed to an exposed day, or -1. Both the
// simulated and the live clock come through checkAt, so one rule serves
// both.
func (o *oracle) expected(i, d int, checkAt time.Time) (bool, int) {
	exposed, cause := false, -1
	for k := o.clock.firstDay(checkAt); k <= d; k++ {
		dayExposed, dayCause := o.expectedOn(i, k, checkAt)
		if dayExposed {
			exposed = true
			if cause < 0 || o.testDay(dayCause) < o.testDay(cause) {
				cause = dayCause
			}
		}
	}
	return exposed, cause
}

// expectedOn scores device i's tuples of day k, as the backend does per
// UTC day: only those whose partner logged this phone too (a mirror) and
// uploaded the day by checkAt count, each with the shorter of the two
// durations and the checking phone's attenuation. It returns whether the
// day's score exposes the device, and the earliest-tested case among the
// partners that counted, or -1.
func (o *oracle) expectedOn(i, k int, checkAt time.Time) (bool, int) {
	sum := 0
	cause := -1
	for _, r := range o.people[i].phone.log[k] {
		up := &o.people[r.partner].phone.upload
		if !up.done || up.at.After(checkAt) || r.mirror == 0 || k < up.first || k > up.day {
			continue
		}
		sum += o.risk.WeightedMinutes(int(min(r.t.Duration, r.mirror)), int(r.t.Attenuation))
		if cause < 0 || up.testDay < o.testDay(cause) {
			cause = int(r.partner)
		}
	}
	return o.risk.Exposed(sum), cause
}

// testDay returns the day on which uploading case i's test was taken.
func (o *oracle) testDay(i int) int { return o.people[i].phone.upload.testDay }

// trueContacts counts the distinct people who spent at least closeMinutes
// within closeMeters of an uploading case while it was infectious, those
// of them with the app, and those of them notified.
func (o *oracle) trueContacts() (all, withApp, notified int) {
	contacts := map[int32]bool{}
	for k, m := range o.close {
		if m >= closeMinutes && o.people[k[0]].phone.upload.done {
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
