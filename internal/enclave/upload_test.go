package enclave

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/policy"
)

// TestUploadAuthorizationSingleUse: an authorization uploads once; a
// second upload with it, or under the result it authorizes, is refused
// and indexes nothing, before the first is durable and after a restart
// once it is.
func TestUploadAuthorizationSingleUse(t *testing.T) {
	v := newEnv(t, detailed)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	token := pr.UploadAuthorization
	first, firstContact := encounter(v.now().Add(-2*time.Hour), 10, 50)
	second, secondContact := encounter(v.now().Add(-3*time.Hour), 10, 50)
	if r, err := v.upload(token, first); err != nil || r.Sightings != 1 || r.Keys != 1 {
		t.Fatalf("first upload: %+v, %v", r, err)
	}
	refused := func(when string) {
		t.Helper()
		_, err := v.upload(token, second)
		wantCode(t, "second upload with one authorization, "+when, err, api.CodeAlreadyUsed)
		for _, ex := range []struct {
			name          string
			flags         byte
			secret, token []byte
		}{
			{"an exchange with the authorization", api.ExchangeUpload, nil, token},
			{"an exchange under the polled result", api.ExchangePoll | api.ExchangeUpload, secret, nil},
		} {
			r, err := v.exchange(ex.flags, ex.secret, ex.token, second)
			if err != nil || r.Upload != nil {
				t.Errorf("%s, %s: %+v, %v; want the upload refused in the answer", ex.name, when, r, err)
				continue
			}
			wantCode(t, ex.name+", "+when, r.UploadError, api.CodeAlreadyUsed)
		}
	}
	refused("before the first is durable")
	v.flushAll()
	v.restart()
	refused("after a restart")

	if got := v.e.index.Len(); got != 1 {
		t.Errorf("index holds %d sightings, want the first upload's 1", got)
	}
	if r := v.check(firstContact); dayOf(t, r, when(firstContact)).Minutes != 10 {
		t.Error("the first upload does not match")
	}
	if r := v.check(secondContact); r.Exposed || dayOf(t, r, when(secondContact)).Minutes != 0 {
		t.Error("a refused second upload matches")
	}
}

// TestUploadAuthorizationConcurrent: of several uploads racing with one
// authorization, exactly one is accepted.
func TestUploadAuthorizationConcurrent(t *testing.T) {
	v := newEnv(t)
	token := v.authorize()
	const racers = 8
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
			_, errs[i] = v.upload(token, inf)
			v.check(contact) // checks run beside uploads
		})
	}
	wg.Wait()
	accepted := 0
	for _, err := range errs {
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, &api.Error{Code: api.CodeAlreadyUsed}):
			t.Errorf("racing upload: %v", err)
		}
	}
	if accepted != 1 || v.e.index.Len() != 1 {
		t.Fatalf("%d uploads accepted, %d sightings indexed; want 1 and 1", accepted, v.e.index.Len())
	}
}

// TestUploadAuthorizationPeriods: an authorization is derived from its
// result and the period of the policy's TTL since the result was
// submitted: every poll of a period, after a restart too, hands out the
// same one; it is accepted in its period and the next, refused from then
// on, and the next poll replaces it. Every poll's authorization is valid
// for at least the TTL and at most twice it.
func TestUploadAuthorizationPeriods(t *testing.T) {
	v := newEnv(t)
	ttl := v.pol.UploadAuthorizationTTL()
	submitted := v.now()
	a, b, c := newSecret(), newSecret(), newSecret()
	for _, s := range [][]byte{a, b, c} {
		v.submit(s, api.Positive)
	}
	poll := func(secret []byte) api.PollResultResponse {
		t.Helper()
		pr, err := v.poll(secret)
		if err != nil || len(pr.UploadAuthorization) != api.AuthorizationSize {
			t.Fatalf("poll at submission%+v: %+v, %v; want an authorization", v.now().Sub(submitted), pr, err)
		}
		if left := time.Unix(pr.ExpiresAt, 0).Sub(v.now()); left < ttl || left > 2*ttl {
			t.Errorf("poll at submission%+v: the authorization is valid for %s more, want between the TTL and twice it", v.now().Sub(submitted), left)
		}
		return pr
	}
	pa, pb := poll(a), poll(b)
	if want := submitted.Add(2 * ttl).Unix(); pa.ExpiresAt != want {
		t.Errorf("the first period's authorization expires at %d, want the end of the next period, %d", pa.ExpiresAt, want)
	}
	if bytes.Equal(pa.UploadAuthorization, pb.UploadAuthorization) {
		t.Fatal("two results have the same authorization")
	}
	v.clock.Advance(ttl - time.Second)
	for range 2 {
		if again := poll(a); !bytes.Equal(again.UploadAuthorization, pa.UploadAuthorization) || again.ExpiresAt != pa.ExpiresAt {
			t.Errorf("a poll later in the period: %+v; want the same authorization and expiry as %+v", again, pa)
		}
		v.restart()
	}
	v.clock.Advance(time.Second)
	next := poll(a)
	if bytes.Equal(next.UploadAuthorization, pa.UploadAuthorization) || next.ExpiresAt != pa.ExpiresAt+int64(ttl/time.Second) {
		t.Errorf("a poll in the next period: %+v; want another authorization, valid a period longer", next)
	}
	for range 4 {
		v.clock.Advance(ttl / 5)
		poll(c) // the bounds, at points through a period
	}
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	v.clock.Advance(submitted.Add(2*ttl - time.Second).Sub(v.now()))
	if _, err := v.upload(pa.UploadAuthorization, inf); err != nil {
		t.Fatalf("the first period's authorization in the last second of the next: %v", err)
	}
	v.clock.Advance(time.Second)
	_, err := v.upload(pb.UploadAuthorization, inf)
	wantCode(t, "the first period's authorization in the third period", err, api.CodeExpired)
	r, err := v.exchange(api.ExchangeUpload, nil, pb.UploadAuthorization, inf)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "the same in an exchange", r.UploadError, api.CodeExpired)
	replaced := poll(b)
	if replaced.ExpiresAt != submitted.Add(4*ttl).Unix() {
		t.Errorf("the replacing authorization expires at %d, want %d", replaced.ExpiresAt, submitted.Add(4*ttl).Unix())
	}
	if _, err := v.upload(replaced.UploadAuthorization, inf); err != nil {
		t.Fatalf("the authorization that replaced an expired one: %v", err)
	}
	if got := v.e.index.Len(); got != 2 {
		t.Errorf("index holds %d sightings, want the two timely uploads' 2", got)
	}
}

// TestReplayedPollChangesNothing: a relay that replays a device's poll,
// hours or a period later, learns the same answer and changes nothing:
// the store sees nothing, and the authorization the device holds expires
// when it would have without the replays.
func TestReplayedPollChangesNothing(t *testing.T) {
	v := newEnv(t)
	ttl := v.pol.UploadAuthorizationTTL()
	secret := newSecret()
	v.submit(secret, api.Positive)
	held, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	for _, later := range []time.Duration{3 * time.Hour, 7 * time.Hour, ttl} {
		v.clock.Advance(later)
		calls := v.hostSees(func() {
			if _, err := v.poll(secret); err != nil {
				t.Fatal(err)
			}
		})
		if len(calls) != 0 {
			t.Errorf("a replayed poll made %d store calls", len(calls))
		}
	}
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	v.clock.Advance(time.Unix(held.ExpiresAt, 0).Sub(v.now()))
	_, err = v.upload(held.UploadAuthorization, inf)
	wantCode(t, "the held authorization at its expiry, after replays", err, api.CodeExpired)
}

// TestUploadNotAuthorized: without an authorization that the enclave
// derived for a positive result, nothing is uploaded: not with a made-up,
// truncated or altered token, not with one spliced from two results', not
// with one made the enclave's way for a negative or an unknown result, and
// not with another enclave's; through Upload or an exchange.
func TestUploadNotAuthorized(t *testing.T) {
	v := newEnv(t)
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	negative, other := newSecret(), newSecret()
	v.submit(negative, api.Negative)
	v.submit(other, api.Positive)
	token := v.authorize()
	po, err := v.poll(other)
	if err != nil {
		t.Fatal(err)
	}
	// derived returns the token the enclave would derive for the result
	// under key, were it positive and known.
	derived := func(key []byte) []byte {
		v.e.mu.Lock()
		defer v.e.mu.Unlock()
		res := &result{resultRecord: resultRecord{Result: api.Positive, SubmittedAt: v.now().Unix()}}
		tok, _ := v.e.authorization(key, res, v.now())
		return tok
	}
	spliced := append(bytes.Clone(po.UploadAuthorization[:authKeyLen]), token[authKeyLen:]...)
	foreign := newEnv(t).authorize()
	for _, tc := range []struct {
		name  string
		token []byte
	}{
		{"no authorization", nil},
		{"made-up authorization", bytes.Repeat([]byte{7}, 32)},
		{"the test secret instead", negative},
		{"a truncated authorization", token[:31]},
		{"an extended authorization", append(bytes.Clone(token), 0)},
		{"an altered authorization", flip(token)},
		{"another result's key under this one's MAC", spliced},
		{"a negative result's", derived(v.e.recordKey(tableResults, api.TestCode(negative)))},
		{"an unknown result's", derived(v.e.recordKey(tableResults, api.TestCode(newSecret())))},
		{"another enclave's", foreign},
	} {
		_, err := v.upload(tc.token, inf)
		wantCode(t, tc.name, err, api.CodeNotAuthorized)
		r, err := v.exchange(api.ExchangeUpload, nil, tc.token, inf)
		if err != nil || r.Upload != nil {
			t.Errorf("%s, in an exchange: %+v, %v; want the upload refused in the answer", tc.name, r, err)
			continue
		}
		wantCode(t, tc.name+", in an exchange", r.UploadError, api.CodeNotAuthorized)
	}
	if n, p := v.e.index.Len(), v.pendingRecords(); n != 0 || p != 0 {
		t.Fatalf("unauthorized uploads indexed %d sightings and queued %d records", n, p)
	}
	if _, err := v.upload(token, inf); err != nil {
		t.Fatalf("the real authorization after refusals: %v", err)
	}
}

// TestUploadRefusals: an upload with anything wrong is refused whole,
// stores and indexes nothing, and leaves the authorization usable.
func TestUploadRefusals(t *testing.T) {
	v := newEnv(t, bothRules, refusalLimits)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	token := pr.UploadAuthorization
	for _, tc := range reportRefusals(t, v) {
		_, err := v.e.Upload(context.Background(), api.UploadRequest{Authorization: token, Report: tc.body})
		wantCode(t, tc.name, err, tc.upload)
	}
	if n, m, p := v.e.index.Len(), v.e.oneSided.Len(), v.pendingRecords(); n != 0 || m != 0 || p != 0 {
		t.Fatalf("refused uploads left %d sightings and %d one-sided identifiers in the indexes and %d records in the journal", n, m, p)
	}

	if pr, err := v.poll(secret); err != nil || pr.UploadPending || !bytes.Equal(pr.UploadAuthorization, token) {
		t.Fatalf("poll after refused uploads: %+v, %v; want the authorization still unused", pr, err)
	}

	// The edges are accepted: a key whose last interval is the window's
	// first, and a sighting in it; a key that starts in the next interval
	// (clock skew), and a sighting in it; the policy's longest sighting;
	// its most sightings, and its most keys.
	now := v.now()
	cur := enid.IntervalOf(now)
	first := enid.IntervalOf(v.pol.WindowStart(now))
	keys := []contactlog.DailyKey{
		{TEK: enid.NewTEK(), Start: first - enid.RollingPeriod + 1, Period: enid.RollingPeriod},
		{TEK: enid.NewTEK(), Start: cur + 1, Period: 1},
	}
	for i := enid.Interval(0); len(keys) < v.pol.MaxKeys(); i++ {
		keys = append(keys, contactlog.DailyKey{TEK: enid.NewTEK(), Start: cur - i, Period: 1})
	}
	sighting := func(i enid.Interval, minutes uint8) contactlog.Sighting {
		return contactlog.Sighting{Heard: newRPI(), Interval: i, Minutes: minutes, Attenuation: 50}
	}
	edges := contactlog.Report{Keys: keys, Sightings: []contactlog.Sighting{
		sighting(first, 1),
		sighting(cur+1, 5),
		sighting(cur, uint8(v.pol.Limits.MaxSightingMinutes)),
		sighting(cur-1, 5),
	}}
	if r, err := v.upload(token, edges); err != nil || r.Sightings != 4 || r.Keys != len(keys) {
		t.Fatalf("upload at the edges: %+v, %v", r, err)
	}
	// Every interval of every key is indexed one-sided, except the part
	// of the first key before the window.
	if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 4 || m != len(keys) {
		t.Fatalf("indexes hold %d sightings and %d identifiers, want 4 and %d", n, m, len(keys))
	}
}

// TestUploadNoSightings: an upload of daily keys without sightings is
// accepted (its keys may match one-sided) but adds nothing to the
// reciprocal index; it is still journalled, and matches after a restart.
func TestUploadNoSightings(t *testing.T) {
	v := newEnv(t, bothRules)
	d := newDevice(dayKey(enid.IntervalOf(v.now())))
	v.mustUpload(d.report())
	if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 0 || m != enid.RollingPeriod {
		t.Fatalf("indexes hold %d sightings and %d identifiers, want none and the key's %d", n, m, enid.RollingPeriod)
	}
	if p := v.pendingRecords(); p != 2 {
		t.Fatalf("%d records in the journal, want the keys and the mark", p)
	}
	v.flushAll()
	v.restart()
	if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 0 || m != enid.RollingPeriod {
		t.Fatalf("after a restart the indexes hold %d sightings and %d identifiers", n, m)
	}
}

// TestUploadSealedByDay: an upload is journalled as one part per day of
// its keys and sightings, each sealed under its day, and the host sees no
// daily key, identifier, test code, secret, authorization or result in the
// clear.
func TestUploadSealedByDay(t *testing.T) {
	v := newEnv(t)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	inf := newDevice()
	var ss []contactlog.Sighting
	for _, ago := range []time.Duration{1, 1, 2, 5} {
		si, _ := meet(inf, newDevice(), v.now().Add(-ago*24*time.Hour), 10, 50)
		ss = append(ss, si)
	}
	rep := inf.report(ss...)
	if r, err := v.upload(pr.UploadAuthorization, rep); err != nil || r.Sightings != len(ss) || r.Keys != 3 {
		t.Fatalf("upload: %+v, %v", r, err)
	}
	v.flushAll()
	parts := 0
	for _, rec := range v.records(tableJournal) {
		// Stored under the day after the flush, whatever it holds.
		if rec.Day != utcDay(v.now())+1 {
			t.Errorf("a journal row stored under day %d, want the day after the flush's, %d", rec.Day, utcDay(v.now())+1)
		}
		row, err := v.e.openJournalRow(rec)
		if err != nil {
			t.Fatal(err)
		}
		if row.kind != journalUpload {
			continue
		}
		parts++
		if _, err := v.e.keys.Open(row.day, tableJournal, rec.Key, rec.Value[journalHeaderSize:]); err != nil {
			t.Errorf("the part of day %d is not sealed under that day's key: %v", row.day, err)
		}
		part, err := contactlog.ParseReport(row.data, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range part.Sightings {
			if utcDay(s.Interval.Time()) != row.day {
				t.Errorf("part of day %d holds a sighting of day %d", row.day, utcDay(s.Interval.Time()))
			}
		}
		if len(part.Keys) != 1 || utcDay(part.Keys[0].Start.Time()) != row.day {
			t.Errorf("part of day %d holds keys %+v, want that day's", row.day, part.Keys)
		}
	}
	if parts != 3 {
		t.Fatalf("%d upload parts in the journal, want one per day (3)", parts)
	}

	secrets := [][]byte{secret, []byte(api.TestCode(secret)), pr.UploadAuthorization, []byte(api.Positive)}
	for _, k := range rep.Keys {
		secrets = append(secrets, k.TEK[:])
	}
	for _, s := range ss {
		own := inf.rpi(s.Interval)
		secrets = append(secrets, own[:], s.Heard[:])
	}
	for _, r := range v.snapshot() {
		for _, s := range secrets {
			if bytes.Contains(r.Key, s) || bytes.Contains(r.Value, s) {
				t.Errorf("the host sees %x in the clear in a %s record", s, r.Table)
			}
		}
	}
}

// gateIndex is an index whose next Add, once armed, waits for release, or
// fails with fail.
type gateIndex struct {
	matchindex.Index
	armed   atomic.Bool
	fail    error
	entered chan struct{}
	release chan struct{}
}

func newGateIndex(idx matchindex.Index) *gateIndex {
	return &gateIndex{Index: idx, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateIndex) Add(entries []matchindex.Entry) error {
	if g.armed.CompareAndSwap(true, false) {
		if g.fail != nil {
			return g.fail
		}
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Index.Add(entries)
}

// TestUploadIndexesWithoutTheLock: while an upload is added to the index
// (as long as the test likes), the enclave's mutex is free: checks, polls
// and flushes go on. The upload's authorization is taken already: a second
// upload with it is refused, and a poll says the upload is pending. It is
// queued for the journal once indexed, and becomes durable.
func TestUploadIndexesWithoutTheLock(t *testing.T) {
	v := newEnv(t, detailed)
	gate := newGateIndex(v.e.index)
	v.e.index = gate
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
	gate.armed.Store(true)
	uploaded := make(chan error, 1)
	go func() {
		_, err := v.upload(pr.UploadAuthorization, inf)
		uploaded <- err
	}()
	<-gate.entered
	if !v.e.mu.TryLock() {
		close(gate.release)
		<-uploaded
		t.Fatal("the enclave's mutex is held while an upload is indexed")
	}
	v.e.mu.Unlock()
	if pr, err := v.poll(secret); err != nil || !pr.UploadPending || len(pr.UploadAuthorization) != 0 {
		t.Errorf("poll while the upload is indexed: %+v, %v; want it pending", pr, err)
	}
	again, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	_, err = v.upload(pr.UploadAuthorization, again)
	wantCode(t, "second upload while the first is indexed", err, api.CodeAlreadyUsed)
	v.check(contact)
	v.flushDue(v.flushEvery())
	close(gate.release)
	if err := <-uploaded; err != nil {
		t.Fatal(err)
	}
	if n := v.pendingRecords(); n != 2 {
		t.Errorf("%d records queued once indexed, want the day's part and the mark", n)
	}
	v.flushAll()
	if pr, err := v.poll(secret); err != nil || !pr.Uploaded {
		t.Errorf("poll after the flushes: %+v, %v; want uploaded", pr, err)
	}
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("the upload does not match")
	}
}

// TestUploadIndexFailure: an upload the index refuses is refused, queues
// nothing and leaves its authorization unused.
func TestUploadIndexFailure(t *testing.T) {
	v := newEnv(t, detailed)
	gate := newGateIndex(v.e.index)
	gate.fail = matchindex.ErrTooManyDays
	v.e.index = gate
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
	gate.armed.Store(true)
	_, err = v.upload(pr.UploadAuthorization, inf)
	wantInternal(t, "upload the index refuses", err)
	if n := v.pendingRecords(); n != 0 {
		t.Errorf("%d records queued by a refused upload", n)
	}
	if pr, err := v.poll(secret); err != nil || pr.UploadPending || pr.Uploaded {
		t.Errorf("poll after the refusal: %+v, %v; want no upload", pr, err)
	}
	if _, err := v.upload(pr.UploadAuthorization, inf); err != nil {
		t.Fatalf("the authorization after the refusal: %v; want it unused", err)
	}
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("the upload made again does not match")
	}
}

// TestUploadsAlongsideExpiry: uploads run while flushes and retention run
// on another goroutine; (under the race detector) nothing races, and every
// upload is indexed and becomes durable.
func TestUploadsAlongsideExpiry(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, func(p *policy.Policy) { p.StoreFlushSeconds = 60 })
	const phones = 12
	var tokens [][]byte
	var reports []contactlog.Report
	for range phones {
		inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
		tokens, reports = append(tokens, v.authorize()), append(reports, inf)
	}
	var uploads, flushes sync.WaitGroup
	for i := range phones {
		uploads.Go(func() {
			if _, err := v.upload(tokens[i], reports[i]); err != nil {
				t.Errorf("phone %d: %v", i, err)
			}
		})
	}
	flushes.Go(func() {
		for range 10 {
			v.clock.Advance(v.flushEvery())
			if err := v.e.FlushDue(ctx); err != nil {
				t.Errorf("FlushDue: %v", err)
			}
			if err := v.e.Expire(ctx); err != nil {
				t.Errorf("Expire: %v", err)
			}
		}
	})
	uploads.Wait()
	flushes.Wait()
	v.flushAll()
	if n := v.e.index.Len(); n != phones {
		t.Errorf("index holds %d sightings, want %d", n, phones)
	}
	if n := v.pendingRecords(); n != 0 {
		t.Errorf("%d records still pending", n)
	}
}
