package enclave

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/store"
)

// TestRestartSeesUploads: a new enclave over the same store and sealing
// key matches the same uploads and keeps every result's state.
func TestRestartSeesUploads(t *testing.T) {
	v := newEnv(t)
	infs := []*device{newDevice(), newDevice()}
	var ups [2][]contactlog.Sighting
	var contacts []contactlog.Report
	for i, ago := range []time.Duration{1, 30, 80, 200} {
		c := newDevice()
		si, sc := meet(infs[i/2], c, v.now().Add(-ago*time.Hour), 10, 50)
		ups[i/2], contacts = append(ups[i/2], si), append(contacts, c.report(sc))
	}
	v.mustUpload(infs[0].report(ups[0]...))
	v.mustUpload(infs[1].report(ups[1]...))
	unused := v.authorize()
	before := make([]api.ExposureResponse, len(contacts))
	for i, c := range contacts {
		before[i] = v.check(c)
	}

	v.restart()
	if n := v.e.index.Len(); n != len(contacts) {
		t.Errorf("rebuilt index holds %d sightings, want %d", n, len(contacts))
	}
	for i, c := range contacts {
		if got := v.check(c); !equalExposure(got, before[i]) || dayOf(t, got, when(c)).Minutes != 10 {
			t.Errorf("contact %d after a restart: %+v, before: %+v", i, got, before[i])
		}
	}
	// The authorization issued before the restart still uploads once.
	inf, c := encounter(v.now().Add(-time.Hour), 10, 50)
	if _, err := v.upload(unused, inf); err != nil {
		t.Fatalf("authorization issued before a restart: %v", err)
	}
	v.restart()
	if r := v.check(c); dayOf(t, r, when(c)).Minutes != 10 {
		t.Error("an upload made after one restart is lost by the next")
	}
	if len(v.records(tableKEK)) != 1 {
		t.Error("restarts made more than one key-encryption key")
	}
}

func equalExposure(a, b api.ExposureResponse) bool {
	if a.Exposed != b.Exposed || len(a.Days) != len(b.Days) {
		return false
	}
	for i := range a.Days {
		if a.Days[i] != b.Days[i] {
			return false
		}
	}
	return true
}

// TestRestartOtherSealingKey: another sealing key (another build, another
// platform) cannot open the store, and its failed start destroys nothing.
// A key-encryption key the host altered fails the same way.
func TestRestartOtherSealingKey(t *testing.T) {
	v := newEnv(t)
	inf, c := encounter(v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf)
	snapshot := v.snapshot()

	cfg := v.config()
	rand.Read(cfg.SealingKey[:])
	if _, err := Open(context.Background(), cfg); err == nil {
		t.Fatal("an enclave with another sealing key opened the store")
	}
	if !sameRecords(snapshot, v.snapshot()) {
		t.Fatal("a start with the wrong sealing key changed the store")
	}

	kek := v.records(tableKEK)[0]
	v.put(store.Record{Table: kek.Table, Key: kek.Key, Day: kek.Day, Value: flip(kek.Value)})
	if _, err := Open(context.Background(), v.config()); err == nil {
		t.Fatal("an enclave opened a store whose key-encryption key was altered")
	}
	v.put(kek)
	v.restart()
	if r := v.check(c); dayOf(t, r, when(c)).Minutes != 10 {
		t.Fatal("the right sealing key no longer opens the store")
	}
}

// TestRestartRefusesTamperedUploads: upload records that the host altered,
// moved to another key, moved to another day or swapped are refused and
// reported at start, never matched; the untouched ones still match.
func TestRestartRefusesTamperedUploads(t *testing.T) {
	v := newEnv(t)
	// Six uploads on six days: one record each.
	contacts := map[int64]contactlog.Report{}
	for i := range 6 {
		inf, c := encounter(v.now().Add(-time.Duration(i)*24*time.Hour-time.Hour), 10, 50)
		v.mustUpload(inf)
		contacts[int64(utcDay(when(c)))] = c
	}
	recs := v.records(tableUploads)
	if len(recs) != 6 {
		t.Fatalf("%d upload records, want 6", len(recs))
	}
	byDay := map[int64]store.Record{}
	for _, r := range recs {
		byDay[int64(r.Day)] = r
	}
	if len(byDay) != 6 {
		t.Fatalf("upload records on %d days, want 6", len(byDay))
	}
	d := func(ago int) int64 { return int64(utcDay(v.now().Add(-time.Duration(ago)*24*time.Hour - time.Hour))) }

	// Altered.
	r := byDay[d(0)]
	v.put(store.Record{Table: r.Table, Key: r.Key, Day: r.Day, Value: flip(r.Value)})
	// Moved to another key of the same day.
	r = byDay[d(1)]
	v.del(r.Table, r.Key)
	moved := bytes.Clone(r.Key)
	moved[0] ^= 1
	v.put(store.Record{Table: r.Table, Key: moved, Day: r.Day, Value: r.Value})
	// Moved to another day that has a key.
	r = byDay[d(2)]
	v.put(store.Record{Table: r.Table, Key: r.Key, Day: byDay[d(5)].Day, Value: r.Value})
	// Two records' values swapped.
	a, b := byDay[d(3)], byDay[d(4)]
	v.put(store.Record{Table: a.Table, Key: a.Key, Day: a.Day, Value: b.Value})
	v.put(store.Record{Table: b.Table, Key: b.Key, Day: b.Day, Value: a.Value})

	v.logs.Reset()
	v.restart()
	for ago := range 6 {
		c := contacts[d(ago)]
		matched := dayOf(t, v.check(c), when(c)).Minutes != 0
		if want := ago == 5; matched != want {
			t.Errorf("upload of %d days ago: matched = %v, want %v", ago, matched, want)
		}
	}
	if n := strings.Count(v.logs.String(), "stored upload does not open"); n != 5 {
		t.Errorf("%d refused uploads reported, want 5; logs:\n%s", n, v.logs.String())
	}
	if n := v.e.index.Len(); n != 1 {
		t.Errorf("index holds %d sightings, want the untouched upload's 1", n)
	}
}

// TestRestartRefusesTamperedDayKey: a day key the host altered loses that
// day's uploads (they do not open) but does not stop the start.
func TestRestartRefusesTamperedDayKey(t *testing.T) {
	v := newEnv(t)
	yesterday, today := v.now().Add(-24*time.Hour), v.now().Add(-time.Hour)
	inf, contact := newDevice(), newDevice()
	iY, sY := meet(inf, contact, yesterday, 10, 50)
	iT, sT := meet(inf, contact, today, 10, 50)
	v.mustUpload(inf.report(iY, iT))
	cY, cT := contact.report(sY), contact.report(sT)
	for _, r := range v.records(tableDayKeys) {
		if r.Day == utcDay(yesterday) {
			v.put(store.Record{Table: r.Table, Key: r.Key, Day: r.Day, Value: flip(r.Value)})
		}
	}
	// A day key filed under the wrong key is ignored too.
	v.put(store.Record{Table: tableDayKeys, Key: []byte("misplaced"), Day: utcDay(today), Value: []byte("junk")})
	v.logs.Reset()
	v.restart()
	if dayOf(t, v.check(cY), yesterday).Minutes != 0 {
		t.Error("an upload whose day key was altered matches")
	}
	if dayOf(t, v.check(cT), today).Minutes != 10 {
		t.Error("the other day's upload no longer matches")
	}
	for _, want := range []string{"day key does not unwrap", "day key record misplaced"} {
		if !strings.Contains(v.logs.String(), want) {
			t.Errorf("start did not report %q; logs:\n%s", want, v.logs.String())
		}
	}
}

// TestTamperedResultsAndAuthorizations: a result or authorization record
// that the host altered or moved is refused as an internal error, never
// taken as a result or an authorization.
func TestTamperedResultsAndAuthorizations(t *testing.T) {
	v := newEnv(t)
	positive, negative, altered := newSecret(), newSecret(), newSecret()
	v.submit(positive, api.Positive)
	v.submit(negative, api.Negative)
	v.submit(altered, api.Positive)
	result := func(secret []byte) store.Record {
		r, err := v.store.Get(context.Background(), tableResults, v.e.recordKey(tableResults, api.TestCode(secret)))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// The host files the positive result under the negative test's key,
	// and alters another positive result.
	pos, neg, alt := result(positive), result(negative), result(altered)
	v.put(store.Record{Table: neg.Table, Key: neg.Key, Day: neg.Day, Value: pos.Value})
	v.put(store.Record{Table: alt.Table, Key: alt.Key, Day: alt.Day, Value: flip(alt.Value)})
	pr, err := v.poll(negative)
	wantInternal(t, "poll of a result moved from another test", err)
	if pr.Result == api.Positive || pr.UploadAuthorization != nil {
		t.Errorf("a moved result made a negative test positive: %+v", pr)
	}
	pr, err = v.poll(altered)
	wantInternal(t, "poll of an altered result", err)
	if pr.UploadAuthorization != nil {
		t.Errorf("an altered result yielded an authorization: %+v", pr)
	}

	// An altered authorization uploads nothing.
	token := v.authorize()
	auth := v.records(tableAuths)
	if len(auth) != 1 {
		t.Fatalf("%d authorization records, want 1", len(auth))
	}
	v.put(store.Record{Table: auth[0].Table, Key: auth[0].Key, Day: auth[0].Day, Value: flip(auth[0].Value)})
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	_, err = v.upload(token, inf)
	wantInternal(t, "upload with an altered authorization", err)
	if n := v.e.index.Len(); n != 0 {
		t.Errorf("an altered authorization indexed %d sightings", n)
	}
	if !strings.Contains(v.logs.String(), "stored record does not open") {
		t.Errorf("refused records were not reported; logs:\n%s", v.logs.String())
	}
}
