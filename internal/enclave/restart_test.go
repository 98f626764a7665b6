package enclave

import (
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
// key matches the same written uploads and keeps every result's state.
func TestRestartSeesUploads(t *testing.T) {
	v := newEnv(t, detailed)
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

	v.flushAll()
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
	v.flushAll()
	v.restart()
	if r := v.check(c); dayOf(t, r, when(c)).Minutes != 10 {
		t.Error("an upload made after one restart is lost by the next")
	}
	if len(v.records(tableKEK)) != 2 {
		t.Error("restarts made more than one key-encryption key (or lost its check value)")
	}
}

func equalExposure(a, b api.ExposureResponse) bool {
	if a.Exposed != b.Exposed || a.LastExposure != b.LastExposure || a.Reciprocal != b.Reciprocal || a.OneSided != b.OneSided || len(a.Days) != len(b.Days) {
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
	v := newEnv(t, detailed)
	inf, c := encounter(v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf)
	v.flushAll()
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

// TestRestartRefusesTamperedDayKey: a day key the host altered loses that
// day's uploads (their journal rows do not open) but does not stop the
// start.
func TestRestartRefusesTamperedDayKey(t *testing.T) {
	v := newEnv(t, detailed)
	yesterday, today := v.now().Add(-24*time.Hour), v.now().Add(-time.Hour)
	inf, contact := newDevice(), newDevice()
	iY, sY := meet(inf, contact, yesterday, 10, 50)
	iT, sT := meet(inf, contact, today, 10, 50)
	v.mustUpload(inf.report(iY, iT))
	v.flushAll()
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
	for _, want := range []string{"day key does not unwrap", "day key record misplaced", "journal row does not open"} {
		if !strings.Contains(v.logs.String(), want) {
			t.Errorf("start did not report %q; logs:\n%s", want, v.logs.String())
		}
	}
}

// TestRestartRefusesTamperedResults: result records that the host
// altered or moved to another test's key are refused and reported at
// start, never taken as a result: the tests are pending again.
func TestRestartRefusesTamperedResults(t *testing.T) {
	v := newEnv(t)
	positive, negative, altered, untouched := newSecret(), newSecret(), newSecret(), newSecret()
	v.submit(positive, api.Positive)
	v.submit(negative, api.Negative)
	v.submit(altered, api.Positive)
	v.submit(untouched, api.Positive)
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
	// And a record of the wrong length under a key of its own.
	v.put(store.Record{Table: tableResults, Key: []byte("short"), Day: pos.Day, Value: pos.Value})
	v.logs.Reset()
	v.restart()
	for name, secret := range map[string][]byte{"moved from another test": negative, "altered": altered} {
		if pr, err := v.poll(secret); err != nil || pr.Result != api.Pending || pr.UploadAuthorization != nil {
			t.Errorf("poll of a result %s: %+v, %v; want pending", name, pr, err)
		}
	}
	if pr, err := v.poll(untouched); err != nil || pr.Result != api.Positive || pr.UploadAuthorization == nil {
		t.Errorf("poll of an untouched result: %+v, %v; want positive", pr, err)
	}
	if n := strings.Count(v.logs.String(), "stored result does not open"); n != 3 {
		t.Errorf("%d refused results reported, want 3; logs:\n%s", n, v.logs.String())
	}
}
