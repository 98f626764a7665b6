package population

import (
	mrand "math/rand/v2"
	"sort"
)

// encounter is two people together for a while, at some distance.
type encounter struct {
	a, b          int
	start, length int // minutes
	dist          float64
	kind          encounterKind
}

// encounterKind says where an encounter happens, for the GPS traces.
type encounterKind uint8

const (
	atHome encounterKind = iota
	atGroup
	inCommunity
)

// closeMeters and closeMinutes define a true close contact: at least
// closeMinutes within closeMeters of an infectious person.
const (
	closeMeters  = 2
	closeMinutes = 15
)

// drawEncounters draws a day's encounters in a fixed order: households,
// then workplaces and schools on weekdays, then the community.
func drawEncounters(rng *mrand.Rand, people []person, weekday bool) []encounter {
	es := householdEncounters(rng, people, nil)
	if weekday {
		es = groupEncounters(rng, people, es)
	}
	return communityEncounters(rng, len(people), es)
}

// householdEncounters appends to es an evening stretch together for every
// pair of members of a household.
func householdEncounters(rng *mrand.Rand, people []person, es []encounter) []encounter {
	n := len(people)
	for i := 0; i < n; {
		j := i
		for j < n && people[j].household == people[i].household {
			j++
		}
		for a := i; a < j; a++ {
			for b := a + 1; b < j; b++ {
				es = append(es, encounter{a, b, 17*60 + rng.IntN(120), 30 + rng.IntN(150), 0.5 + 1.5*rng.Float64(), atHome})
			}
		}
		i = j
	}
	return es
}

// groupEncounters appends to es, for every member of a workplace or
// school, one to three meetings with other members, group by group.
func groupEncounters(rng *mrand.Rand, people []person, es []encounter) []encounter {
	groups := map[int][]int{}
	var ids []int
	for i := range people {
		if g := people[i].group; g >= 0 {
			if groups[g] == nil {
				ids = append(ids, g)
			}
			groups[g] = append(groups[g], i)
		}
	}
	sort.Ints(ids)
	for _, g := range ids {
		m := groups[g]
		if len(m) < 2 {
			continue
		}
		for _, a := range m {
			for range 1 + rng.IntN(3) {
				b := m[rng.IntN(len(m))]
				if b != a {
					es = append(es, encounter{a, b, 9*60 + rng.IntN(420), 10 + rng.IntN(50), 1 + 2*rng.Float64(), atGroup})
				}
			}
		}
	}
	return es
}

// communityEncounters appends to es about one chance encounter per person.
func communityEncounters(rng *mrand.Rand, n int, es []encounter) []encounter {
	for a := range n {
		for range rng.IntN(3) {
			b := rng.IntN(n)
			if b != a {
				es = append(es, encounter{a, b, 8*60 + rng.IntN(720), 5 + rng.IntN(26), 1 + 5*rng.Float64(), inCommunity})
			}
		}
	}
	return es
}

// meet plays day d's encounters in order: each may pass on the infection
// and, between app users, has the two phones record each other; an app
// user's phone also records a GAEN-only person's.
func (w *world) meet(d int, es []encounter) error {
	heard := map[pairInterval]bool{}
	for _, e := range es {
		w.transmit(d, e)
		pa, pb := &w.people[e.a], &w.people[e.b]
		var err error
		switch {
		case pa.app && pb.app:
			err = w.radio.exchange(d, e, pa, pb, heard)
		case pa.app && pb.gaen:
			err = w.radio.overhear(d, e, e.a, pa, e.b, heard)
		case pa.gaen && pb.app:
			err = w.radio.overhear(d, e, e.b, pb, e.a, heard)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// transmit records for the ground truth how long an infectious person was
// close to the other, and infects the other with the encounter's
// probability.
func (w *world) transmit(d int, e encounter) {
	pa, pb := &w.people[e.a].disease, &w.people[e.b].disease
	if e.dist <= closeMeters {
		if pa.infectious(d) {
			w.oracle.addClose(e.a, e.b, e.length)
		}
		if pb.infectious(d) {
			w.oracle.addClose(e.b, e.a, e.length)
		}
	}
	p := transmission(e)
	switch {
	case pa.infectious(d) && !pb.ever:
		if w.rng.Float64() < p {
			w.infect(e.b, d, e.a)
		}
	case pb.infectious(d) && !pa.ever:
		if w.rng.Float64() < p {
			w.infect(e.a, d, e.b)
		}
	}
}

// infect infects person i on day d, by person by, and counts the
// infection.
func (w *world) infect(i, d, by int) {
	if w.people[i].disease.infect(w.rng, d, by) {
		w.sum.Infections++
		w.sum.Daily[d].Infections++
	}
}
