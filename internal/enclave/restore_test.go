package enclave

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// TestRestoreManyUploadsSameMatches: after a restart, many uploads over
// many days, with day parts of one row and of several, answer every check
// as they did before it, and as applying the stored records one by one, in
// the order they were made, into the baseline index answers; every upload
// is still said durable.
func TestRestoreManyUploadsSameMatches(t *testing.T) {
	v := newEnv(t, bothRules, detailed)
	rng := rand.New(rand.NewPCG(1, 2))
	var contacts []contactlog.Report
	var secrets [][]byte
	for i := range 24 {
		inf := newDevice()
		var ss []contactlog.Sighting
		for range 1 + i%4 {
			c := newDevice()
			at := v.now().Add(-time.Duration(1+rng.IntN(12*24)) * time.Hour)
			si, sc := meet(inf, c, at, uint8(1+rng.IntN(10)), uint8(40+rng.IntN(30)))
			ss, contacts = append(ss, si), append(contacts, c.report(sc))
		}
		if i%3 == 0 {
			// Enough sightings of strangers on one day that its part
			// takes several journal rows.
			at := enid.IntervalOf(v.now().Add(-time.Duration(24*(1+i%10)) * time.Hour))
			for range 2*journalChunk/contactlog.ReportSightingSize + 1 {
				ss = append(ss, inf.hears(newDevice(), at, at, 5, 60))
			}
		}
		secret := newSecret()
		v.submit(secret, api.Positive)
		pr, err := v.poll(secret)
		if err != nil || len(pr.UploadAuthorization) == 0 {
			t.Fatalf("poll of a positive test: %+v, %v", pr, err)
		}
		if _, err := v.upload(pr.UploadAuthorization, inf.report(ss...)); err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		secrets = append(secrets, secret)
	}
	_, stranger := encounter(v.now().Add(-3*time.Hour), 10, 50)
	contacts = append(contacts, stranger)
	before := make([]api.ExposureResponse, len(contacts))
	matched := 0
	for i, c := range contacts {
		if before[i] = v.check(c); minutes(before[i]) > 0 {
			matched++
		}
	}
	if matched != len(contacts)-1 {
		t.Fatalf("%d of %d contacts matched before the restart, want all but the stranger", matched, len(contacts))
	}
	sizes := [2]int{v.e.index.Len(), v.e.oneSided.Len()}
	v.flushAll()

	v.restart()
	if got := [2]int{v.e.index.Len(), v.e.oneSided.Len()}; got != sizes {
		t.Errorf("restored indexes hold %v entries, before the restart %v", got, sizes)
	}
	sameAnswers(t, v, contacts, before, "after a restart")
	for i, s := range secrets {
		if pr, err := v.poll(s); err != nil || !pr.Uploaded {
			t.Errorf("upload %d after a restart: %+v, %v; want it durable", i, pr, err)
		}
	}

	// The reference: the same records applied one by one, in order.
	v.e.index, v.e.oneSided = matchindex.NewMap(), matchindex.NewMap()
	if err := v.e.replayJournal(context.Background(), v.e.applyJournal); err != nil {
		t.Fatal(err)
	}
	sameAnswers(t, v, contacts, before, "applied one by one")
}

// minutes returns the minutes of contact a detailed answer found.
func minutes(r api.ExposureResponse) int {
	n := 0
	for _, d := range r.Days {
		n += d.Minutes
	}
	return n
}

func sameAnswers(t *testing.T, v *env, contacts []contactlog.Report, want []api.ExposureResponse, when string) {
	t.Helper()
	for i, c := range contacts {
		if got := v.check(c); !equalExposure(got, want[i]) {
			t.Errorf("contact %d %s: %d minutes on %s, before: %d on %s", i, when, minutes(got), got.LastExposure, minutes(want[i]), want[i].LastExposure)
		}
	}
}

// TestRestoreSkipsIncompleteRecords: a record whose rows are not all in the
// store is not applied, and the others are.
func TestRestoreSkipsIncompleteRecords(t *testing.T) {
	v := newEnv(t, detailed)
	inf := newDevice()
	c := newDevice()
	si, sc := meet(inf, c, v.now().Add(-2*time.Hour), 10, 50)
	ss := []contactlog.Sighting{si}
	at := enid.IntervalOf(v.now().Add(-2 * time.Hour))
	for range journalChunk/contactlog.ReportSightingSize + 1 {
		ss = append(ss, inf.hears(newDevice(), at, at, 5, 60))
	}
	v.mustUpload(inf.report(ss...))
	other, oc := encounter(v.now().Add(-30*time.Hour), 10, 50)
	v.mustUpload(other)
	v.flushAll()
	removed := false
	for _, r := range v.records(tableJournal) {
		if row, err := v.e.openJournalRow(r); err == nil && row.kind == journalUpload && row.count > 1 && row.index == 1 {
			v.del(tableJournal, r.Key)
			removed = true
		}
	}
	if !removed {
		t.Fatal("test set-up: no record of several rows")
	}
	v.restart()
	if minutes(v.check(c.report(sc))) > 0 {
		t.Error("a record missing a row was applied")
	}
	if minutes(v.check(oc)) == 0 {
		t.Error("a complete record was not applied")
	}
}

// TestRestoreEntriesAsUploaded: a restore derives from a stored day part
// the reciprocal entries an upload derives from it, in the same order,
// whether the part's sightings come grouped by key, as stored, or not,
// under keys that start mid-day and stop early, with a scratch memory
// used from part to part.
func TestRestoreEntriesAsUploaded(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	day := calendar.DayOf(testStart)
	first := enid.IntervalOf(day.Time())
	var sc restoreScratch
	for trial := range 40 {
		// Keys of the day and its neighbours, not overlapping: some
		// start mid-day, some are cut short.
		var keys []contactlog.DailyKey
		for at := first - enid.RollingPeriod/2; at < first+enid.RollingPeriod; {
			var k contactlog.DailyKey
			for i := range k.TEK {
				k.TEK[i] = byte(rng.Uint32())
			}
			k.Start, k.Period = at, uint8(1+rng.IntN(enid.RollingPeriod))
			keys = append(keys, k)
			at = k.End() + enid.Interval(rng.IntN(3))
		}
		part := contactlog.Report{Keys: keys}
		for range rng.IntN(600) {
			k := keys[rng.IntN(len(keys))]
			s := contactlog.Sighting{Interval: k.Start + enid.Interval(rng.IntN(int(k.Period))), Minutes: uint8(1 + rng.IntN(30)), Attenuation: uint8(rng.IntN(100))}
			for i := range contactlog.RPIPrefixSize {
				s.Heard[i] = byte(rng.Uint32())
			}
			part.Sightings = append(part.Sightings, s)
		}
		stored, err := part.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		grouped, err := contactlog.ParseReport(stored, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []contactlog.Report{grouped, part} {
			own, err := ownRPIs(p)
			if err != nil {
				t.Fatal(err)
			}
			// After what an earlier part left in the batch.
			before := slices.Clone(sc.recip)
			want := append(slices.Clone(before), reciprocalEntries(p.Sightings, own, day)...)
			if err := sc.reciprocal(p, day); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sc.recip, want) {
				t.Fatalf("trial %d: %d entries differ from the %d an upload derives", trial, len(sc.recip)-len(before), len(want)-len(before))
			}
			if len(sc.recip) > 2000 {
				sc.recip = sc.recip[:0]
			}
		}
	}
	// A sighting no key covers is refused, as by ownRPIs, and what the
	// batch held stays.
	held := slices.Clone(sc.recip)
	bad := contactlog.Report{Keys: []contactlog.DailyKey{{Start: first, Period: 10}}, Sightings: []contactlog.Sighting{{Interval: first + 1}, {Interval: first + 20}}}
	if err := sc.reciprocal(bad, day); err == nil || !slices.Equal(sc.recip, held) {
		t.Errorf("a sighting outside every key: %v, the batch went from %d entries to %d", err, len(held), len(sc.recip))
	}
}
