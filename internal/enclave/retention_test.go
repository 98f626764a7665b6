package enclave

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
)

// TestExpire: a day stays while it is in the retention window and, once it
// leaves, Expire drops it from the index, the keyring and the store,
// every table of it; the other days stay and still match.
func TestExpire(t *testing.T) {
	v := newEnv(t, detailed)
	ctx := context.Background()
	old := v.now().Add(-3 * 24 * time.Hour)
	recent := v.now().Add(-time.Hour)
	inf, contact := newDevice(), newDevice()
	iOld, sOld := meet(inf, contact, old, 10, 50)
	iOld2, _ := meet(inf, newDevice(), old.Add(time.Hour), 10, 50)
	iRecent, sRecent := meet(inf, contact, recent, 10, 50)
	v.mustUpload(inf.report(iOld, iOld2, iRecent))
	v.flushAll()
	// The host keeps a copy of the journal rows. They are stored under
	// the day of their flush; the old day's part is sealed under its own.
	rows := v.records(tableJournal)
	cOld, cRecent := contact.report(sOld), contact.report(sRecent)
	oldDay := utcDay(old)

	// The last day the old encounter is in the window: Expire keeps it.
	v.clock.Advance(10 * 24 * time.Hour)
	if first := utcDay(v.pol.WindowStart(v.now())); first != oldDay {
		t.Fatalf("test set-up: window starts on day %d, want %d", first, oldDay)
	}
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if r := v.check(cOld); dayOf(t, r, old).Minutes != 10 {
		t.Fatal("Expire dropped a day still in the window")
	}
	kept := v.recordsOf(oldDay)
	if len(kept) != 1 || kept[0].Table != tableDayKeys {
		t.Fatalf("records of the old day before it expires: %+v, want its day key", kept)
	}

	v.clock.Advance(24 * time.Hour)
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := v.recordsOf(oldDay); len(rs) != 0 {
		t.Errorf("%d records of the expired day remain in the store", len(rs))
	}
	if days, err := v.store.Days(ctx); err != nil || slices.Contains(days, oldDay) {
		t.Errorf("store days after Expire: %v, %v", days, err)
	}
	if n := v.e.index.Len(); n != 1 {
		t.Errorf("index holds %d sightings after Expire, want the recent day's 1", n)
	}
	if slices.Contains(v.e.keys.Days(), oldDay) {
		t.Error("the keyring still holds the expired day's key")
	}
	// The old day's part, in a row still in the store, no longer opens.
	expired := 0
	for _, r := range rows {
		if row, err := v.e.openJournalRow(r); row.day == oldDay {
			expired++
			if !errors.Is(err, seal.ErrDayDeleted) {
				t.Errorf("a journal row of the expired day: %v, want seal.ErrDayDeleted", err)
			}
		}
	}
	if expired != 1 {
		t.Errorf("%d journal rows of the old day, want its part's 1", expired)
	}
	if r := v.check(cRecent); dayOf(t, r, recent).Minutes != 10 {
		t.Error("the day still in the window no longer matches")
	}

	// The host restores the whole day from a backup, day key included:
	// the next start drops it again by the enclave's own clock.
	for _, r := range kept {
		v.put(r)
	}
	v.restart()
	if rs := v.recordsOf(oldDay); len(rs) != 0 {
		t.Errorf("%d records of a restored expired day survive a restart", len(rs))
	}
	if n := v.e.index.Len(); n != 1 {
		t.Errorf("index holds %d sightings after restoring an expired day, want 1", n)
	}
}

// TestExpireEveryTable: results (and with them their authorizations),
// journal rows and traces leave with their day.
func TestExpireEveryTable(t *testing.T) {
	v := newEnv(t)
	ctx := context.Background()
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	unused := v.authorize()
	inf, _ := encounter(v.now().Add(-time.Hour), 5, 50)
	if _, err := v.upload(pr.UploadAuthorization, inf); err != nil {
		t.Fatal(err)
	}
	v.flushAll()
	v.submitTrace(walk(v.now().Add(-2*time.Hour), 10, 46.5, 6.5, 0.00001))
	today := utcDay(v.now())
	for _, table := range []string{tableResults, tableTraces, tableTraceSeen, tableDayKeys} {
		if !slices.ContainsFunc(v.records(table), func(r store.Record) bool { return r.Day == today }) {
			t.Fatalf("no %s record of today before Expire", table)
		}
	}
	// Journal rows are stored under the day after their flush's.
	if !slices.ContainsFunc(v.records(tableJournal), func(r store.Record) bool { return r.Day == today+1 }) {
		t.Fatal("no journal row of today's flushes before Expire")
	}

	v.clock.Advance(time.Duration(v.pol.RetentionDays) * 24 * time.Hour)
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := v.recordsOf(today); len(rs) != 0 {
		t.Fatalf("%d records of the expired day remain", len(rs))
	}
	v.clock.Advance(24 * time.Hour)
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := v.recordsOf(today + 1); slices.ContainsFunc(rs, func(r store.Record) bool { return r.Table == tableJournal }) {
		t.Fatal("journal rows of the expired day's flushes remain a day later")
	}
	if len(v.records(tableKEK)) != 2 {
		t.Fatal("Expire deleted the key-encryption key or its check value")
	}
	if pr, err := v.poll(secret); err != nil || pr.Result != api.Pending {
		t.Errorf("poll of an expired result: %+v, %v; want pending", pr, err)
	}
	fresh, _ := encounter(v.now().Add(-time.Hour), 5, 50)
	_, err = v.upload(unused, fresh)
	wantCode(t, "upload with an expired day's authorization", err, api.CodeNotAuthorized)
	if days := v.e.gps.Days(); len(days) != 0 {
		t.Errorf("GPS index still holds days %v", days)
	}
	v.restart() // still opens: the key-encryption key is not a day's
}

// recordsOf returns every record of day, in every table.
func (v *env) recordsOf(d calendar.Day) []store.Record {
	var rs []store.Record
	for _, r := range v.snapshot() {
		if r.Day == d {
			rs = append(rs, r)
		}
	}
	return rs
}

// TestExpireDuringUpload: an upload prepared (checked against the window,
// split by day) before the window moves and Expire runs, and taken after,
// alone or in an exchange, keeps what is still in the window and nothing
// of the day Expire destroyed: the journal, which seals by day, goes on
// flushing, the upload becomes durable, and the expired day's sightings
// are not indexed.
func TestExpireDuringUpload(t *testing.T) {
	for _, via := range []string{"upload", "exchange"} {
		t.Run(via, func(t *testing.T) {
			v := newEnv(t, detailed)
			ctx := context.Background()
			v.clock.Advance(10 * 24 * time.Hour)
			first := utcDay(v.pol.WindowStart(v.now()))
			old, recent := first.Time().Add(time.Hour), v.now().Add(-time.Hour)
			inf, contact := newDevice(), newDevice()
			iOld, sOld := meet(inf, contact, old, 10, 50)
			iRecent, sRecent := meet(inf, contact, recent, 10, 50)
			secret := newSecret()
			v.submit(secret, api.Positive)
			pr, err := v.poll(secret)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := v.e.parseReport(encode(t, inf.report(iOld, iRecent)), v.pol.Limits.MaxUploadSightings)
			if err != nil {
				t.Fatal(err)
			}
			up, err := v.e.prepareUpload(rep, via == "upload")
			if err != nil {
				t.Fatal(err)
			}

			// The old day leaves the window, and Expire runs, before the
			// upload is taken.
			v.clock.Advance(24 * time.Hour)
			if err := v.e.Expire(ctx); err != nil {
				t.Fatal(err)
			}
			var got api.UploadResponse
			if via == "upload" {
				got, err = v.e.takeUpload(pr.UploadAuthorization, up, nil)
			} else {
				v.e.mu.Lock()
				got, err = v.e.exchangeUploadLocked(pr.UploadAuthorization, nil, up, nil)
				v.e.mu.Unlock()
			}
			if err != nil || got.Sightings != 1 {
				t.Fatalf("upload taken after Expire: %+v, %v; want its recent sighting taken", got, err)
			}
			v.flushAll()
			if pr, err := v.poll(secret); err != nil || !pr.Uploaded || pr.UploadPending {
				t.Errorf("poll after the flushes: %+v, %v; want the upload durable", pr, err)
			}
			if n := v.e.index.Len(); n != 1 {
				t.Errorf("index holds %d sightings, want the recent day's 1", n)
			}
			r := v.check(contact.report(sOld, sRecent))
			if dayOf(t, r, recent).Minutes != 10 {
				t.Error("the recent sighting does not match")
			}
			wantQuiet(t, r, recent.UTC().Format(api.DateLayout))
		})
	}
}

// TestUploadOfExpiredDaysRefused: an upload whose every day left the
// window while it was taken is refused, and its authorization stays
// unused.
func TestUploadOfExpiredDaysRefused(t *testing.T) {
	v := newEnv(t)
	ctx := context.Background()
	v.clock.Advance(10 * 24 * time.Hour)
	first := utcDay(v.pol.WindowStart(v.now()))
	// A key of the window's first day alone, and a sighting of it.
	inf, _ := encounter(first.Time().Add(time.Hour), 10, 50)
	token := v.authorize()
	rep, err := v.e.parseReport(encode(t, inf), v.pol.Limits.MaxUploadSightings)
	if err != nil {
		t.Fatal(err)
	}
	up, err := v.e.prepareUpload(rep, true)
	if err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(24 * time.Hour)
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = v.e.takeUpload(token, up, nil)
	wantCode(t, "upload of days that all left the window", err, api.CodeOutOfWindow)
	if n := v.pendingRecords(); n != 0 || v.e.index.Len() != 0 {
		t.Errorf("%d records queued, %d sightings indexed; want none", n, v.e.index.Len())
	}
	fresh, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	if _, err := v.upload(token, fresh); err != nil {
		t.Errorf("the authorization after the refusal: %v; want it unused", err)
	}
}
