package population

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
)

// test is one test a person took, from the swab to the result, and for an
// app user's phone to the upload under it (exchange.go).
type test struct {
	day, resultDay int
	positive       bool
	secret         []byte
	// submitted is set once the authority submitted the result.
	submitted bool
	// phase is what the phone knows of the test; uploadedAt is when the
	// backend took the upload made under its result.
	phase      testPhase
	uploadedAt time.Time
}

// labRecord is a person's tests.
type labRecord struct {
	lastTest int // the day of the last test
	// pending are the tests whose result the person has not received
	// yet, and, for app users, those their phone still polls: to upload,
	// or until the upload is durable.
	pending []test
}

// lab is the test pipeline: people get tested, the health authority signs
// the results, and people learn them: app users from their phones' daily
// exchanges, which upload, if the user consents, under a positive result
// (exchange.go), the others by letter.
type lab struct {
	rng       *mrand.Rand // the run's generator
	people    []person
	clock     *simClock
	backend   *client.Client
	authority *authority.Key
	nonce     nonce
	consent   float64 // Config.Consent
	sum       *Summary
	radio     *radio  // the phones' keys and reports
	oracle    *oracle // told of every upload
	// gaen is the foreign GAEN key server that GAEN-only people's
	// positive results go to.
	gaen *gaenServer
}

// seek has people get tested on day d: symptomatic infected people a day
// after onset (80%), notified app users the day after their notification
// (70%), and people with other illnesses (0.2% a day); nobody is tested
// twice within a week.
func (l *lab) seek(d int) {
	for i := range l.people {
		p := &l.people[i]
		if !l.seeks(p, d) || d-p.lab.lastTest < 7 {
			continue
		}
		p.lab.lastTest = d
		l.take(p, d)
	}
}

// seeks reports whether p seeks a test on day d. It draws once for
// everyone, whichever case applies.
func (l *lab) seeks(p *person, d int) bool {
	switch {
	case p.disease.ever && p.disease.symptomatic && d == p.disease.onset+1:
		return l.rng.Float64() < 0.8
	case p.app && p.phone.firstNotified >= 0 && d == p.phone.firstNotified+1:
		return l.rng.Float64() < 0.7
	default:
		return l.rng.Float64() < 0.002
	}
}

// take has p tested on day d, with a result due one or two days later.
func (l *lab) take(p *person, d int) {
	secret := make([]byte, api.TestSecretSize)
	for j := range secret {
		secret[j] = byte(l.rng.Uint32())
	}
	// The label is part of the derivation: changing it changes every
	// live run's test codes.
	secret = l.nonce.mix("conftrace sim test secret", secret)[:api.TestSecretSize]
	positive := p.disease.detectable(d)
	p.lab.pending = append(p.lab.pending, test{day: d, resultDay: d + 1 + l.rng.IntN(2), positive: positive, secret: secret})
	l.sum.Tests++
	l.sum.Daily[d].Tests++
}

// report has the health authority sign the results due on day d in the
// evening and submit them to the backend.
func (l *lab) report(ctx context.Context, d int) error {
	if _, err := l.clock.advance(ctx, d, resultMinute); err != nil {
		return err
	}
	for i := range l.people {
		pending := l.people[i].lab.pending
		for j := range pending {
			t := &pending[j]
			if t.submitted || t.resultDay != d {
				continue
			}
			if err := l.submit(ctx, d, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// submit signs and submits the result of test t on day d.
func (l *lab) submit(ctx context.Context, d int, t *test) error {
	res := api.Negative
	if t.positive {
		res = api.Positive
		l.sum.PositiveTests++
		l.sum.Daily[d].PositiveTests++
	}
	sr, err := l.authority.SignResult(api.TestCode(t.secret), res, l.clock.at(t.day, testMinute), time.Time{}, l.clock.current())
	if err != nil {
		return fmt.Errorf("population: day %d: signing a result: %w", d, err)
	}
	if err := l.backend.SubmitResult(ctx, sr); err != nil {
		return fmt.Errorf("population: day %d: submitting a result: %w", d, err)
	}
	l.sum.Requests++
	t.submitted = true
	return nil
}

// deliver has the people without the app learn the results submitted on
// day d, by letter or phone call; those of them who run a foreign GAEN app
// may share their keys (gaen.go). App users' phones learn theirs in their
// daily exchange (exchange.go).
func (l *lab) deliver(d int) {
	for i := range l.people {
		p := &l.people[i]
		if p.app {
			continue
		}
		keep := p.lab.pending[:0]
		for _, t := range p.lab.pending {
			if t.submitted {
				l.gaen.consider(i, t)
			} else {
				keep = append(keep, t)
			}
		}
		p.lab.pending = keep
	}
}
