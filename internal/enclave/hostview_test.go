package enclave

// What the host sees. It sees every call the enclave makes to the store,
// every byte written and when: none of it may tell which phone polled a
// positive result, uploaded, or was exposed. Polls and checks touch no
// store; uploads wait in the journal, which flushes on the clock rows of
// one size, as many whatever there is to write.

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// TestPollsAndChecksTouchNoStore: a result poll (a positive result's
// first, again, a period later, negative, pending, refused), an exposure
// check, a trace check and an exchange that checks and polls read nothing
// from the store and write nothing to it.
func TestPollsAndChecksTouchNoStore(t *testing.T) {
	v := newEnv(t, detailed)
	ctx := context.Background()
	positive, negative, pending := newSecret(), newSecret(), newSecret()
	v.submit(positive, api.Positive)
	v.submit(negative, api.Negative)
	inf, c := newDevice(), newDevice()
	ic, ci := metAt(inf, c, v.now().Add(-time.Hour), 2)
	v.mustUpload(inf.report(ic...))
	contact := c.report(ci...)
	v.flushAll()
	startAt := v.now().Add(-2 * time.Hour).Truncate(time.Minute)
	v.submitTrace(walk(startAt, 30, 46.5, 6.5, 0.00001))
	phone := walk(startAt, 30, 46.5+metersNorth(3), 6.5, 0.00001)

	poll := func(secret []byte, want api.Result) func() error {
		return func() error {
			pr, err := v.poll(secret)
			if err == nil && pr.Result != want {
				err = errors.New("poll answered " + string(pr.Result))
			}
			return err
		}
	}
	exchange := func(flags byte, secret []byte) func() error {
		return func() error {
			r, err := v.exchange(flags, secret, nil, contact)
			if err == nil && (!r.Exposure.Exposed || (flags&api.ExchangePoll != 0) != (r.Result != nil)) {
				err = errors.New("exchange answered wrong")
			}
			return err
		}
	}
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{"the first poll of a positive result", poll(positive, api.Positive)},
		{"the same poll again", poll(positive, api.Positive)},
		{"a poll of a negative result", poll(negative, api.Negative)},
		{"a poll of a pending test", poll(pending, api.Pending)},
		{"a refused poll", func() error {
			if _, err := v.poll(positive[:5]); err == nil {
				return errors.New("a malformed secret was answered")
			}
			return nil
		}},
		{"an exposure check", func() error {
			if r := v.check(contact); !r.Exposed {
				return errors.New("not exposed")
			}
			return nil
		}},
		{"a trace check", func() error {
			if r := v.checkTrace(phone); !r.Exposed {
				return errors.New("not exposed")
			}
			return nil
		}},
		{"an exchange that checks", exchange(0, nil)},
		{"an exchange that checks and polls a positive result", exchange(api.ExchangePoll, positive)},
		{"an exchange that checks and polls a pending test", exchange(api.ExchangePoll, pending)},
		{"a refused exchange", func() error {
			_, err := v.e.Exchange(ctx, api.ExchangeRequest{Flags: api.ExchangePoll, Secret: make([]byte, 3), Report: encode(t, contact)})
			if err == nil {
				return errors.New("a malformed secret was answered")
			}
			return nil
		}},
		{"a poll in the next period", func() error {
			v.clock.Advance(v.pol.UploadAuthorizationTTL())
			return poll(positive, api.Positive)()
		}},
	} {
		var err error
		if calls := v.hostSees(func() { err = tc.f() }); len(calls) != 0 {
			t.Errorf("%s: the host sees %d store calls: %+v", tc.name, len(calls), calls)
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestUploadsTouchNoStore: an upload, with an authorization or under the
// result its exchange polls, and an upload refused in an exchange, make no
// store call when they happen; the journal writes them with the next flush
// due on the clock, not before, and nothing else writes.
func TestUploadsTouchNoStore(t *testing.T) {
	v := newEnv(t)
	token := v.authorize()
	polled, used := newSecret(), v.authorize()
	v.submit(polled, api.Positive)
	first, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	if _, err := v.upload(used, first); err != nil {
		t.Fatal(err)
	}
	v.flushAll()

	calls := v.hostSees(func() {
		a, _ := encounter(v.now().Add(-time.Hour), 10, 50)
		if _, err := v.upload(token, a); err != nil {
			t.Errorf("upload: %v", err)
		}
		b, _ := encounter(v.now().Add(-2*time.Hour), 10, 50)
		if r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, polled, nil, b); err != nil || r.Upload == nil || !r.Result.UploadPending {
			t.Errorf("exchange that checks, polls and uploads: %+v, %v", r, err)
		}
		c, _ := encounter(v.now().Add(-3*time.Hour), 10, 50)
		if r, err := v.exchange(api.ExchangeUpload, nil, used, c); err != nil || r.UploadError == nil {
			t.Errorf("exchange with a used authorization: %+v, %v", r, err)
		}
	})
	if len(calls) != 0 {
		t.Fatalf("uploads made %d store calls when they happened: %+v", len(calls), calls)
	}
	next := v.nextFlush()
	calls = v.hostSees(func() { v.flushDue(next.Sub(v.now()) - time.Second) })
	if len(calls) != 0 {
		t.Fatalf("a second before the next flush is due, the host sees %d store calls", len(calls))
	}
	calls = v.hostSees(func() { v.flushDue(time.Second) })
	if len(calls) != 1 || calls[0].op != "apply" || len(calls[0].ops) != v.pol.StoreFlushRows+1 || !calls[0].at.Equal(next) {
		t.Fatalf("at the flush the host sees %+v; want one write of %d rows and the time mark at %s", calls, v.pol.StoreFlushRows, next)
	}
	if n := v.pendingRecords(); n != 0 {
		t.Errorf("%d records wait after the flush", n)
	}
}

// flushShape is what the host sees of one flush's row.
type flushShape struct {
	at       time.Time
	op       string
	checks   int
	table    string
	keyLen   int
	day      calendar.Day
	valueLen int
	delete   bool
}

// TestFlushShape: under a policy of one flush size, every flush writes, at
// its time on the clock, exactly the policy's number of rows of
// StoreRowBytes to the journal table, under random 16-byte keys and the day
// after the flush's, and the time mark (clock.go), and nothing else;
// whether no upload, one or many (some spanning several days, more than a
// flush holds) are waiting, the host sees the very same writes.
func TestFlushShape(t *testing.T) {
	const rows = 4
	run := func(uploads int) (shape []flushShape, keys [][]byte) {
		v := newEnv(t, bothRules, fixedFlushes(rows))
		var secrets [][]byte
		for i := range uploads {
			inf := newDevice()
			var ss []contactlog.Sighting
			for d := range 1 + 2*(i%2) { // one day, or three
				s, _ := meet(inf, newDevice(), v.now().Add(-time.Duration(d)*24*time.Hour-time.Hour), 10, 50)
				ss = append(ss, s)
			}
			secret := newSecret()
			v.submit(secret, api.Positive)
			secrets = append(secrets, secret)
			if r, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, inf.report(ss...)); err != nil || r.Upload == nil {
				t.Fatalf("upload %d: %+v, %v", i, r, err)
			}
		}
		// Twelve hours of flushes, across midnight.
		calls := v.hostSees(func() {
			for range 12 {
				v.flushDue(v.flushEvery())
			}
		})
		for _, c := range calls {
			if c.op != "apply" {
				shape = append(shape, flushShape{at: c.at, op: c.op})
				continue
			}
			for _, o := range c.ops {
				shape = append(shape, flushShape{c.at, c.op, c.checks, o.Table, len(o.Key), o.Day, len(o.Value), o.Delete})
				if o.Table == tableJournal {
					keys = append(keys, o.Key)
				}
			}
		}
		for i, s := range secrets {
			if pr, err := v.poll(s); err != nil || !pr.Uploaded {
				t.Errorf("upload %d of %d after the flushes: %+v, %v; want written", i, uploads, pr, err)
			}
		}
		return shape, keys
	}
	none, keys := run(0)
	if len(none) != 12*(rows+1) {
		t.Fatalf("12 flushes wrote %d rows, want %d and 12 time marks", len(none), 12*rows)
	}
	days := map[calendar.Day]bool{}
	for i, s := range none {
		at := testStart.Add(time.Duration(i/(rows+1)+1) * time.Hour)
		// One check: the run's time mark is the one it wrote last (head.go).
		want := flushShape{at: at, op: "apply", checks: 1, table: tableJournal, keyLen: 16, day: utcDay(at) + 1, valueLen: policy.StoreRowBytes}
		if i%(rows+1) == rows {
			want = flushShape{at: at, op: "apply", checks: 1, table: tableClock, keyLen: len(markKeyOf(HeadID{})), day: store.NoDay, valueLen: secretOverhead + markSize}
		}
		if s != want {
			t.Fatalf("row %d of the flushes: %+v, want %+v", i, s, want)
		}
		if s.table == tableJournal {
			days[s.day] = true
		}
	}
	if len(days) != 2 {
		t.Fatalf("the flushes were stored under %d days, want 2 (they cross midnight)", len(days))
	}
	for _, uploads := range []int{1, 7} {
		shape, more := run(uploads)
		if !reflect.DeepEqual(shape, none) {
			t.Errorf("with %d uploads waiting the host sees other writes:\n%+v\nwithout:\n%+v", uploads, shape, none)
		}
		keys = append(keys, more...)
	}
	// Random keys: no two alike, and no common prefix that would order
	// rows by when they were written.
	seen := map[string]bool{}
	firstBytes := map[byte]bool{}
	for _, k := range keys {
		if seen[string(k)] {
			t.Fatalf("two rows have the key %x", k)
		}
		seen[string(k)] = true
		firstBytes[k[0]] = true
	}
	if len(firstBytes) < 64 {
		t.Errorf("row keys start with only %d distinct bytes in %d keys: not random", len(firstBytes), len(keys))
	}
}

// TestFlushCatchUp: when the clock jumped, FlushDue makes every flush it
// missed, each dated by its own time, and the schedule goes on from the
// last; after a jump of more than maxCatchUp periods it makes that many
// and resumes from now; and after a jump past the retention window, the
// flushes of days already gone are skipped rather than fail forever.
func TestFlushCatchUp(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, func(p *policy.Policy) {
		p.StoreFlushRows = 1
		p.StoreFlushSeconds = 600
	})
	calls := v.hostSees(func() { v.flushDue(12 * time.Hour) })
	if len(calls) != 72 {
		t.Fatalf("a jump of 12 hours made %d writes, want the 72 flushes it missed", len(calls))
	}
	for i, c := range calls {
		at := testStart.Add(time.Duration(i+1) * v.flushEvery())
		// Rows are stored under the day after their flush's; the time
		// mark under no day.
		if len(c.ops) != 2 || c.ops[0].Day != utcDay(at)+1 || c.ops[1].Table != tableClock {
			t.Fatalf("flush %d: %d ops of day %s, want one row of day %s and the time mark", i, len(c.ops), c.ops[0].Day, utcDay(at)+1)
		}
	}
	if want := testStart.Add(73 * v.flushEvery()); !v.nextFlush().Equal(want) {
		t.Errorf("next flush due at %s, want %s", v.nextFlush(), want)
	}

	// Eleven days: more than maxCatchUp periods of ten minutes.
	v.clock.Advance(11 * 24 * time.Hour)
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	calls = v.hostSees(func() { v.flushDue(0) })
	if len(calls) != maxCatchUp {
		t.Errorf("a jump of 11 days made %d flushes, want at most %d", len(calls), maxCatchUp)
	}
	if want := v.now().Add(v.flushEvery()); !v.nextFlush().Equal(want) {
		t.Errorf("after a long jump the next flush is due at %s, want a period from now, %s", v.nextFlush(), want)
	}

	// Twenty days, at hourly flushes: the first flushes missed would be
	// of days that have left the window, whose keys Expire destroyed.
	w := newEnv(t, func(p *policy.Policy) { p.StoreFlushRows = 1 })
	w.clock.Advance(20 * 24 * time.Hour)
	if err := w.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	first := utcDay(w.pol.WindowStart(w.now()))
	calls = w.hostSees(func() {
		if err := w.e.FlushDue(ctx); err != nil {
			t.Fatalf("FlushDue after a jump past the window: %v", err)
		}
	})
	for _, c := range calls {
		for _, o := range c.ops {
			if o.Day < first && o.Table != tableClock {
				t.Fatalf("a flush wrote a row of day %s, before the window (%s)", o.Day, first)
			}
		}
	}
	if len(calls) == 0 || !w.nextFlush().After(w.now()) {
		t.Errorf("after a jump past the window: %d flushes, next due %s", len(calls), w.nextFlush())
	}
	inf, _ := encounter(w.now().Add(-time.Hour), 10, 50)
	w.mustUpload(inf)
	w.flushDue(2 * w.flushEvery()) // its part and its mark, a row each
	if n := w.pendingRecords(); n != 0 {
		t.Errorf("%d records wait after the next two flushes", n)
	}
}

// TestFlushNow: the flush made when the backend stops writes one flush of
// the usual shape, whether anything waits or not, so that stopping tells
// the host nothing; what it wrote survives the restart.
func TestFlushNow(t *testing.T) {
	ctx := context.Background()
	var shapes [2][]flushShape
	for uploads := range 2 {
		v := newEnv(t, detailed)
		inf, contact := v.exposedPair()
		if uploads > 0 {
			v.mustUpload(inf)
		}
		calls := v.hostSees(func() {
			if err := v.e.FlushNow(ctx); err != nil {
				t.Fatal(err)
			}
		})
		for _, c := range calls {
			for _, o := range c.ops {
				shapes[uploads] = append(shapes[uploads], flushShape{c.at, c.op, c.checks, o.Table, len(o.Key), o.Day, len(o.Value), o.Delete})
			}
		}
		if len(calls) != 1 || len(shapes[uploads]) != v.pol.StoreFlushRows+1 {
			t.Fatalf("with %d uploads waiting FlushNow made %v", uploads, calls)
		}
		v.restart()
		if r := v.check(contact); r.Exposed != (uploads > 0) {
			t.Errorf("with %d uploads waiting, after FlushNow and a restart: exposed %v", uploads, r.Exposed)
		}
	}
	if !reflect.DeepEqual(shapes[0], shapes[1]) {
		t.Errorf("FlushNow with an upload waiting writes %+v, with none %+v", shapes[1], shapes[0])
	}
}
