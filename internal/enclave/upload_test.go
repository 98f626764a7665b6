package enclave

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// TestUploadAuthorizationSingleUse: an authorization uploads once; a
// second upload with it is refused and indexes nothing, after a restart
// too.
func TestUploadAuthorizationSingleUse(t *testing.T) {
	v := newEnv(t)
	token := v.authorize()
	first, firstContact := encounter(v.now().Add(-2*time.Hour), 10, 50)
	second, secondContact := encounter(v.now().Add(-3*time.Hour), 10, 50)
	if r, err := v.upload(token, first); err != nil || r.Accepted != 1 {
		t.Fatalf("first upload: %+v, %v", r, err)
	}
	_, err := v.upload(token, second)
	wantCode(t, "second upload with one authorization", err, api.CodeAlreadyUsed)
	v.restart()
	_, err = v.upload(token, second)
	wantCode(t, "second upload after a restart", err, api.CodeAlreadyUsed)

	// A host that deletes the record of the authorization's use cannot
	// make it usable again: the authorization itself is gone too.
	for _, r := range v.records(tableAuthsUsed) {
		v.del(r.Table, r.Key)
	}
	_, err = v.upload(token, second)
	wantCode(t, "second upload after the host deleted the record of use", err, api.CodeNotAuthorized)

	if got := v.e.index.Len(); got != 1 {
		t.Errorf("index holds %d tuples, want the first upload's 1", got)
	}
	if r := v.check(firstContact); r.Days[len(r.Days)-1].Minutes != 10 {
		t.Error("the first upload does not match")
	}
	if r := v.check(secondContact); r.Exposed || r.Days[len(r.Days)-1].Minutes != 0 {
		t.Error("the refused second upload matches")
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
		t.Fatalf("%d uploads accepted, %d tuples indexed; want 1 and 1", accepted, v.e.index.Len())
	}
}

// TestUploadAuthorizationExpiry: an authorization is accepted until its
// expiry and refused from then on.
func TestUploadAuthorizationExpiry(t *testing.T) {
	v := newEnv(t)
	early, late := v.authorize(), v.authorize()
	expiry := v.now().Add(v.pol.UploadAuthorizationTTL())
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)

	v.clock.Advance(expiry.Sub(v.now()) - time.Second)
	if _, err := v.upload(early, inf); err != nil {
		t.Fatalf("upload a second before expiry: %v", err)
	}
	v.clock.Advance(time.Second)
	_, err := v.upload(late, inf)
	wantCode(t, "upload at expiry", err, api.CodeExpired)
	v.clock.Advance(time.Hour)
	_, err = v.upload(late, inf)
	wantCode(t, "upload after expiry", err, api.CodeExpired)
	if got := v.e.index.Len(); got != 1 {
		t.Errorf("index holds %d tuples, want only the timely upload's 1", got)
	}
}

// TestUploadNotAuthorized: without an authorization that a positive poll
// issued, nothing is uploaded: not with a made-up token, not with a test
// code, not with a negative test.
func TestUploadNotAuthorized(t *testing.T) {
	v := newEnv(t)
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	secret := newSecret()
	v.submit(secret, api.Negative)
	token := v.authorize()
	for _, tc := range []struct {
		name  string
		token []byte
	}{
		{"no authorization", nil},
		{"made-up authorization", bytes.Repeat([]byte{7}, 32)},
		{"the test secret instead", secret},
		{"a truncated authorization", token[:31]},
		{"an extended authorization", append(bytes.Clone(token), 0)},
		{"an altered authorization", flip(token)},
	} {
		_, err := v.upload(tc.token, inf)
		wantCode(t, tc.name, err, api.CodeNotAuthorized)
	}
	if n := v.e.index.Len(); n != 0 {
		t.Fatalf("unauthorized uploads indexed %d tuples", n)
	}
	if _, err := v.upload(token, inf); err != nil {
		t.Fatalf("the real authorization after refusals: %v", err)
	}
}

// TestUploadRefusals: an upload with anything wrong is refused whole,
// stores and indexes nothing, and leaves the authorization usable.
func TestUploadRefusals(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) { p.Limits.MaxUploadTuples = 4 })
	token := v.authorize()
	now := v.now()
	tuple := func(at time.Time, minutes uint16) contactlog.Tuple {
		inf, _ := encounter(at, minutes, 50)
		return inf
	}
	interval := func(i enid.Interval) contactlog.Tuple {
		return tuple(i.Time(), 5)
	}
	windowStart := v.pol.WindowStart(now)
	ok := tuple(now.Add(-time.Hour), 5)
	raw := func(ts ...contactlog.Tuple) []byte { return encode(t, ts) }
	tooLong := raw(ok)
	binary.BigEndian.PutUint16(tooLong[5+36:], contactlog.MaxDuration+1) // beyond what the wire format allows

	for _, tc := range []struct {
		name  string
		batch []byte
		code  string
	}{
		{"no bytes", nil, api.CodeMalformed},
		{"no tuples", raw(), api.CodeMalformed},
		{"wrong version", append([]byte{9}, raw(ok)[1:]...), api.CodeMalformed},
		{"truncated", raw(ok)[:20], api.CodeMalformed},
		{"trailing bytes", append(raw(ok), 0), api.CodeMalformed},
		{"duration beyond the format", tooLong, api.CodeMalformed},
		{"more tuples than the policy allows", raw(ok, ok, ok, ok, ok), api.CodeTooLarge},
		{"a count beyond the policy with no tuples", []byte{1, 0xff, 0xff, 0xff, 0xff}, api.CodeTooLarge},
		{"in the future", raw(ok, interval(enid.IntervalOf(now)+2)), api.CodeOutOfWindow},
		{"before the window", raw(ok, tuple(windowStart.Add(-time.Minute), 5)), api.CodeOutOfWindow},
		{"zero minutes", raw(ok, tuple(now, 0)), api.CodeMalformed},
		{"more minutes than the policy allows", raw(tuple(now, uint16(v.pol.Limits.MaxTupleMinutes)+1), ok), api.CodeMalformed},
	} {
		_, err := v.e.Upload(context.Background(), api.UploadRequest{Authorization: token, Tuples: tc.batch})
		wantCode(t, tc.name, err, tc.code)
	}
	if n, recs := v.e.index.Len(), v.records(tableUploads); n != 0 || len(recs) != 0 {
		t.Fatalf("refused uploads left %d tuples in the index and %d records in the store", n, len(recs))
	}
	if pr := v.records(tableAuthsUsed); len(pr) != 0 {
		t.Fatal("a refused upload used up the authorization")
	}

	// The edges are accepted: the first interval of the window, the next
	// interval (clock skew), the policy's longest tuple, its most tuples.
	edges := []contactlog.Tuple{
		tuple(windowStart, 1),
		interval(enid.IntervalOf(now) + 1),
		tuple(now, uint16(v.pol.Limits.MaxTupleMinutes)),
		ok,
	}
	if r, err := v.upload(token, edges...); err != nil || r.Accepted != 4 {
		t.Fatalf("upload at the edges: %+v, %v", r, err)
	}
	if n := v.e.index.Len(); n != 4 {
		t.Fatalf("index holds %d tuples, want 4", n)
	}
}

// TestUploadSealedByDay: an upload is stored as one record per day of its
// tuples, in that day, and the host sees no identifier, test code,
// secret, authorization or result in the clear.
func TestUploadSealedByDay(t *testing.T) {
	v := newEnv(t)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	var ts []contactlog.Tuple
	for _, ago := range []time.Duration{1, 1, 2, 5} {
		inf, _ := encounter(v.now().Add(-ago*24*time.Hour), 10, 50)
		ts = append(ts, inf)
	}
	if r, err := v.upload(pr.UploadAuthorization, ts...); err != nil || r.Accepted != len(ts) {
		t.Fatalf("upload: %+v, %v", r, err)
	}
	recs := v.records(tableUploads)
	if len(recs) != 3 {
		t.Fatalf("%d upload records, want one per day (3)", len(recs))
	}
	for _, r := range recs {
		if got := binary.BigEndian.Uint32(r.Key[len(r.Key)-4:]); got != uint32(r.Day) {
			t.Errorf("upload record of day %d has the key of day %d", r.Day, got)
		}
		plain, err := v.e.keys.Open(r.Day, tableUploads, r.Key, r.Value)
		if err != nil {
			t.Fatal(err)
		}
		got, err := contactlog.UnmarshalBatch(plain, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, tu := range got {
			if utcDay(tu.Interval.Time()) != r.Day {
				t.Errorf("record of day %d holds a tuple of day %d", r.Day, utcDay(tu.Interval.Time()))
			}
		}
	}

	secrets := [][]byte{secret, []byte(api.TestCode(secret)), pr.UploadAuthorization, []byte(api.Positive)}
	for _, tu := range ts {
		secrets = append(secrets, tu.Own[:], tu.Heard[:])
	}
	for _, r := range v.snapshot() {
		for _, s := range secrets {
			if bytes.Contains(r.Key, s) || bytes.Contains(r.Value, s) {
				t.Errorf("the host sees %x in the clear in a %s record", s, r.Table)
			}
		}
	}
}
