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
)

// TestUploadAuthorizationSingleUse: an authorization uploads once; a
// second upload with it is refused and indexes nothing, after a restart
// too.
func TestUploadAuthorizationSingleUse(t *testing.T) {
	v := newEnv(t)
	token := v.authorize()
	first, firstContact := encounter(v.now().Add(-2*time.Hour), 10, 50)
	second, secondContact := encounter(v.now().Add(-3*time.Hour), 10, 50)
	if r, err := v.upload(token, first); err != nil || r.Sightings != 1 || r.Keys != 1 {
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
		t.Errorf("index holds %d sightings, want the first upload's 1", got)
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
		t.Fatalf("%d uploads accepted, %d sightings indexed; want 1 and 1", accepted, v.e.index.Len())
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
		t.Errorf("index holds %d sightings, want only the timely upload's 1", got)
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
		t.Fatalf("unauthorized uploads indexed %d sightings", n)
	}
	if _, err := v.upload(token, inf); err != nil {
		t.Fatalf("the real authorization after refusals: %v", err)
	}
}

// TestUploadRefusals: an upload with anything wrong is refused whole,
// stores and indexes nothing, and leaves the authorization usable.
func TestUploadRefusals(t *testing.T) {
	v := newEnv(t, bothRules, refusalLimits)
	token := v.authorize()
	for _, tc := range reportRefusals(t, v) {
		_, err := v.e.Upload(context.Background(), api.UploadRequest{Authorization: token, Report: tc.body})
		wantCode(t, tc.name, err, tc.upload)
	}
	if n, m, recs := v.e.index.Len(), v.e.oneSided.Len(), v.records(tableUploads); n != 0 || m != 0 || len(recs) != 0 {
		t.Fatalf("refused uploads left %d sightings and %d one-sided identifiers in the indexes and %d records in the store", n, m, len(recs))
	}
	if pr := v.records(tableAuthsUsed); len(pr) != 0 {
		t.Fatal("a refused upload used up the authorization")
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
// reciprocal index.
func TestUploadNoSightings(t *testing.T) {
	v := newEnv(t)
	d := newDevice(dayKey(enid.IntervalOf(v.now())))
	v.mustUpload(d.report())
	if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 0 || m != 0 {
		t.Fatalf("indexes hold %d sightings and %d identifiers, want none under the default policy", n, m)
	}
	if len(v.records(tableUploads)) != 1 {
		t.Fatal("the keys were not stored")
	}
}

// TestUploadSealedByDay: an upload is stored as one record per day of its
// keys and sightings, in that day, and the host sees no daily key,
// identifier, test code, secret, authorization or result in the clear.
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
		part, err := contactlog.ParseReport(plain, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range part.Sightings {
			if utcDay(s.Interval.Time()) != r.Day {
				t.Errorf("record of day %d holds a sighting of day %d", r.Day, utcDay(s.Interval.Time()))
			}
		}
		if len(part.Keys) != 1 || utcDay(part.Keys[0].Start.Time()) != r.Day {
			t.Errorf("record of day %d holds keys %+v, want that day's", r.Day, part.Keys)
		}
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
