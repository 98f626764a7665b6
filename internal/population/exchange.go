package population

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
)

// Every app user's phone makes one exchange with the backend a simulated
// day, at checkMinute, as the protocol has phones do (client.Exchange): it
// always carries the phone's report of the retention window (its daily keys
// and sightings), which the backend checks for exposure; while the phone
// has a test whose result it has not learnt, or whose upload it has not
// seen durable, the test's secret, which polls the result; and once the
// user, told a positive result by an earlier exchange, consented to share,
// the upload flag, which uploads the same report under the polled result.
// So a phone learns a result signed at 23:00 in that day's exchange, and
// uploads in its next day's; its following exchange must say the upload is
// durable, and one still pending two days on is a mismatch.
//
// The backend matches an upload as soon as it takes it, and answers an
// exchange's check before it takes the exchange's upload. For the oracle
// to know which uploads each check saw, the day's uploading exchanges go
// one after the other, a millisecond apart, just before checkMinute, and
// the others then run concurrently at checkMinute.

// durableWithin is how long after an upload the phone's exchanges may
// still hear that it is not durable yet: a backend flushes its journal
// hourly by default, so a day is plenty, and two is a failure.
const durableWithin = 48 * time.Hour

// uploadSpacing separates the day's uploading exchanges.
const uploadSpacing = time.Millisecond

// testPhase is what a phone knows of one of its tests.
type testPhase uint8

const (
	// awaitingResult: the phone polls until the result comes.
	awaitingResult testPhase = iota
	// consented: the result is positive and the user consented to share;
	// the phone's next exchange uploads under it.
	consented
	// awaitingDurable: the phone uploaded, and polls until the backend
	// says the upload is durable.
	awaitingDurable
)

// plan is what an app user's exchange of the day carries besides its
// report.
type plan struct {
	test   int  // the index in lab.pending of the test it polls, or -1
	upload bool // it uploads under that test's result
	// order: it uploads under the order authorization its user
	// consented to instead (orders.go).
	order bool
}

// exchanged is one exchange and the backend's answer.
type exchanged struct {
	resp api.ExchangeResponse
	// at is the time whose retention window the check followed; first the
	// first day of the report.
	at    time.Time
	first int
	// took is when the backend had taken the upload, for an exchange that
	// uploaded.
	took time.Time
}

// exchanges has every app user make its daily exchange of day d, and
// compares every answer with what the protocol requires: the check's with
// the oracle's, the poll's with the simulator's record of the tests, the
// upload's with the report it carried.
func (w *world) exchanges(ctx context.Context, d int) error {
	var users, uploaders, others []int
	plans := make([]plan, len(w.people))
	for i := range w.people {
		if !w.people[i].app {
			continue
		}
		users = append(users, i)
		plans[i] = w.lab.plan(i, d)
		w.planOrder(i, &plans[i])
		if plans[i].upload || plans[i].order {
			uploaders = append(uploaders, i)
		} else {
			others = append(others, i)
		}
	}
	got := make([]exchanged, len(w.people))
	checkAt := w.clock.at(d, checkMinute)
	for k, i := range uploaders {
		x, err := w.uploadExchange(ctx, i, d, checkAt.Add(-time.Duration(len(uploaders)-k)*uploadSpacing), plans[i])
		if err != nil {
			return err
		}
		got[i] = x
	}
	checkAt, err := w.clock.advance(ctx, d, checkMinute)
	if err != nil {
		return err
	}
	err = w.checker.each(ctx, len(others), checkAt, func(ctx context.Context, j int, now time.Time) error {
		i := others[j]
		x, err := w.exchange(ctx, i, d, now, plans[i])
		got[i] = x
		return err
	})
	if err != nil {
		return err
	}
	// The oracle learns every upload the backend took before it answers
	// for any check: which of them a check saw, their times say.
	for _, i := range uploaders {
		if err := w.lab.tookUpload(i, d, plans[i], got[i]); err != nil {
			return err
		}
	}
	for _, i := range users {
		want, cause := w.oracle.expected(i, d, got[i].at)
		w.record(i, d, got[i].resp.Exposure, w.oracle.ledger.release(want), cause)
		w.lab.answered(i, plans[i], got[i])
		w.considerOrder(i, got[i])
	}
	return nil
}

// exchange has device i make its exchange of day d at now (the backend's
// time), as pl says.
func (w *world) exchange(ctx context.Context, i, d int, now time.Time, pl plan) (exchanged, error) {
	p := &w.people[i]
	first := w.clock.firstDay(now)
	r, err := w.radio.report(&p.phone, i, first, d)
	if err != nil {
		return exchanged{}, err
	}
	daily := client.Daily{Report: r}
	if pl.test >= 0 {
		daily.Secret, daily.Upload = p.lab.pending[pl.test].secret, pl.upload
	}
	if pl.order {
		daily.Upload, daily.Authorization = true, p.phone.order.token
	}
	resp, err := w.backend.Exchange(withDevice(ctx, i), daily)
	if err != nil {
		return exchanged{}, fmt.Errorf("population: day %d: daily exchange: %w", d, err)
	}
	return exchanged{resp: resp, at: now, first: first, took: w.clock.current()}, nil
}

// uploadExchange has device i make its exchange of day d, which uploads, at
// the simulated time at (or now, with a live backend). The upload cannot be
// made twice, so a live exchange during which the backend's day changed,
// whose check followed an unknown window, is not simply asked again as the
// others are (checker.one): the check alone is, in a second exchange that
// polls without uploading.
func (w *world) uploadExchange(ctx context.Context, i, d int, at time.Time, pl plan) (exchanged, error) {
	now, err := w.clock.advanceTo(ctx, at)
	if err != nil {
		return exchanged{}, err
	}
	x, err := w.exchange(ctx, i, d, now, pl)
	if err != nil || !w.clock.live {
		return x, err
	}
	for !w.clock.sameWindow(x.at, time.Now()) {
		w.checker.retries.Add(1)
		again, err := w.exchange(ctx, i, d, time.Now(), plan{test: pl.test})
		if err != nil {
			return x, err
		}
		x.resp.Exposure, x.resp.Result, x.at = again.resp.Exposure, again.resp.Result, again.at
	}
	return x, nil
}

// plan returns what device i's exchange of day d carries besides its
// report. A phone polls a test while its result is pending, then, if the
// user consented to share a positive result, once more to upload under it,
// and then until the upload is durable. An exchange carries one secret;
// a phone has one test at a time, but for a new test while its upload
// waits to be durable (only a live backend's can wait that long: tests are
// a week apart), and then polls the new test's result first. A phone whose
// user consented but that recorded no sighting in the window has nothing
// to share unless the policy matches uploaded keys one-sided: it does not
// upload.
func (l *lab) plan(i, d int) plan {
	p := &l.people[i]
	p.lab.pending = slices.DeleteFunc(p.lab.pending, func(t test) bool {
		return t.phase == consented && !l.oracle.ledger.pol.OneSided() && len(p.phone.recs(l.clock.firstDay(l.clock.current()), d)) == 0
	})
	// What the phone polls first, by phase.
	rank := [...]int{consented: 0, awaitingResult: 1, awaitingDurable: 2}
	pl := plan{test: -1}
	for k, t := range p.lab.pending {
		if pl.test < 0 || rank[t.phase] < rank[p.lab.pending[pl.test].phase] {
			pl = plan{test: k, upload: t.phase == consented}
		}
	}
	return pl
}

// tookUpload records the upload of device i's exchange of day d, x, made
// as pl said: the oracle learns what the backend took and when.
func (l *lab) tookUpload(i, d int, pl plan, x exchanged) error {
	if pl.order {
		return l.tookOrderUpload(i, d, x)
	}
	if x.resp.Upload == nil {
		return nil // refused: answered counts it
	}
	p := &l.people[i]
	keys, err := l.radio.dailyKeys(i, x.first, d)
	if err != nil {
		return err
	}
	l.oracle.uploaded(i, x.first, d, keys, x.took)
	p.phone.upload = upload{done: true, testDay: p.lab.pending[pl.test].day}
	s := l.sum
	s.Uploads++
	s.Daily[d].Uploads++
	s.GAENKeysPublished += len(keys)
	if !l.tookAll(i, d, x) {
		s.ExchangeMismatches++
	}
	return nil
}

// tookAll reports whether the backend took every key and sighting of the
// window that device i's exchange x uploaded on day d: the report's, less
// those of days the backend's window had left (only a live backend's can
// move while the exchange is under way).
func (l *lab) tookAll(i, d int, x exchanged) bool {
	counts := func(t time.Time) (sightings, keys int) {
		first := max(x.first, l.clock.firstDay(t))
		return len(l.people[i].phone.sightings(first, d)), max(0, d-first+1)
	}
	up := x.resp.Upload
	s, k := counts(x.at)
	s2, k2 := counts(x.took)
	return (up.Sightings == s && up.Keys == k) || (up.Sightings == s2 && up.Keys == k2)
}

// answered updates device i's tests with the answer x to its exchange,
// made as pl said: what its poll learnt and whether its upload was taken
// and is durable. A test the phone no longer polls leaves its list.
func (l *lab) answered(i int, pl plan, x exchanged) {
	if pl.test < 0 {
		return
	}
	p := &l.people[i]
	t := &p.lab.pending[pl.test]
	var keep bool
	switch {
	case x.resp.Result == nil:
		l.sum.ExchangeMismatches++
	case pl.upload:
		keep = l.uploaded(t, x)
	case t.phase == awaitingDurable:
		keep = l.durable(t, x)
	default:
		keep = l.learn(p, t, x.resp.Result)
	}
	if !keep {
		p.lab.pending = append(p.lab.pending[:pl.test], p.lab.pending[pl.test+1:]...)
	}
}

// learn handles the poll answer res to test t of person p, whose result
// the phone had not learnt, and reports whether the phone polls it again.
// The answer must be the result the authority signed, or pending before
// it did; a positive one hands out an upload authorization. A user told a
// positive result decides there and then whether to share (Config.Consent),
// unless their phone uploaded already.
func (l *lab) learn(p *person, t *test, res *api.PollResultResponse) bool {
	want := api.Pending
	switch {
	case t.submitted && t.positive:
		want = api.Positive
	case t.submitted:
		want = api.Negative
	}
	if res.Result != want || res.Uploaded || res.UploadPending || (want == api.Positive) != (len(res.UploadAuthorization) == api.AuthorizationSize) {
		l.sum.ExchangeMismatches++
		return false
	}
	if want != api.Positive {
		return want == api.Pending
	}
	if p.phone.upload.done || l.rng.Float64() >= l.consent {
		return false
	}
	t.phase = consented
	return true
}

// uploaded handles the answer x to the exchange that uploaded under test
// t's result, and reports whether the phone polls t again: the upload
// must have been taken, and the poll, answered after it, must say so.
func (l *lab) uploaded(t *test, x exchanged) bool {
	res := x.resp.Result
	if x.resp.Upload == nil || x.resp.UploadError != nil || res.Result != api.Positive || !(res.Uploaded || res.UploadPending) {
		l.sum.ExchangeMismatches++
		return false
	}
	t.phase, t.uploadedAt = awaitingDurable, x.took
	return l.durable(t, x)
}

// durable handles the poll answer x of test t, whose upload the phone made,
// and reports whether the phone polls t again: until the backend says the
// upload is durable, for durableWithin at most. An upload the backend says
// it lost (it hands out an authorization again) is a mismatch too.
func (l *lab) durable(t *test, x exchanged) bool {
	res := x.resp.Result
	switch {
	case res.Result == api.Positive && res.Uploaded && !res.UploadPending:
		l.sum.UploadsDurable++
		return false
	case res.Result == api.Positive && res.UploadPending && !res.Uploaded && x.at.Sub(t.uploadedAt) < durableWithin:
		return true
	}
	l.sum.ExchangeMismatches++
	return false
}
