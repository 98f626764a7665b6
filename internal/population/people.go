package population

import (
	"math"
	mrand "math/rand/v2"
)

// person is what the simulator knows about one person. The parts belong
// to the phases of a day: the disease to the epidemic, lab to testing,
// phone to the app.
type person struct {
	household int
	group     int // workplace or school; -1 for people who stay home
	app       bool
	// gaen is set for the people who run a foreign GAEN app instead of
	// this one (Config.GAENShare): app phones hear theirs, and their keys
	// reach the backend only through a GAEN key export.
	gaen    bool
	disease disease
	lab     labRecord
	phone   phone
	// shared is set once a GAEN-only person's keys were exported.
	shared gaenCase
}

// newPeople draws n people, with phones that log days days: households,
// workplaces and schools, who runs the app (with probability adoption),
// and the first infections.
func newPeople(rng *mrand.Rand, n, days int, adoption float64) []person {
	people := make([]person, n)
	assignHouseholds(rng, people)
	for i := range people {
		people[i].lab.lastTest = -100 // never tested
	}
	assignGroups(rng, people, adoption, days)
	// Seed the epidemic: 2% infected over the five days before the start.
	for range max(2, n/50) {
		i, d := rng.IntN(n), -rng.IntN(5)
		people[i].disease.infect(rng, d, -1)
	}
	return people
}

// assignHouseholds puts people in households of 1 to 5, with sizes
// roughly as in European censuses; the members of a household are
// adjacent.
func assignHouseholds(rng *mrand.Rand, people []person) {
	sizes := []float64{0.28, 0.35, 0.15, 0.15, 0.07}
	n := len(people)
	hh := 0
	for i := 0; i < n; hh++ {
		size, u := 1, rng.Float64()
		for k, p := range sizes {
			if u < p {
				size = k + 1
				break
			}
			u -= p
		}
		for j := 0; j < size && i < n; j, i = j+1, i+1 {
			people[i].household = hh
		}
	}
}

// assignGroups sends 70% of people to workplaces of about 12 and 20% to
// classes of about 24, and has 10% stay home. In the same pass, which
// fixes the order of the draws, it decides who runs the app and gives
// everyone a phone.
func assignGroups(rng *mrand.Rand, people []person, adoption float64, days int) {
	work, school := 0, 0
	workLeft, schoolLeft := 0, 0
	nextGroup := 0
	for i := range people {
		p := &people[i]
		u := rng.Float64()
		switch {
		case u < 0.7:
			if workLeft == 0 {
				work, workLeft = nextGroup, 4+rng.IntN(17)
				nextGroup++
			}
			p.group, workLeft = work, workLeft-1
		case u < 0.9:
			if schoolLeft == 0 {
				school, schoolLeft = nextGroup, 20+rng.IntN(9)
				nextGroup++
			}
			p.group, schoolLeft = school, schoolLeft-1
		default:
			p.group = -1
		}
		p.app = rng.Float64() < adoption
		p.phone = newPhone(rng.Float64()*10-5, days)
	}
}

// disease is the course of a person's infection, in simulation days.
type disease struct {
	ever bool // ever infected
	// infected is the day of infection; the person is infectious on days
	// [infFrom, infTo); symptoms, if any, begin on onset.
	infected, infFrom, infTo, onset int
	symptomatic                     bool
	// by is the person who infected them; -1 for the infections that
	// seed the epidemic.
	by int
}

// infect makes the person infected on day d if susceptible, drawing the
// course of the disease: infectious from 2 to 3 days after infection for
// 6 to 8 days; 60% get symptoms 4 to 6 days after infection. It reports
// whether the person was susceptible. by is who infected them, or -1.
func (c *disease) infect(rng *mrand.Rand, d, by int) bool {
	if c.ever {
		return false
	}
	c.ever, c.infected, c.by = true, d, by
	c.infFrom = d + 2 + rng.IntN(2)
	c.infTo = c.infFrom + 6 + rng.IntN(3)
	c.symptomatic = rng.Float64() < 0.6
	c.onset = d + 4 + rng.IntN(3)
	return true
}

// infectious reports whether the person can infect others on day d.
func (c *disease) infectious(d int) bool { return c.ever && d >= c.infFrom && d < c.infTo }

// detectable reports whether a test taken on day d finds the infection.
func (c *disease) detectable(d int) bool { return c.ever && d >= c.infected+1 && d < c.infTo+3 }

// transmission returns the probability that an encounter of e.length
// minutes at e.dist metres infects a susceptible person.
func transmission(e encounter) float64 {
	return 1 - math.Exp(-0.003*float64(e.length)/max(1, e.dist*e.dist))
}
