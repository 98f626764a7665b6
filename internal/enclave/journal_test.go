package enclave

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// TestUploadDurability: an upload matches at once and its result's poll
// says it is pending until the flush that writes it, then uploaded. After
// a restart a written upload still matches and is still used; an upload
// the enclave had not written is lost: it no longer matches, the poll
// hands out its authorization again, and the device's next upload works.
func TestUploadDurability(t *testing.T) {
	v := newEnv(t, detailed)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
	matched := func() bool { return dayOf(t, v.check(contact), when(contact)).Minutes == 10 }
	wantPoll := func(when string, uploaded, pending bool) api.PollResultResponse {
		t.Helper()
		got, err := v.poll(secret)
		if err != nil || got.Result != api.Positive || got.Uploaded != uploaded || got.UploadPending != pending || (got.UploadAuthorization != nil) != (!uploaded && !pending) {
			t.Fatalf("poll %s: %+v, %v; want uploaded %v, pending %v", when, got, err, uploaded, pending)
		}
		return got
	}

	up, err := v.upload(pr.UploadAuthorization, inf)
	if err != nil || up.Durable || up.DurableBy != v.nextFlush().Unix() {
		t.Fatalf("upload: %+v, %v; want it not durable, by the next flush at %d", up, err, v.nextFlush().Unix())
	}
	if !matched() {
		t.Fatal("the upload does not match before it is written")
	}
	wantPoll("after the upload", false, true)
	v.restart()
	if matched() {
		t.Error("an upload lost by a restart before its flush still matches")
	}
	again := wantPoll("after a restart that lost the upload", false, false)
	if !bytes.Equal(again.UploadAuthorization, pr.UploadAuthorization) {
		t.Error("the authorization handed out again is not the device's (same result, same period)")
	}
	if _, err := v.upload(again.UploadAuthorization, inf); err != nil {
		t.Fatalf("the upload sent again: %v", err)
	}
	v.clock.Advance(v.nextFlush().Sub(v.now()) - time.Second)
	if err := v.e.FlushDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantPoll("a second before the flush", false, true)
	v.flushDue(time.Second)
	wantPoll("after the flush", true, false)
	v.restart()
	if !matched() {
		t.Error("a written upload is lost by a restart")
	}
	wantPoll("after a restart", true, false)
	_, err = v.upload(pr.UploadAuthorization, inf)
	wantCode(t, "the authorization of a written upload after a restart", err, api.CodeAlreadyUsed)
}

// bigReport returns a report of n sightings of inf, all of today before
// now (so that it spans several journal rows), the first of them heard by
// contact, which it returns.
func bigReport(v *env, inf *device, n int) (up, contact contactlog.Report) {
	c := newDevice()
	cur := enid.IntervalOf(v.now())
	first, mirror := meet(inf, c, cur.Time(), 10, 50)
	ss := []contactlog.Sighting{first}
	for i := 1; i < n; i++ {
		ss = append(ss, inf.hears(newDevice(), cur-enid.Interval(i%60), cur-enid.Interval(i%60), 5, 60))
	}
	return inf.report(ss...), c.report(mirror)
}

// TestLargeUploadSpansFlushes: an upload larger than a flush of a fixed
// size is written over several, in order; it is answered at once, with
// when its last part will be written, and its result's poll says pending
// until then. A restart between its flushes loses it whole (the parts
// written are incomplete, reported, never matched) and the device uploads
// again; the record numbers the lost upload used are not used again, so
// that its leftover rows never mix with a later record's.
func TestLargeUploadSpansFlushes(t *testing.T) {
	v := newEnv(t, detailed, fixedFlushes(2), func(p *policy.Policy) { p.StoreFlushSeconds = 600 })
	// Five rows of sightings and the mark: three flushes of two rows.
	up, contact := bigReport(v, newDevice(), 5*journalChunk/contactlog.ReportSightingSize-20)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	var resp api.UploadResponse
	if calls := v.hostSees(func() { resp, err = v.upload(pr.UploadAuthorization, up) }); err != nil || len(calls) != 0 {
		t.Fatalf("upload: %v, %d store calls", err, len(calls))
	}
	if want := v.nextFlush().Add(2 * v.flushEvery()).Unix(); resp.DurableBy != want || resp.Durable {
		t.Errorf("upload answer %+v, want durable by the third flush, %d", resp, want)
	}
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("the upload does not match before it is written")
	}
	v.clock.Advance(v.nextFlush().Sub(v.now()))
	for i := range 3 {
		if pr, err := v.poll(secret); err != nil || pr.Uploaded || !pr.UploadPending {
			t.Fatalf("poll before flush %d: %+v, %v", i+1, pr, err)
		}
		v.flushDue(0)
		if i < 2 {
			v.clock.Advance(v.flushEvery())
		}
	}
	if got := v.now().Unix(); got != resp.DurableBy {
		t.Errorf("the last part was written at %d, the answer said by %d", got, resp.DurableBy)
	}
	if pr, err := v.poll(secret); err != nil || !pr.Uploaded {
		t.Fatalf("poll after the third flush: %+v, %v; want uploaded", pr, err)
	}

	// Another large upload, and a restart after its first flush.
	up2, contact2 := bigReport(v, newDevice(), 5*journalChunk/contactlog.ReportSightingSize-20)
	secret2 := newSecret()
	v.submit(secret2, api.Positive)
	pr2, err := v.poll(secret2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.upload(pr2.UploadAuthorization, up2); err != nil {
		t.Fatal(err)
	}
	v.flushDue(v.nextFlush().Sub(v.now()))
	v.logs.Reset()
	v.restart()
	if r := v.check(contact2); dayOf(t, r, when(contact2)).Minutes != 0 {
		t.Error("an upload whose last parts were not written matches after a restart")
	}
	if !strings.Contains(v.logs.String(), "incomplete_records=1") {
		t.Errorf("the incomplete upload was not reported; logs:\n%s", v.logs.String())
	}
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("the first upload is lost")
	}
	pr2, err = v.poll(secret2)
	if err != nil || pr2.UploadAuthorization == nil {
		t.Fatalf("poll of the lost upload's result: %+v, %v; want an authorization again", pr2, err)
	}
	// The device sends it again, now a little smaller (it made fewer
	// sightings since): other record sizes than the leftovers'.
	up3, contact3 := bigReport(v, newDevice(), 3*journalChunk/contactlog.ReportSightingSize)
	if _, err := v.upload(pr2.UploadAuthorization, up3); err != nil {
		t.Fatalf("the upload sent again: %v", err)
	}
	v.flushAll()
	v.logs.Reset()
	v.restart()
	if r := v.check(contact3); dayOf(t, r, when(contact3)).Minutes != 10 {
		t.Error("the upload sent again after a lost one is lost at the next restart")
	}
	if pr, err := v.poll(secret2); err != nil || !pr.Uploaded {
		t.Errorf("poll of the upload sent again after a restart: %+v, %v; want uploaded", pr, err)
	}
	if logs := v.logs.String(); strings.Contains(logs, "does not fit") || strings.Contains(logs, "does not open") {
		t.Errorf("rows of the lost upload and of the one sent again were mixed; logs:\n%s", logs)
	}
	// Every record number in the store belongs to one record.
	type rec struct {
		id    [16]byte
		count int
	}
	seen := map[uint64]rec{}
	for _, r := range v.records(tableJournal) {
		row, err := v.e.openJournalRow(r)
		if err != nil {
			t.Fatal(err)
		}
		if row.kind == journalFiller {
			continue
		}
		if x, ok := seen[row.seq]; ok && (x.id != row.id || x.count != row.count) {
			t.Errorf("record number %d is used by two records", row.seq)
		}
		seen[row.seq] = rec{row.id, row.count}
	}
}

// uploadRows opens every journal row and returns the rows that carry an
// upload's part, by the day of the part.
func (v *env) uploadRows() map[int64]store.Record {
	v.t.Helper()
	rows := map[int64]store.Record{}
	for _, r := range v.records(tableJournal) {
		row, err := v.e.openJournalRow(r)
		if err != nil {
			v.t.Fatal(err)
		}
		if row.kind == journalUpload {
			rows[int64(row.day)] = r
		}
	}
	return rows
}

// TestRestartRefusesTamperedJournal: journal rows that the host altered,
// moved to another key, swapped, spliced or brought from another
// enclave's store are refused and reported at start, never matched; a
// record missing a row is incomplete, reported and never matched; filler
// is not reported; the untouched rows still match.
func TestRestartRefusesTamperedJournal(t *testing.T) {
	v := newEnv(t, detailed)
	// Six uploads of six days: one row each.
	contacts := map[int64]contactlog.Report{}
	for i := range 6 {
		inf, c := encounter(v.now().Add(-time.Duration(i)*24*time.Hour-time.Hour), 10, 50)
		v.mustUpload(inf)
		contacts[int64(utcDay(when(c)))] = c
	}
	v.flushAll()
	rows := v.uploadRows()
	if len(rows) != 6 {
		t.Fatalf("upload rows of %d days, want 6", len(rows))
	}
	d := func(ago int) int64 { return int64(utcDay(v.now().Add(-time.Duration(ago)*24*time.Hour - time.Hour))) }
	// A filler row, to alter too.
	var filler store.Record
	for _, r := range v.records(tableJournal) {
		if row, err := v.e.openJournalRow(r); err == nil && row.kind == journalFiller {
			filler = r
			break
		}
	}
	if filler.Key == nil {
		t.Fatal("no filler row")
	}
	// A filler row cut short.
	var cut store.Record
	for _, r := range v.records(tableJournal) {
		if row, err := v.e.openJournalRow(r); err == nil && row.kind == journalFiller && !bytes.Equal(r.Key, filler.Key) {
			cut = r
			break
		}
	}
	v.put(store.Record{Table: cut.Table, Key: cut.Key, Day: cut.Day, Value: cut.Value[:len(cut.Value)-1]})
	// A row of another enclave's journal.
	other := newEnv(t)
	other.flushDue(other.flushEvery())
	foreign := other.records(tableJournal)[0]

	// Altered.
	r := rows[d(0)]
	v.put(store.Record{Table: r.Table, Key: r.Key, Day: r.Day, Value: flip(r.Value)})
	// Moved to another key.
	r = rows[d(1)]
	v.del(r.Table, r.Key)
	moved := bytes.Clone(r.Key)
	moved[0] ^= 1
	v.put(store.Record{Table: r.Table, Key: moved, Day: r.Day, Value: r.Value})
	// Two rows' values swapped.
	a, b := rows[d(2)], rows[d(3)]
	v.put(store.Record{Table: a.Table, Key: a.Key, Day: a.Day, Value: b.Value})
	v.put(store.Record{Table: b.Table, Key: b.Key, Day: b.Day, Value: a.Value})
	// One row's header on another's body.
	r = rows[d(4)]
	spliced := append(bytes.Clone(filler.Value[:journalHeaderSize]), r.Value[journalHeaderSize:]...)
	v.put(store.Record{Table: r.Table, Key: r.Key, Day: r.Day, Value: spliced})
	v.put(store.Record{Table: filler.Table, Key: filler.Key, Day: filler.Day, Value: flip(filler.Value)})
	v.put(foreign)

	v.logs.Reset()
	v.restart()
	for ago := range 6 {
		c := contacts[d(ago)]
		matched := dayOf(t, v.check(c), when(c)).Minutes != 0
		if want := ago == 5; matched != want {
			t.Errorf("upload of %d days ago: matched = %v, want %v", ago, matched, want)
		}
	}
	// Altered, moved, two swapped, spliced, altered filler, cut filler,
	// foreign.
	if n := strings.Count(v.logs.String(), "journal row does not open"); n != 8 {
		t.Errorf("%d refused rows reported, want 8; logs:\n%s", n, v.logs.String())
	}
	if n := v.e.index.Len(); n != 1 {
		t.Errorf("index holds %d sightings, want the untouched upload's 1", n)
	}

	// A deleted row of a record of several.
	w := newEnv(t, detailed)
	up, contact := bigReport(w, newDevice(), 2*journalChunk/contactlog.ReportSightingSize)
	w.mustUpload(up)
	w.flushAll()
	for _, r := range w.records(tableJournal) {
		if row, err := w.e.openJournalRow(r); err == nil && row.kind == journalUpload && row.index == 1 {
			w.del(r.Table, r.Key)
		}
	}
	w.logs.Reset()
	w.restart()
	if r := w.check(contact); dayOf(t, r, when(contact)).Minutes != 0 {
		t.Error("an upload missing a row matches")
	}
	if !strings.Contains(w.logs.String(), "incomplete_records=1") {
		t.Errorf("the upload missing a row was not reported; logs:\n%s", w.logs.String())
	}
}

// TestJournalRowsOfExpiredDays: a journal row whose part belongs to a day
// that has left the window stays in the store until its flush's day
// leaves too, but no longer opens: a start skips it, counted as expired,
// not reported as tampered; filler is not reported either.
func TestJournalRowsOfExpiredDays(t *testing.T) {
	v := newEnv(t, detailed)
	first := v.pol.WindowStart(v.now()).Add(10 * time.Hour)
	inf, old, recent := newDevice(), newDevice(), newDevice()
	iOld, sOld := meet(inf, old, first, 10, 50)
	iRecent, sRecent := meet(inf, recent, v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf.report(iOld, iRecent))
	v.flushAll()
	rows := v.uploadRows()
	oldRow := rows[int64(utcDay(first))]
	if oldRow.Key == nil {
		t.Fatal("no row of the window's first day")
	}
	v.clock.Advance(24 * time.Hour)
	v.logs.Reset()
	v.restart()
	logs := v.logs.String()
	for _, want := range []string{"expired_rows=1", "refused_rows=0", "incomplete_records=0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("start did not report %s; logs:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "level=ERROR") {
		t.Errorf("a start over expired and filler rows reported errors:\n%s", logs)
	}
	if _, err := v.e.openJournalRow(oldRow); !errors.Is(err, seal.ErrDayDeleted) {
		t.Errorf("the expired day's row: %v, want seal.ErrDayDeleted", err)
	}
	if r := v.check(recent.report(sRecent)); dayOf(t, r, when(recent.report(sRecent))).Minutes != 10 {
		t.Error("the part of a day still in the window is lost")
	}
	if r := v.check(old.report(sOld)); r.Exposed {
		t.Error("the part of an expired day matches")
	}
}

// TestPendingUploadOfExpiringDay: an upload whose oldest part belongs to
// the window's first day, made just before midnight, waits in the journal
// when Expire destroys that day's key. The journal drops that part (it
// could no longer be sealed) and goes on: the next flushes write the rest,
// and every later flush works.
func TestPendingUploadOfExpiringDay(t *testing.T) {
	v := newEnv(t, detailed, func(p *policy.Policy) { p.StoreFlushRows = 1 })
	ctx := context.Background()
	secret := newSecret()
	v.submit(secret, api.Positive)
	// 23:30 on the last day the result's day is in the window.
	v.clock.Advance(time.Duration(v.pol.RetentionDays-1)*24*time.Hour + 9*time.Hour + 7*time.Minute)
	v.restart() // the schedule starts from now: no backlog of flushes
	firstDay := v.pol.WindowStart(v.now())
	inf, old, recent := newDevice(), newDevice(), newDevice()
	iOld, _ := meet(inf, old, firstDay.Add(15*time.Hour), 10, 50)
	iRecent, sRecent := meet(inf, recent, v.now().Add(-time.Hour), 10, 50)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.upload(pr.UploadAuthorization, inf.report(iOld, iRecent)); err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(40 * time.Minute) // past midnight
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		v.clock.Advance(v.flushEvery())
		if err := v.e.FlushDue(ctx); err != nil {
			t.Fatalf("flush %d after the first day expired: %v", i+1, err)
		}
	}
	if n := v.pendingRecords(); n != 0 {
		t.Errorf("%d records still wait in the journal", n)
	}
	v.restart()
	if r := v.check(recent.report(sRecent)); dayOf(t, r, when(recent.report(sRecent))).Minutes != 10 {
		t.Error("the part of a day still in the window was not written")
	}
}

// TestApplyJournalRefusesBadRecords: a record that opened but does not
// make sense (of an unknown kind, a part that does not decode, the mark of
// a result no longer known) is reported and skipped; the start goes on.
func TestApplyJournalRefusesBadRecords(t *testing.T) {
	v := newEnv(t)
	day := utcDay(v.now())
	var id [16]byte
	v.logs.Reset()
	for _, tc := range []struct {
		kind byte
		data []byte
		log  string
	}{
		{9, nil, "journal record of an unknown kind"},
		{journalUpload, []byte{1, 2, 3}, "stored upload does not decode"},
		{journalUploaded, nil, ""},
	} {
		if err := v.e.applyJournal(tc.kind, day, id, tc.data); err != nil {
			t.Errorf("record of kind %d: %v, want it skipped", tc.kind, err)
		}
		if !strings.Contains(v.logs.String(), tc.log) {
			t.Errorf("record of kind %d was not reported; logs:\n%s", tc.kind, v.logs.String())
		}
	}
	if n := v.e.index.Len() + v.e.oneSided.Len(); n != 0 {
		t.Errorf("bad records indexed %d entries", n)
	}
}
