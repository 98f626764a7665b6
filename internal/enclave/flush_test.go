package enclave

// The flush pipeline (flush.go): what the host sees of flushes that grow,
// and that exchanges never wait for a commit.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// fixedFlushes is a policy edit for flushes of one size, rows rows.
func fixedFlushes(rows int) func(*policy.Policy) {
	return func(p *policy.Policy) {
		p.StoreFlushRows, p.StoreFlushMaxRows, p.StoreFlushHold = rows, 0, 0
	}
}

// growingFlushes is a policy edit for flushes of rows rows that may grow
// to most, a size kept for hold flushes.
func growingFlushes(rows, most, hold int) func(*policy.Policy) {
	return func(p *policy.Policy) {
		p.StoreFlushRows, p.StoreFlushMaxRows, p.StoreFlushHold = rows, most, hold
	}
}

// uploadDays has a new positive phone exchange, polling its result and
// uploading a report of one sighting on each of days days (today and
// before): days parts and the mark, a journal row each.
func (v *env) uploadDays(days int) (secret []byte, contacts []contactlog.Report) {
	v.t.Helper()
	inf := newDevice()
	var ss []contactlog.Sighting
	for d := range days {
		c := newDevice()
		s, m := meet(inf, c, v.now().Add(-time.Duration(d)*24*time.Hour-time.Hour), 10, 50)
		ss = append(ss, s)
		contacts = append(contacts, c.report(m))
	}
	secret = newSecret()
	v.submit(secret, api.Positive)
	if r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, inf.report(ss...)); err != nil || r.Upload == nil {
		v.t.Fatalf("upload of %d days: %+v, %v", days, r, err)
	}
	return secret, contacts
}

// flushSizes returns, for each flush in calls, how many journal rows it
// wrote, and fails unless each is one batch of rows that look alike (the
// journal's table, 16-byte keys, StoreRowBytes) and the time mark, with
// one check: that the run's mark is the one it wrote last (head.go).
func flushSizes(t *testing.T, calls []storeCall) []int {
	t.Helper()
	var sizes []int
	for i, c := range calls {
		if c.op != "apply" || c.checks != 1 || len(c.ops) < 2 {
			t.Fatalf("flush %d: %s, want one batch of rows and the time mark", i+1, c)
		}
		rows := c.ops[:len(c.ops)-1]
		if m := c.ops[len(c.ops)-1]; m.Table != tableClock || m.Delete {
			t.Fatalf("flush %d ends with a write to %s, want the time mark", i+1, m.Table)
		}
		for _, o := range rows {
			if o.Table != tableJournal || len(o.Key) != 16 || len(o.Value) != policy.StoreRowBytes || o.Delete || o.Day != rows[0].Day {
				t.Fatalf("flush %d writes a row unlike the others: %s, %d-byte key, %d-byte value, day %s", i+1, o.Table, len(o.Key), len(o.Value), o.Day)
			}
		}
		sizes = append(sizes, len(rows))
	}
	return sizes
}

// TestOneUploadBelowTheFloor: under a policy whose flushes may grow, an
// upload that makes fewer than twice store_flush_rows rows wait (here one
// of two rows, one that fills the floor exactly, and one of F+2 rows that
// takes two flushes) changes nothing the host sees of the flushes: their
// times, sizes, tables, keys and days are those of flushes with nothing
// to write.
func TestOneUploadBelowTheFloor(t *testing.T) {
	const floor = 4
	run := func(days int) []flushShape {
		v := newEnv(t, growingFlushes(floor, 8*floor, 3))
		var secret []byte
		if days > 0 {
			secret, _ = v.uploadDays(days)
		}
		calls := v.hostSees(func() {
			for range 6 {
				v.flushDue(v.flushEvery())
			}
		})
		if sizes := flushSizes(t, calls); slices.ContainsFunc(sizes, func(n int) bool { return n != floor }) {
			t.Errorf("with an upload of %d rows waiting the flushes wrote %v rows, want %d each", days+1, sizes, floor)
		}
		if secret != nil {
			if pr, err := v.poll(secret); err != nil || !pr.Uploaded {
				t.Errorf("the upload of %d rows after the flushes: %+v, %v; want it written", days+1, pr, err)
			}
		}
		var shape []flushShape
		for _, c := range calls {
			for _, o := range c.ops {
				shape = append(shape, flushShape{c.at, c.op, c.checks, o.Table, len(o.Key), o.Day, len(o.Value), o.Delete})
			}
		}
		return shape
	}
	none := run(0)
	for _, days := range []int{1, floor - 1, floor + 1} {
		if got := run(days); !slices.Equal(got, none) {
			t.Errorf("an upload of %d rows changes what the host sees of the flushes:\n%+v\nwithout:\n%+v", days+1, got, none)
		}
	}
}

// TestBurstGrowsFlushesInClasses: a burst of uploads of more than twice
// store_flush_rows is written by flushes of store_flush_rows times a power
// of two, the largest that what waits fills, up to store_flush_max_rows,
// the rest waiting for the next flush; a size is kept for
// store_flush_hold flushes before it steps down, as the needs of the last
// flushes allow, back to the floor. The burst is durable within two
// flushes, where flushes of one size would take ten.
func TestBurstGrowsFlushesInClasses(t *testing.T) {
	const floor, most, hold = 4, 64, 2
	v := newEnv(t, detailed, growingFlushes(floor, most, hold))
	// Ten uploads of three days: 40 rows.
	var secrets [][]byte
	var contacts []contactlog.Report
	for range 10 {
		s, c := v.uploadDays(3)
		secrets, contacts = append(secrets, s), append(contacts, c...)
	}
	last, err := v.poll(secrets[9])
	if err != nil || !last.UploadPending {
		t.Fatalf("poll of the last upload: %+v, %v", last, err)
	}
	calls := v.hostSees(func() {
		for range 6 {
			v.flushDue(v.flushEvery())
		}
	})
	// 40 rows wait: they fill 32 (not 64); 8 wait, but the first flush's
	// size is held; nothing waits, but the second needed 8; the floor.
	want := []int{32, 32, 8, 4, 4, 4}
	if got := flushSizes(t, calls); !slices.Equal(got, want) {
		t.Fatalf("a burst of 40 rows was written in flushes of %v rows, want %v", got, want)
	}
	for i, s := range secrets {
		if pr, err := v.poll(s); err != nil || !pr.Uploaded {
			t.Errorf("upload %d after the flushes: %+v, %v; want it written", i, pr, err)
		}
	}
	v.restart()
	for i, c := range contacts {
		if r := v.check(c); dayOf(t, r, when(c)).Minutes != 10 {
			t.Errorf("contact %d of the burst does not match after a restart", i)
		}
	}
}

// TestBurstDurableBy: each upload's answer says by which flush it will be
// written if every flush is as large as the policy allows, and the
// flushes keep that word.
func TestBurstDurableBy(t *testing.T) {
	const floor, most = 2, 8
	v := newEnv(t, growingFlushes(floor, most, 1))
	next, every := v.nextFlush(), v.flushEvery()
	var answers []int64
	var secrets [][]byte
	for range 5 { // four rows each: 20 rows, three flushes of eight
		inf := newDevice()
		var ss []contactlog.Sighting
		for d := range 3 {
			s, _ := meet(inf, newDevice(), v.now().Add(-time.Duration(d)*24*time.Hour-time.Hour), 10, 50)
			ss = append(ss, s)
		}
		secret := newSecret()
		v.submit(secret, api.Positive)
		r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, inf.report(ss...))
		if err != nil || r.Upload == nil {
			t.Fatalf("upload: %+v, %v", r, err)
		}
		answers, secrets = append(answers, r.Upload.DurableBy), append(secrets, secret)
	}
	// Rows 1-8 in the first flush, 9-16 in the second, 17-20 in the
	// third; a time said is the last second before the flush is due.
	at := func(k int) int64 { return next.Add(time.Duration(k)*every + time.Second - 1).Unix() }
	want := []int64{at(0), at(0), at(1), at(1), at(2)}
	if !slices.Equal(answers, want) {
		t.Errorf("the uploads were told durable by %v, want %v", answers, want)
	}
	for k := range 3 {
		v.flushDue(v.nextFlush().Sub(v.now()))
		for i, s := range secrets {
			pr, err := v.poll(s)
			if err != nil {
				t.Fatal(err)
			}
			if due := answers[i] <= v.now().Unix(); pr.Uploaded != due {
				t.Errorf("after flush %d, upload %d (said durable by %d, now %d): uploaded %v", k+1, i, answers[i], v.now().Unix(), pr.Uploaded)
			}
		}
	}
}

// gateStore holds the next Apply, once armed, until the test releases it:
// a commit whose fsync takes as long as the test likes.
type gateStore struct {
	store.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newGateStore(s store.Store) *gateStore {
	return &gateStore{Store: s, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateStore) Apply(ctx context.Context, b *store.Batch) error {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Store.Apply(ctx, b)
}

// TestExchangesDoNotWaitForACommit: while a flush's commit is in the
// store (its fsync, as slow as the test likes), the enclave's mutex is
// free: an exchange that polls and uploads, a check and polls are answered
// meanwhile. What the committing flush writes is not said durable before
// its commit returns; an upload taken meanwhile goes to the next flush,
// and its answer says so.
func TestExchangesDoNotWaitForACommit(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, detailed)
	gate := newGateStore(v.rec.Store)
	v.rec.Store = gate
	v.restart()
	first, contacts1 := v.uploadDays(1)
	second := newSecret()
	v.submit(second, api.Positive)

	v.clock.Advance(v.nextFlush().Sub(v.now()))
	committing := v.nextFlush()
	gate.armed.Store(true)
	flushed := make(chan error, 1)
	go func() { flushed <- v.e.FlushDue(ctx) }()
	<-gate.entered
	if !v.e.mu.TryLock() {
		close(gate.release)
		<-flushed
		t.Fatal("the enclave's mutex is held while a flush commits: every exchange waits for the fsync")
	}
	v.e.mu.Unlock()

	inf, contact := encounter(v.now().Add(-2*time.Hour), 10, 50)
	r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, second, nil, inf)
	if err != nil || r.Upload == nil || r.Result == nil || !r.Result.UploadPending {
		t.Fatalf("exchange that polls and uploads during a commit: %+v, %v", r, err)
	}
	if want := committing.Add(v.flushEvery()).Add(time.Second - 1).Unix(); r.Upload.DurableBy != want {
		t.Errorf("an upload taken during a commit is told durable by %d, want the next flush, %d", r.Upload.DurableBy, want)
	}
	if pr, err := v.poll(first); err != nil || !pr.UploadPending {
		t.Errorf("poll of the upload being committed: %+v, %v; want pending until the commit returns", pr, err)
	}
	if c := contacts1[0]; dayOf(t, v.check(c), when(c)).Minutes != 10 {
		t.Error("a check during a commit does not see the upload being committed")
	}
	close(gate.release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if pr, err := v.poll(first); err != nil || !pr.Uploaded {
		t.Errorf("poll once the commit returned: %+v, %v; want uploaded", pr, err)
	}
	if pr, err := v.poll(second); err != nil || !pr.UploadPending {
		t.Errorf("poll of the upload taken during the commit: %+v, %v; want pending", pr, err)
	}
	v.flushDue(v.flushEvery())
	if pr, err := v.poll(second); err != nil || !pr.Uploaded {
		t.Errorf("poll after the next flush: %+v, %v; want uploaded", pr, err)
	}
	v.restart()
	for i, c := range []contactlog.Report{contacts1[0], contact} {
		if dayOf(t, v.check(c), when(c)).Minutes != 10 {
			t.Errorf("upload %d is lost by a restart", i+1)
		}
	}
}

// TestFlushesAlongsideExchangesAndExpiry: phones upload while flushes and
// retention run on another goroutine; every upload is written whole, once,
// and (under the race detector) nothing races.
func TestFlushesAlongsideExchangesAndExpiry(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, growingFlushes(2, 16, 2), func(p *policy.Policy) { p.StoreFlushSeconds = 60 })
	const phones = 16
	var secrets [][]byte
	var reports []contactlog.Report
	records := 0
	for i := range phones {
		inf := newDevice()
		var ss []contactlog.Sighting
		for d := range 1 + i%3 {
			s, _ := meet(inf, newDevice(), v.now().Add(-time.Duration(d)*24*time.Hour-time.Hour), 10, 50)
			ss = append(ss, s)
		}
		records += len(ss) + 1 // a part a day, and the mark
		secret := newSecret()
		v.submit(secret, api.Positive)
		secrets, reports = append(secrets, secret), append(reports, inf.report(ss...))
	}
	var uploads sync.WaitGroup
	for i := range phones {
		uploads.Go(func() {
			if r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secrets[i], nil, reports[i]); err != nil || r.Upload == nil {
				t.Errorf("phone %d: %+v, %v", i, r, err)
			}
		})
	}
	var flushes sync.WaitGroup
	flushes.Go(func() {
		for range 20 {
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
	for i, s := range secrets {
		if pr, err := v.poll(s); err != nil || !pr.Uploaded {
			t.Errorf("phone %d after the flushes: %+v, %v; want uploaded", i, pr, err)
		}
	}
	v.logs.Reset()
	v.restart()
	logs := v.logs.String()
	for _, want := range []string{fmt.Sprintf("records=%d ", records), "incomplete_records=0", "refused_rows=0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the restart after concurrent flushes does not report %q:\n%s", want, logs)
		}
	}
}
