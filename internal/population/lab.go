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

// test is one test a person took, from the swab to the result.
type test struct {
	day, resultDay int
	positive       bool
	secret         []byte
	// submitted is set once the authority submitted the result.
	submitted bool
}

// labRecord is a person's tests.
type labRecord struct {
	lastTest int    // the day of the last test
	pending  []test // tests whose result the person has not received yet
}

// lab is the test pipeline: people get tested, the health authority signs
// the results, phones poll them, and app users who test positive upload
// their reports if they consent.
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
	l.clock.advance(d, resultMinute)
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
	sr, err := l.authority.SignResult(api.TestCode(t.secret), res, l.clock.at(t.day, testMinute), time.Time{}, l.clock.advance(d, resultMinute))
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

// deliver has app users' phones poll the results submitted on day d; the
// others learn theirs by letter or phone call, and those of them who run
// a foreign GAEN app may share their keys (gaen.go). Either way the tests
// leave the pending list.
func (l *lab) deliver(ctx context.Context, d int) error {
	l.clock.advance(d, pollMinute)
	for i := range l.people {
		p := &l.people[i]
		keep := p.lab.pending[:0]
		for _, t := range p.lab.pending {
			if !t.submitted {
				keep = append(keep, t)
				continue
			}
			if !p.app {
				// By letter or phone call; a GAEN-only person then
				// shares their keys through their own app's server.
				l.gaen.consider(i, t)
				continue
			}
			if err := l.poll(ctx, i, d, t); err != nil {
				return err
			}
		}
		p.lab.pending = keep
	}
	return nil
}

// poll has person i's phone poll the result of test t on day d and, if it
// is positive, upload the phone's report of the retention window (its
// daily keys and sightings), once and only if the person consents.
func (l *lab) poll(ctx context.Context, i, d int, t test) error {
	p := &l.people[i]
	dctx := withDevice(ctx, i)
	pr, err := l.backend.PollResult(dctx, t.secret)
	if err != nil {
		return fmt.Errorf("population: day %d: polling a result: %w", d, err)
	}
	l.sum.Requests++
	if pr.Result != api.Positive || p.phone.upload.done || l.rng.Float64() >= l.consent {
		return nil
	}
	first := l.clock.uploadFirst(l.clock.advance(d, pollMinute))
	r, err := l.radio.report(&p.phone, i, first, d)
	if err != nil {
		return err
	}
	// Without sightings an upload matches nothing unless the policy
	// matches uploaded keys one-sided.
	if len(r.Sightings) == 0 && !l.oracle.ledger.pol.OneSided() {
		return nil
	}
	if _, err := l.backend.Upload(dctx, pr.UploadAuthorization, r); err != nil {
		return fmt.Errorf("population: day %d: uploading: %w", d, err)
	}
	at := l.clock.advance(d, pollMinute)
	l.oracle.uploaded(i, first, d, r.Keys, at)
	l.sum.Requests++
	p.phone.upload = upload{done: true, testDay: t.day}
	l.sum.Uploads++
	l.sum.Daily[d].Uploads++
	l.sum.GAENKeysPublished += len(r.Keys)
	return nil
}
