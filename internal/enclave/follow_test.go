package enclave

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store/postgres"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
	"github.com/conftrace/conftrace/policy"
)

// replica returns a second enclave over v's store, sealing key and clock,
// as a replica sharing the store would be, in an env of its own.
func (v *env) replica() *env {
	v.t.Helper()
	w := *v
	w.restart()
	return &w
}

// onPostgres moves v to a new PostgreSQL database (or skips the test
// without one) and opens its enclave there.
func onPostgres(v *env) {
	v.t.Helper()
	s, err := postgres.Open(v.t.Context(), pgtest.URL(v.t))
	if err != nil {
		v.t.Fatal(err)
	}
	v.t.Cleanup(func() { s.Close() })
	v.rec = &recorder{Store: s, clock: v.clock}
	v.restart()
}

func (v *env) catchUp() {
	v.t.Helper()
	if err := v.e.CatchUp(context.Background()); err != nil {
		v.t.Fatalf("CatchUp: %v", err)
	}
}

// stores are the stores the replica tests run on.
var stores = map[string]func(*env){"memstore": func(*env) {}, "postgres": onPostgres}

// TestReplicaFollowsUpload: an upload one replica made durable matches on
// another once it follows, its result says uploaded there, and its
// authorization is used there; nothing is applied twice, and what the
// second replica uploads reaches the first.
func TestReplicaFollowsUpload(t *testing.T) {
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			a := newEnv(t, detailed)
			open(a)
			b := a.replica()
			secret := newSecret()
			a.submit(secret, api.Positive)
			pr, err := a.poll(secret)
			if err != nil || len(pr.UploadAuthorization) == 0 {
				t.Fatalf("poll: %+v, %v", pr, err)
			}
			inf, contact := encounter(a.now().Add(-time.Hour), 10, 50)
			if _, err := a.upload(pr.UploadAuthorization, inf); err != nil {
				t.Fatal(err)
			}
			minutes := func(_ *env, c api.ExposureResponse) int { return dayOf(t, c, when(contact)).Minutes }
			b.catchUp()
			if got := minutes(b, b.check(contact)); got != 0 {
				t.Errorf("before the upload's flush the other replica finds %d minutes, want 0", got)
			}
			a.flushAll()
			b.catchUp()
			b.catchUp() // nothing new: nothing applied twice
			if got := minutes(b, b.check(contact)); got != 10 {
				t.Errorf("after the flush the other replica finds %d minutes of contact, want 10", got)
			}
			if got, err := b.poll(secret); err != nil || !got.Uploaded {
				t.Errorf("the other replica polls %+v, %v; want the result uploaded", got, err)
			}
			_, err = b.upload(pr.UploadAuthorization, inf)
			wantCode(t, "the authorization used on the other replica", err, api.CodeAlreadyUsed)

			inf2, contact2 := encounter(a.now().Add(-2*time.Hour), 7, 50)
			b.mustUpload(inf2)
			b.flushAll()
			a.catchUp()
			if got := dayOf(t, a.check(contact2), when(contact2)).Minutes; got != 7 {
				t.Errorf("the first replica finds %d minutes of the second's upload, want 7", got)
			}
			// Each replica's own upload, read back, is not applied again.
			b.catchUp()
			if got := minutes(b, b.check(contact)); got != 10 {
				t.Errorf("after more catch-ups the other replica finds %d minutes, want 10", got)
			}
			if got := dayOf(t, b.check(contact2), when(contact2)).Minutes; got != 7 {
				t.Errorf("a replica following its own upload finds %d minutes, want 7", got)
			}

			// A third replica rebuilds every replica's uploads at start:
			// their records are numbered apart.
			c := a.replica()
			if got := minutes(c, c.check(contact)); got != 10 {
				t.Errorf("a replica started later finds %d minutes of the first upload, want 10", got)
			}
			if got := dayOf(t, c.check(contact2), when(contact2)).Minutes; got != 7 {
				t.Errorf("a replica started later finds %d minutes of the second upload, want 7", got)
			}
		})
	}
}

// TestReplicaMatchesWithinASecond: with Follow running, an upload another
// replica made durable matches within a second.
func TestReplicaMatchesWithinASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newEnv(t, detailed)
		b := a.replica()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.e.Follow(ctx) })
		defer wg.Wait()
		defer cancel()

		inf, contact := encounter(a.now().Add(-time.Hour), 10, 50)
		a.mustUpload(inf)
		a.flushAll()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := dayOf(t, b.check(contact), when(contact)).Minutes; got != 10 {
			t.Errorf("a second after the flush the other replica finds %d minutes, want 10", got)
		}
	})
}

// TestReplicaStartFollowsFromRestore: a replica that starts applies the
// journal rows its restore read once, and those written after it started
// by following; a record of which the restore read only the first rows is
// completed by the rows that follow (the restore hands it to the follower
// with adoptPartial).
func TestReplicaStartFollowsFromRestore(t *testing.T) {
	one := func(p *policy.Policy) { p.StoreFlushRows, p.StoreFlushMaxRows, p.StoreFlushHold = 1, 0, 0 }
	a := newEnv(t, detailed, one)
	inf, contact := encounter(a.now().Add(-time.Hour), 10, 50)
	a.mustUpload(inf)
	a.flushDue(a.flushEvery())
	b := a.replica()
	a.flushAll()
	b.catchUp()
	if got := dayOf(t, b.check(contact), when(contact)).Minutes; got != 10 {
		t.Errorf("a replica started mid-flushes finds %d minutes, want 10", got)
	}
	// An upload of several rows, of which the replica read the first at
	// start: hand it over as a restore would.
	c := newDevice()
	inf2 := newDevice()
	at := a.now().Add(-3 * time.Hour)
	si, sc := meet(inf2, c, at, 10, 50)
	ss := []contactlog.Sighting{si}
	iv := enid.IntervalOf(at)
	for range journalChunk/contactlog.ReportSightingSize + 1 {
		ss = append(ss, inf2.hears(newDevice(), iv, iv, 5, 60))
	}
	a.mustUpload(inf2.report(ss...))
	a.flushDue(a.flushEvery())
	first := a.records(tableJournal)
	w := a.replica()
	var adopted bool
	for _, r := range first {
		row, err := w.e.openJournalRow(r)
		if err == nil && row.kind == journalUpload && row.count > 1 && row.index == 0 {
			data := make([][]byte, row.count)
			data[0] = row.data
			w.e.adoptPartial(row.seq, row.kind, row.day, row.id, data)
			adopted = true
		}
	}
	if !adopted {
		t.Fatal("test set-up: no record of several rows half written")
	}
	a.flushAll()
	w.catchUp()
	if got := dayOf(t, w.check(c.report(sc)), at).Minutes; got != 10 {
		t.Errorf("a record completed after the start finds %d minutes, want 10", got)
	}
}

// TestReplicasMakeOneDayKey: replicas that make the keys of new days at
// once, or one after the other, end with one key a day, the one stored,
// and each opens what the other sealed.
func TestReplicasMakeOneDayKey(t *testing.T) {
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			a := newEnv(t)
			open(a)
			b := a.replica()
			ctx := context.Background()
			for _, concurrent := range []bool{false, true} {
				a.clock.Advance(3 * 24 * time.Hour)
				var wg sync.WaitGroup
				for _, v := range []*env{a, b} {
					expire := func() {
						if err := v.e.Expire(ctx); err != nil {
							t.Errorf("Expire: %v", err)
						}
					}
					if concurrent {
						wg.Go(expire)
					} else {
						expire()
					}
				}
				wg.Wait()
				first, last := a.e.window(a.now())
				for d := first; d <= last+1; d++ {
					rec, err := a.rec.Get(ctx, tableDayKeys, dayKeyKey(d))
					if err != nil {
						t.Fatalf("day key of %s: %v", d, err)
					}
					for i, v := range []*env{a, b} {
						if held, err := v.e.keys.DayKey(d); err != nil || !bytes.Equal(held, rec.Value) {
							t.Errorf("concurrent %v: replica %d holds another key for %s than the store", concurrent, i, d)
						}
					}
				}
			}
			secret := newSecret()
			b.submit(secret, api.Positive)
			a.catchUp()
			if pr, err := a.poll(secret); err != nil || pr.Result != api.Positive {
				t.Errorf("a result the other replica stored polls %+v, %v", pr, err)
			}
			c := a.replica()
			if pr, err := c.poll(secret); err != nil || pr.Result != api.Positive {
				t.Errorf("after a start, the result polls %+v, %v", pr, err)
			}
		})
	}
}

// TestReplicasExpire: replicas expiring at once both succeed and delete
// the day; one that finds the day deleted by the other drops it from its
// indexes all the same.
func TestReplicasExpire(t *testing.T) {
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			a := newEnv(t, detailed)
			open(a)
			b := a.replica()
			ctx := context.Background()
			old := a.now().Add(-3 * 24 * time.Hour)
			inf, contact := encounter(old, 10, 50)
			a.mustUpload(inf)
			a.flushAll()
			b.catchUp()
			if got := dayOf(t, b.check(contact), old).Minutes; got != 10 {
				t.Fatalf("set-up: the other replica finds %d minutes, want 10", got)
			}
			oldDay := calendar.DayOf(old)
			a.clock.Advance(time.Duration(a.pol.RetentionDays-2) * 24 * time.Hour)
			var wg sync.WaitGroup
			for _, v := range []*env{a, b} {
				wg.Go(func() {
					if err := v.e.Expire(ctx); err != nil {
						t.Errorf("Expire: %v", err)
					}
				})
			}
			wg.Wait()
			days, err := a.rec.Days(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range days {
				if d <= oldDay {
					t.Errorf("day %s is still in the store", d)
				}
			}
			for i, v := range []*env{a, b} {
				if got := minutes(v.check(contact)); got != 0 {
					t.Errorf("replica %d still finds %d minutes of an expired day", i, got)
				}
			}

			// One replica deletes the next day; the other, expiring
			// later, finds it gone from the store and drops it from its
			// indexes too.
			inf2, _ := encounter(a.now().Add(-time.Hour), 10, 50)
			a.mustUpload(inf2)
			a.flushAll()
			b.catchUp()
			a.clock.Advance(time.Duration(a.pol.RetentionDays+1) * 24 * time.Hour)
			if err := a.e.Expire(ctx); err != nil {
				t.Fatal(err)
			}
			if n := b.e.index.Len(); n == 0 {
				t.Fatal("set-up: the other replica did not index the upload")
			}
			if err := b.e.Expire(ctx); err != nil {
				t.Fatal(err)
			}
			if n := b.e.index.Len(); n != 0 {
				t.Errorf("a replica whose days another deleted still indexes %d entries after its Expire", n)
			}
		})
	}
}
