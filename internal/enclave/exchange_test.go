package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/policy"
)

// exposedPair uploads the sightings of a fresh device that met another
// for 20 minutes an hour ago, and returns the infected device's report and
// the report of the device it exposed.
func (v *env) exposedPair() (infected, contact contactlog.Report) {
	v.t.Helper()
	a, b := newDevice(), newDevice()
	ab, ba := metAt(a, b, v.now().Add(-time.Hour), 2)
	return a.report(ab...), b.report(ba...)
}

// TestExchangeCheck: an exchange that only checks is answered as the
// exposure check of its report, and says nothing else.
func TestExchangeCheck(t *testing.T) {
	v := newEnv(t, bothRules, detailed)
	inf, contact := v.exposedPair()
	v.mustUpload(inf)
	_, stranger := encounter(v.now().Add(-time.Hour), 10, 50)
	for name, r := range map[string]contactlog.Report{"exposed": contact, "a stranger": stranger, "empty": {}, "the uploader": inf} {
		got, err := v.exchange(0, nil, nil, r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := v.check(r); !equalExposure(got.Exposure, want) || got.Result != nil || got.Upload != nil || got.UploadError != nil {
			t.Errorf("%s: %+v, want only the check's answer %+v", name, got, want)
		}
	}
}

// TestExchangeCheckAndPoll: an exchange that polls answers the poll as
// PollResult would, beside the check: pending, negative, positive with
// its authorization, upload pending, uploaded.
func TestExchangeCheckAndPoll(t *testing.T) {
	v := newEnv(t)
	inf, contact := v.exposedPair()
	pending, negative, positive, uploaded := newSecret(), newSecret(), newSecret(), newSecret()
	v.submit(negative, api.Negative)
	v.submit(positive, api.Positive)
	v.submit(uploaded, api.Positive)
	pr, err := v.poll(uploaded)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.upload(pr.UploadAuthorization, inf); err != nil {
		t.Fatal(err)
	}
	for _, flush := range []bool{false, true} {
		if flush {
			v.flushAll()
		}
		for name, secret := range map[string][]byte{"pending": pending, "negative": negative, "positive": positive, "uploaded": uploaded} {
			got, err := v.exchange(api.ExchangePoll, secret, nil, contact)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want, err := v.poll(secret)
			if err != nil {
				t.Fatal(err)
			}
			if got.Result == nil || !reflect.DeepEqual(*got.Result, want) || !got.Exposure.Exposed || got.Upload != nil || got.UploadError != nil {
				t.Errorf("%s, flushed %v: %+v; want exposed and the poll's answer %+v", name, flush, got, want)
			}
		}
	}
}

// TestExchangeUpload: a positive device's exchange uploads its report
// under the result it polls, with no authorization, or under the
// authorization it carries; the upload matches at once and the poll in the
// same answer says it is pending. An upload refused (already made, nothing
// authorizing it) is said in the answer, and the check and the poll are
// still answered.
func TestExchangeUpload(t *testing.T) {
	v := newEnv(t, detailed)
	secret := newSecret()
	v.submit(secret, api.Positive)
	inf, contact := v.exposedPair()
	r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, inf)
	if err != nil || r.Upload == nil || r.UploadError != nil {
		t.Fatalf("exchange that checks, polls and uploads: %+v, %v", r, err)
	}
	if *r.Upload != (api.UploadResponse{Sightings: 2, Keys: 1, DurableBy: v.nextFlush().Unix()}) {
		t.Errorf("upload answer %+v, want 2 sightings and 1 key, durable by the next flush", *r.Upload)
	}
	if r.Result == nil || !r.Result.UploadPending || r.Result.UploadAuthorization != nil || r.Exposure.Exposed || len(r.Exposure.Days) != v.pol.RetentionDays {
		t.Errorf("the same exchange's check and poll: %+v, %+v; want the uploader not exposed and the upload pending", r.Exposure, r.Result)
	}
	if c := v.check(contact); !c.Exposed {
		t.Error("the upload does not match at once")
	}
	again, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, inf)
	if err != nil || again.Upload != nil || again.Result == nil || !again.Result.UploadPending || len(again.Exposure.Days) != v.pol.RetentionDays {
		t.Fatalf("the same exchange again: %+v, %v; want the upload refused, the check and the poll answered", again, err)
	}
	wantCode(t, "the same exchange again", again.UploadError, api.CodeAlreadyUsed)
	v.flushAll()
	if r, err := v.exchange(api.ExchangePoll, secret, nil, inf); err != nil || !r.Result.Uploaded {
		t.Errorf("poll after the flush: %+v, %v; want uploaded", r, err)
	}

	// Under an authorization, with or without a poll (of another test).
	negative := newSecret()
	v.submit(negative, api.Negative)
	for _, withPoll := range []bool{false, true} {
		token := v.authorize()
		inf, contact := v.exposedPair()
		flags, polled := byte(api.ExchangeUpload), []byte(nil)
		if withPoll {
			flags, polled = flags|api.ExchangePoll, negative
		}
		r, err := v.exchange(flags, polled, token, inf)
		if err != nil || r.Upload == nil || (r.Result != nil) != withPoll || (withPoll && r.Result.Result != api.Negative) {
			t.Fatalf("an upload with an authorization, poll %v: %+v, %v", withPoll, r, err)
		}
		if c := v.check(contact); !c.Exposed {
			t.Errorf("an upload with an authorization, poll %v, does not match", withPoll)
		}
	}

	// Nothing authorizes these.
	n, p := v.e.index.Len(), v.pendingRecords()
	pendingTest := newSecret()
	for _, tc := range []struct {
		name   string
		flags  byte
		secret []byte
		result api.Result
	}{
		{"under a negative result", api.ExchangePoll | api.ExchangeUpload, negative, api.Negative},
		{"under a pending test", api.ExchangePoll | api.ExchangeUpload, pendingTest, api.Pending},
		{"with neither a poll nor an authorization", api.ExchangeUpload, nil, ""},
	} {
		inf, _ := v.exposedPair()
		r, err := v.exchange(tc.flags, tc.secret, nil, inf)
		if err != nil || r.Upload != nil || len(r.Exposure.Days) != v.pol.RetentionDays || (tc.result != "" && (r.Result == nil || r.Result.Result != tc.result)) {
			t.Errorf("an upload %s: %+v, %v; want it refused, the check and the poll answered", tc.name, r, err)
			continue
		}
		wantCode(t, "an upload "+tc.name, r.UploadError, api.CodeNotAuthorized)
	}
	if v.e.index.Len() != n || v.pendingRecords() != p {
		t.Error("a refused upload was taken")
	}
}

// TestExchangeMalformed: a report that a check refuses, or a malformed
// secret, refuses the whole exchange: nothing is answered, uploaded or
// used. A report whose keys and sightings partly lie before the window is
// answered, and its upload leaves them out (an upload alone refuses them).
func TestExchangeMalformed(t *testing.T) {
	v := newEnv(t, bothRules, refusalLimits)
	ctx := context.Background()
	for _, tc := range reportRefusals(t, v) {
		secret := newSecret()
		v.submit(secret, api.Positive)
		r, err := v.e.Exchange(ctx, api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: bytes.Clone(secret), Report: bytes.Clone(tc.body)})
		switch {
		case tc.check != "":
			wantCode(t, tc.name, err, tc.check)
			if pr, err := v.poll(secret); err != nil || pr.UploadAuthorization == nil {
				t.Errorf("%s: the refused exchange used the result: %+v, %v", tc.name, pr, err)
			}
		case tc.name == "no key and no sighting":
			if err != nil || r.Result == nil {
				t.Fatalf("%s: %+v, %v; want the check and the poll answered", tc.name, r, err)
			}
			wantCode(t, tc.name, r.UploadError, api.CodeMalformed)
		default:
			if err != nil || r.Upload == nil {
				t.Errorf("%s: %+v, %v; want the upload taken without what lies before the window", tc.name, r, err)
			}
		}
	}
	if n := v.e.index.Len(); n != 2 {
		t.Errorf("index holds %d sightings, want the two accepted exchanges' one each", n)
	}
	for _, secret := range [][]byte{nil, make([]byte, api.TestSecretSize-1), make([]byte, api.TestSecretSize+1)} {
		_, err := v.e.Exchange(ctx, api.ExchangeRequest{Flags: api.ExchangePoll, Secret: secret, Report: encode(t, contactlog.Report{})})
		wantCode(t, "a secret of the wrong size", err, api.CodeMalformed)
	}
}

// TestExchangeLeavesOutStale: an exchange's report is the device's whole
// log, which may reach back before the backend's window; its upload takes
// the keys and sightings of the window, and stores nothing of before.
func TestExchangeLeavesOutStale(t *testing.T) {
	v := newEnv(t, detailed)
	now := v.now()
	first := enid.IntervalOf(v.pol.WindowStart(now))
	cur := enid.IntervalOf(now)
	old := contactlog.DailyKey{TEK: enid.NewTEK(), Start: first - enid.RollingPeriod, Period: enid.RollingPeriod / 2}
	straddling := contactlog.DailyKey{TEK: enid.NewTEK(), Start: first - 72, Period: enid.RollingPeriod}
	inf := newDevice(old, straddling, dayKey(cur))
	c1, c2 := newDevice(), newDevice()
	s1, m1 := meet(inf, c1, (first + 10).Time(), 10, 50)
	s2, m2 := meet(inf, c2, (cur - 3).Time(), 10, 50)
	stale := inf.hears(newDevice(), first-10, first-10, 10, 50)
	older := inf.hears(newDevice(), first-100, first-100, 10, 50)
	rep := inf.report(older, stale, s1, s2)
	secret := newSecret()
	v.submit(secret, api.Positive)
	r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, rep)
	if err != nil || r.Upload == nil || r.Upload.Keys != 2 || r.Upload.Sightings != 2 {
		t.Fatalf("exchange: %+v, %v; want the 2 keys and 2 sightings of the window uploaded", r, err)
	}
	_, err = v.upload(v.authorize(), rep)
	wantCode(t, "the same report in an upload alone", err, api.CodeOutOfWindow)
	v.flushAll()
	v.restart()
	for _, c := range []contactlog.Report{c1.report(m1), c2.report(m2)} {
		if d := dayOf(t, v.check(c), when(c)); d.Minutes != 10 {
			t.Errorf("a sighting of the window uploaded in an exchange does not match: %+v", d)
		}
	}
	firstDay := utcDay(v.pol.WindowStart(now))
	for _, rec := range v.records(tableJournal) {
		row, err := v.e.openJournalRow(rec)
		if err != nil || row.kind != journalUpload {
			continue
		}
		part, err := contactlog.ParseReport(row.data, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range part.Keys {
			if k.End() <= first {
				t.Errorf("a key that ended before the window was stored")
			}
		}
		for _, s := range part.Sightings {
			if utcDay(s.Interval.Time()) < firstDay {
				t.Errorf("a sighting before the window was stored")
			}
		}
	}
}

// TestExchangeUploadLimit: the policy's limit of sightings for uploads
// applies to an exchange's upload, counting the sightings of the window
// only; a report over it is still checked, under the (larger) limit of
// checks.
func TestExchangeUploadLimit(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) {
		p.Limits.MaxCheckSightings = 8
		p.Limits.MaxUploadSightings = 3
	})
	now := v.now()
	first := enid.IntervalOf(v.pol.WindowStart(now))
	cur := enid.IntervalOf(now)
	report := func(recent, stale int) contactlog.Report {
		d := newDevice(contactlog.DailyKey{TEK: enid.NewTEK(), Start: first - 72, Period: enid.RollingPeriod}, dayKey(cur))
		var ss []contactlog.Sighting
		for i := range recent {
			ss = append(ss, d.hears(newDevice(), cur-enid.Interval(i), cur-enid.Interval(i), 5, 50))
		}
		for i := range stale {
			ss = append(ss, d.hears(newDevice(), first-1-enid.Interval(i), first-1-enid.Interval(i), 5, 50))
		}
		return d.report(ss...)
	}
	secret := newSecret()
	v.submit(secret, api.Positive)
	r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, report(4, 0))
	if err != nil || r.Upload != nil || r.Result == nil || r.Result.UploadAuthorization == nil {
		t.Fatalf("4 sightings, limit 3: %+v, %v; want the upload refused, the check and the poll answered", r, err)
	}
	wantCode(t, "4 sightings, limit 3", r.UploadError, api.CodeTooLarge)
	r, err = v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, report(3, 4))
	if err != nil || r.Upload == nil || r.Upload.Sightings != 3 {
		t.Fatalf("3 sightings of the window and 4 before it, limit 3: %+v, %v; want 3 uploaded", r, err)
	}
	_, err = v.exchange(api.ExchangePoll, secret, nil, report(9, 0))
	wantCode(t, "9 sightings, limit of checks 8", err, api.CodeTooLarge)
}

// TestExchangeWipes: an exchange leaves neither the test secret, nor the
// authorization, nor the report in its request.
func TestExchangeWipes(t *testing.T) {
	v := newEnv(t)
	secret := newSecret()
	v.submit(secret, api.Positive)
	token := v.authorize()
	inf, _ := v.exposedPair()
	req := api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: bytes.Clone(secret), Authorization: bytes.Clone(token), Report: encode(t, inf)}
	if r, err := v.e.Exchange(context.Background(), req); err != nil || r.Upload == nil {
		t.Fatalf("exchange: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{"secret": req.Secret, "authorization": req.Authorization, "report": req.Report} {
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("the exchange left the %s in its request", name)
		}
	}
}

// TestAnswerBound: every answer, exchange or trace check, accepted or
// refused, in whole or in part, coarse or detailed, encodes within
// AnswerBound, with room for the framing: so the HTTP layer pads all
// answers to one size.
func TestAnswerBound(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		t.Run(answers, func(t *testing.T) {
			setAnswers := func(p *policy.Policy) { p.Answers = answers }
			var all []any
			// The heaviest answers the policy allows.
			v := newEnv(t, bothRules, heavyAnswers, setAnswers)
			ctx := context.Background()
			exchange := func(flags byte, secret, token []byte, r contactlog.Report) {
				t.Helper()
				resp, err := v.exchange(flags, secret, token, r)
				if err != nil {
					t.Fatalf("exchange: %v", err)
				}
				all = append(all, resp)
			}
			inf, contact := newDevice(), newDevice()
			var ups, checks []contactlog.Sighting
			for i := range 6 {
				si, sc := meet(inf, contact, v.now().Add(-time.Hour-time.Duration(i)*10*time.Minute), 60, 255)
				ups, checks = append(ups, si), append(checks, sc)
			}
			secret := newSecret()
			v.submit(secret, api.Positive)
			pr, err := v.poll(secret)
			if err != nil {
				t.Fatal(err)
			}
			exchange(api.ExchangePoll, secret, nil, contact.report(checks...))
			exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, inf.report(ups...))
			exchange(api.ExchangePoll, secret, nil, contact.report(checks...))
			exchange(api.ExchangePoll|api.ExchangeUpload, secret, pr.UploadAuthorization, contact.report(checks...))
			v.flushAll()
			exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, contact.report(checks...))
			negative, expired := newSecret(), newSecret()
			v.submit(negative, api.Negative)
			v.submit(expired, api.Positive)
			ex, err := v.poll(expired)
			if err != nil {
				t.Fatal(err)
			}
			exchange(api.ExchangePoll|api.ExchangeUpload, negative, nil, contact.report(checks...))
			exchange(api.ExchangeUpload, nil, nil, contact.report())
			exchange(api.ExchangeUpload, nil, make([]byte, 31), contact.report(checks...))
			exchange(api.ExchangePoll|api.ExchangeUpload, newSecret(), nil, contact.report(checks...))
			exchange(api.ExchangePoll|api.ExchangeUpload, expired, nil, contactlog.Report{})
			v.clock.Advance(time.Unix(ex.ExpiresAt, 0).Sub(v.now()))
			exchange(api.ExchangeUpload|api.ExchangePoll, expired, ex.UploadAuthorization, contact.report(checks...))
			for _, tr := range []gps.Trace{walk(v.now().Add(-time.Hour), 10, 46.5, 6.5, 0), {}} {
				resp, err := v.e.CheckTrace(ctx, api.TraceCheckRequest{Trace: mustWire(t, tr)})
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, resp)
			}

			// Refusals, whole and in part.
			w := newEnv(t, bothRules, refusalLimits, setAnswers)
			token := w.authorize()
			for _, tc := range reportRefusals(t, w) {
				for _, flags := range []byte{0, api.ExchangeUpload} {
					resp, err := w.e.Exchange(ctx, api.ExchangeRequest{Flags: flags, Authorization: bytes.Clone(token), Report: bytes.Clone(tc.body)})
					if err != nil {
						all = append(all, err)
					} else {
						all = append(all, resp)
					}
				}
				token = w.authorize()
			}
			_, err = w.e.CheckTrace(ctx, api.TraceCheckRequest{Trace: []byte{0xff}})
			all = append(all, err)
			_, err = w.e.CheckTrace(ctx, api.TraceCheckRequest{Trace: mustWire(t, walk(w.now().Add(time.Hour), 3, 46.5, 6.5, 0))})
			all = append(all, err)

			refusals := 0
			for _, a := range all {
				if err, ok := a.(error); ok {
					ae, ok := err.(*api.Error)
					if !ok {
						t.Fatalf("a refusal that is not an answer: %v", err)
					}
					a, refusals = ae, refusals+1
				}
				b, err := json.Marshal(a)
				if err != nil {
					t.Fatal(err)
				}
				if len(b)+64 > v.e.AnswerBound() || len(b)+64 > w.e.AnswerBound() {
					t.Errorf("an answer of %d bytes leaves no room for the framing within the bound %d: %s", len(b), v.e.AnswerBound(), b)
				}
			}
			if refusals < 20 || len(all) < 60 {
				t.Fatalf("test set-up: %d answers, %d of them refusals", len(all), refusals)
			}
		})
	}
}

// A daily key takes part in at most the policy's number of exchanges a
// day: a phone's daily exchange never meets the limit, a prober replaying
// one phone's keys does. The count lives in memory only.
func TestExchangeRateLimit(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) { p.Limits.ChecksPerKeyDay = 3 })
	_, contact := encounter(v.now().Add(-time.Hour), 5, 50)
	before := v.snapshot()
	for i := range 3 {
		if _, err := v.exchange(0, nil, nil, contact); err != nil {
			t.Fatalf("exchange %d: %v", i+1, err)
		}
	}
	_, err := v.exchange(0, nil, nil, contact)
	wantCode(t, "fourth exchange of the day", err, api.CodeRateLimited)
	if !sameRecords(before, v.snapshot()) {
		t.Error("counting exchanges wrote to the store")
	}
	// Other keys are not limited; the next day the count starts again.
	_, other := encounter(v.now().Add(-time.Hour), 5, 50)
	if _, err := v.exchange(0, nil, nil, other); err != nil {
		t.Errorf("another phone's exchange: %v", err)
	}
	v.clock.Advance(24 * time.Hour)
	if _, err := v.exchange(0, nil, nil, contact); err != nil {
		t.Errorf("the next day: %v", err)
	}
}
