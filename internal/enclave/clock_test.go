package enclave

// The host owns the clock the enclave reads. These tests play a host that
// puts its clock back after a restart, or stops it, and check that nothing
// expired comes back and that time still moves when an authority's signed
// statement says it has.

import (
	"bytes"
	"context"
	"encoding/binary"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// Set puts the host's clock at t, which may be before its time.
func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// exportEnding returns an export of keys whose signed end is end.
func (s *gaenServer) exportEnding(end time.Time, keys ...gaen.Key) []byte {
	s.t.Helper()
	zip, err := gaen.Write(&gaen.Export{Region: "DE", Start: end.Add(-time.Hour), End: end, Keys: keys},
		gaen.SigningKey{KeyID: "262", KeyVersion: "v1", Key: s.key})
	if err != nil {
		s.t.Fatal(err)
	}
	return zip
}

// signResultAt has the lab sign a negative result for a new test, at
// issued.
func (v *env) signResultAt(issued time.Time) api.SignedResult {
	v.t.Helper()
	r, err := v.lab.SignResult(api.TestCode(newSecret()), api.Negative, issued.Add(-24*time.Hour), time.Time{}, issued)
	if err != nil {
		v.t.Fatal(err)
	}
	return r
}

// TestRewoundClockAfterRestart: the host restarts the backend with its
// clock put back, to before things expired. An upload authorization that
// expired stays expired, a signed result that was too old stays too old,
// and what retention deleted (imported keys, a trace) cannot be brought
// back by sending the same signed statements again: the enclave's clock
// starts at its sealed mark, not at the host's.
func TestRewoundClockAfterRestart(t *testing.T) {
	ctx := context.Background()
	// Three days on, the authorization a poll handed out has expired;
	// maintenance sealed the time, as the flushes do.
	w := newEnv(t)
	token := w.authorize()
	w.clock.Advance(3 * 24 * time.Hour)
	if err := w.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	w.flushDue(0)
	sealedAt := w.now()
	w.clock.Set(testStart.Add(time.Hour))
	w.restart()
	if got := w.e.now(); got.Before(sealedAt) {
		t.Errorf("after a restart with the host's clock put back, the enclave's clock says %s, before its sealed %s", got, sealedAt)
	}
	inf, _ := encounter(testStart, 10, 50) // valid at either time
	_, err := w.upload(token, inf)
	wantCode(t, "an upload authorization that had expired, after the host put its clock back", err, api.CodeExpired)

	srv, listKey := newGAENServer(t)
	v := newEnv(t, listKey)
	oldResult := v.signResultAt(v.now())
	k, _ := gaenKey(enid.IntervalOf(v.now().Add(-26 * time.Hour)))
	export := srv.exportEnding(v.now(), k)
	// ImportGAEN wipes the export it is given.
	if r, err := v.e.ImportGAEN(ctx, api.ImportRequest{Export: bytes.Clone(export)}); err != nil || r.Imported != 1 {
		t.Fatalf("import: %+v, %v", r, err)
	}
	trace := v.signTrace(walk(v.now().Add(-2*time.Hour), 10, 46.5, 6.5, 0.00001))
	if _, err := v.e.SubmitTrace(ctx, trace); err != nil {
		t.Fatal(err)
	}
	// Fifteen days on, maintenance deleted the import's and the trace's
	// days.
	v.clock.Advance(15 * 24 * time.Hour)
	if err := v.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	v.flushDue(0)
	if n := v.e.oneSided.Len(); n != 0 {
		t.Fatalf("set-up: %d imported identifiers after retention", n)
	}
	sealedAt = v.now()
	v.clock.Set(testStart.Add(time.Hour))
	v.restart()
	_, err = v.e.SubmitResult(ctx, oldResult)
	wantCode(t, "a result signed 15 days before, after the host put its clock back", err, api.CodeExpired)
	_, err = v.e.SubmitTrace(ctx, trace)
	wantCode(t, "a deleted trace submitted again after the host put its clock back", err, api.CodeExpired)
	r, err := v.e.ImportGAEN(ctx, api.ImportRequest{Export: bytes.Clone(export)})
	if err != nil || r.Imported != 0 || v.e.oneSided.Len() != 0 {
		t.Errorf("keys of deleted days imported again after the host put its clock back: %+v, %v, %d identifiers", r, err, v.e.oneSided.Len())
	}
	if days := v.e.gps.Days(); len(days) != 0 {
		t.Errorf("GPS index holds days %v after the host put its clock back", days)
	}
	first := utcDay(v.pol.WindowStart(sealedAt))
	if d := slices.Min(v.e.keys.Days()); d < first {
		t.Errorf("the enclave made a day key of day %s, deleted before the restart (window starts %s)", d, first)
	}
}

// TestStoppedClockMovedByStatements: the host stops its clock, but a
// signed statement dated later moves the enclave's clock to its date (a
// result, a trace, an imported export), and what is due then expires: an
// upload authorization, and a day that leaves the retention window.
func TestStoppedClockMovedByStatements(t *testing.T) {
	ctx := context.Background()
	srv, listKey := newGAENServer(t)
	v := newEnv(t, listKey)
	stopped := v.now()
	for _, tc := range []struct {
		name   string
		ahead  time.Duration
		submit func(time.Time) error
	}{
		{"a signed result", time.Minute, func(at time.Time) error {
			_, err := v.e.SubmitResult(ctx, v.signResultAt(at))
			return err
		}},
		{"a signed trace", 2 * time.Minute, func(at time.Time) error {
			s, err := v.lab.SignTrace(walk(stopped.Add(-time.Hour), 5, 46.5, 6.5, 0.00001), at)
			if err == nil {
				_, err = v.e.SubmitTrace(ctx, s)
			}
			return err
		}},
		{"a GAEN export", 3 * time.Minute, func(at time.Time) error {
			k, _ := gaenKey(enid.IntervalOf(stopped.Add(-time.Hour)))
			_, err := v.e.ImportGAEN(ctx, api.ImportRequest{Export: srv.exportEnding(at, k)})
			return err
		}},
	} {
		at := stopped.Add(tc.ahead)
		if err := tc.submit(at); err != nil {
			t.Fatalf("%s dated %s: %v", tc.name, at, err)
		}
		if got := v.e.now(); !got.Equal(at) {
			t.Errorf("after %s dated %s (host's clock stopped at %s) the enclave's clock says %s", tc.name, at, stopped, got)
		}
	}

	// An authorization valid for at most two minutes expires when a
	// statement says four have passed.
	w := newEnv(t, func(p *policy.Policy) { p.UploadAuthorizationSeconds = 60 })
	token := w.authorize()
	if _, err := w.e.SubmitResult(ctx, w.signResultAt(w.now().Add(4*time.Minute))); err != nil {
		t.Fatal(err)
	}
	inf, _ := encounter(w.now().Add(-time.Hour), 10, 50)
	_, err := w.upload(token, inf)
	wantCode(t, "an upload authorization after a statement dated past its expiry", err, api.CodeExpired)

	// The host's clock stops two minutes before midnight; the oldest
	// day of the window leaves it when a statement says midnight passed.
	x := newEnv(t, detailed)
	midnight := testStart.Truncate(24 * time.Hour).Add(24 * time.Hour)
	x.clock.Set(midnight.Add(-2 * time.Minute))
	oldest := x.pol.WindowStart(x.now()).Add(12 * time.Hour)
	a, b := newDevice(), newDevice()
	ab, ba := metAt(a, b, oldest, 2)
	x.mustUpload(a.report(ab...))
	contact := b.report(ba...)
	x.flushAll()
	if r := x.check(contact); !r.Exposed {
		t.Fatalf("set-up: not exposed by the oldest day of the window: %+v", r)
	}
	if _, err := x.e.SubmitResult(ctx, x.signResultAt(midnight.Add(2*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := x.e.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := x.recordsOf(utcDay(oldest)); len(rs) != 0 || x.e.index.Len() != 0 {
		t.Errorf("with the host's clock stopped, a statement dated past midnight did not expire the oldest day: %d records, %d index entries", len(rs), x.e.index.Len())
	}
}

// TestFutureStatementRefused: a statement dated more than five minutes
// after the enclave's clock is refused as future-dated, and does not move
// the clock: a misused authority key cannot have retention delete the
// window in one step.
func TestFutureStatementRefused(t *testing.T) {
	ctx := context.Background()
	srv, listKey := newGAENServer(t)
	v := newEnv(t, listKey)
	now := v.now()
	far := now.Add(5*time.Minute + time.Second)
	trace, err := v.lab.SignTrace(walk(now.Add(-time.Hour), 5, 46.5, 6.5, 0.00001), far)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := gaenKey(enid.IntervalOf(now.Add(-time.Hour)))
	_, err = v.e.SubmitResult(ctx, v.signResultAt(far))
	wantCode(t, "a result dated 5 minutes and a second ahead", err, api.CodeFutureDated)
	_, err = v.e.SubmitResult(ctx, v.signResultAt(now.Add(30*24*time.Hour)))
	wantCode(t, "a result dated 30 days ahead", err, api.CodeFutureDated)
	_, err = v.e.SubmitTrace(ctx, trace)
	wantCode(t, "a trace dated 5 minutes and a second ahead", err, api.CodeFutureDated)
	_, err = v.e.ImportGAEN(ctx, api.ImportRequest{Export: srv.exportEnding(far, k)})
	wantCode(t, "a GAEN export ending 5 minutes and a second ahead", err, api.CodeFutureDated)
	if got := v.e.now(); !got.Equal(now) {
		t.Errorf("refused statements moved the enclave's clock to %s", got)
	}
	if len(v.records(tableResults))+len(v.records(tableTraces))+len(v.records(tableGAENKeys)) != 0 || v.e.oneSided.Len() != 0 {
		t.Error("a future-dated statement was stored")
	}
}

// lagAttrs is all a log line of the host's clock's lag may say.
var lagAttrs = regexp.MustCompile(`^behind_seconds=[0-9]+$`)

// TestTimeMarkSurvivesRestart: the mark the flushes seal is where the
// enclave's clock starts after a restart; the host's clock being behind it
// is logged, once when the enclave starts and then at most once a flush,
// without anything a request caused.
func TestTimeMarkSurvivesRestart(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) {
		p.StoreFlushSeconds = 60
		p.StoreFlushRows = 1
	})
	v.flushDue(3 * 24 * time.Hour)
	sealed := v.now()
	v.logs.Reset()
	v.clock.Set(testStart)
	v.restart()
	if got := v.e.now(); !got.Equal(sealed) {
		t.Fatalf("after a restart with the host's clock 3 days back, the enclave's clock says %s, want its mark %s", got, sealed)
	}
	behind := func() int { return strings.Count(v.logs.String(), "host's clock is behind") }
	if n := behind(); n != 1 {
		t.Errorf("starting behind the mark logged %d times, want once:\n%s", n, v.logs)
	}
	for range 5 {
		v.flushDue(0) // no flush is due: the enclave's clock stands
	}
	if n := behind(); n != 1 {
		t.Errorf("with no flush made, the lag was logged %d times, want once", n)
	}
	// A statement moves the clock four flush periods on: the flushes are
	// made, and the lag is logged once more.
	if _, err := v.e.SubmitResult(context.Background(), v.signResultAt(sealed.Add(4*time.Minute))); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		v.flushDue(0)
	}
	if n := behind(); n != 2 {
		t.Errorf("after four flushes and three more checks, the lag was logged %d times, want twice", n)
	}
	// The line says how far behind, and nothing else.
	for _, l := range strings.Split(v.logs.String(), "\n") {
		if _, rest, ok := strings.Cut(l, `msg="the host's clock is behind`); ok {
			if _, attrs, _ := strings.Cut(rest, `" `); !lagAttrs.MatchString(attrs) {
				t.Errorf("the lag's log line says more than the lag: %s", l)
			}
		}
	}
}

// TestTimeMarkTampered: a mark the host changed, or one it brought from
// elsewhere (another backend's, sealed under another key-encryption key,
// or another sealed secret of this one moved into its place), is ignored
// and logged: the enclave starts from the host's clock, as with no mark,
// and does not take a time the host chose; the next flush seals a valid
// mark again.
func TestTimeMarkTampered(t *testing.T) {
	v := newEnv(t, detailed)
	inf, contact := v.exposedPair()
	v.mustUpload(inf)
	v.flushAll()
	v.flushDue(time.Hour)
	marks := v.records(tableClock)
	if len(marks) != 1 || marks[0].Day != store.NoDay {
		t.Fatalf("the store holds %d time marks, want one of no day: %+v", len(marks), marks)
	}
	mark := marks[0]

	// Another backend, a month ahead, seals its own mark.
	other := newEnv(t)
	other.clock.Advance(30 * 24 * time.Hour)
	if err := other.e.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	foreign := other.records(tableClock)
	if len(foreign) != 1 {
		t.Fatalf("the other backend holds %d time marks", len(foreign))
	}
	ahead := binary.BigEndian.AppendUint64(nil, uint64(testStart.Add(30*24*time.Hour).Unix()))
	moved, err := v.e.SealSecret("ohttp_keys/g1", ahead)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"changed", flip(mark.Value)},
		{"truncated", mark.Value[:len(mark.Value)-1]},
		{"another backend's", foreign[0].Value},
		{"another secret moved into its place", moved},
	} {
		v.logs.Reset()
		v.put(store.Record{Table: mark.Table, Key: mark.Key, Day: mark.Day, Value: tc.value})
		v.clock.Set(testStart)
		v.restart()
		if got := v.e.now(); !got.Equal(testStart) {
			t.Errorf("%s mark: the enclave's clock says %s, want the host's %s", tc.name, got, testStart)
		}
		if !strings.Contains(v.logs.String(), "time mark does not open") {
			t.Errorf("%s mark: not logged:\n%s", tc.name, v.logs)
		}
		if r := v.check(contact); !r.Exposed {
			t.Errorf("%s mark: the window's upload is gone", tc.name)
		}
	}
	// The next flush seals the time again.
	v.flushDue(time.Hour)
	v.clock.Set(testStart)
	v.restart()
	if got, want := v.e.now(), testStart.Add(time.Hour); !got.Equal(want) {
		t.Errorf("after a flush replaced the tampered mark: the enclave's clock says %s, want %s", got, want)
	}
}

// TestTimeMarkWrittenOnTheClock: the mark is one row of one size under
// one key, of no day, written only within the writes the clock makes
// anyway (every flush, every maintenance), never on its own: the host
// learns nothing from it that the flushes do not tell.
func TestTimeMarkWrittenOnTheClock(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	inf, _ := v.exposedPair()
	v.mustUpload(inf)
	var calls []storeCall
	calls = append(calls, v.hostSees(func() { v.flushDue(3 * v.flushEvery()) })...)
	calls = append(calls, v.hostSees(func() {
		if err := v.e.Expire(ctx); err != nil {
			t.Fatal(err)
		}
	})...)
	calls = append(calls, v.hostSees(func() {
		if err := v.e.FlushNow(ctx); err != nil {
			t.Fatal(err)
		}
	})...)
	size := -1
	for _, c := range calls {
		if c.op != "apply" {
			continue
		}
		var marks []store.Op
		for _, o := range c.ops {
			if o.Table == tableClock {
				marks = append(marks, o)
			}
		}
		if len(marks) != 1 || len(c.ops) == 1 {
			t.Fatalf("%s: %d time marks, want one beside the write's own rows", c, len(marks))
		}
		m := marks[0]
		if size < 0 {
			size = len(m.Value)
		}
		if own := markKeyOf(v.e.heads.id); string(m.Key) != string(own) || m.Day != store.NoDay || m.Delete || len(m.Value) != size {
			t.Errorf("%s: time mark %q of day %d, %d bytes; want %q of no day, %d bytes", c, m.Key, m.Day, len(m.Value), own, size)
		}
	}
	if size < 0 {
		t.Fatal("no write carried a time mark")
	}
}

// TestTrustedClock: the clock follows the host's forward, never back; a
// raise or a witnessed time holds until the host's clock passes it; a
// time more than maxAhead ahead is not witnessed and changes nothing.
// Under synctest the host's clock is time.Now, so every reading is exact.
func TestTrustedClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTrustedClock(nil)
		start := time.Now().Round(0)
		if got := c.now(); !got.Equal(start) {
			t.Fatalf("clock says %s, the host %s", got, start)
		}
		time.Sleep(time.Hour)
		if got := c.now(); !got.Equal(start.Add(time.Hour)) {
			t.Fatalf("an hour later the clock says %s", got)
		}
		c.raise(start.Add(3 * time.Hour))
		c.raise(start) // never back
		if got, behind := c.read(); !got.Equal(start.Add(3*time.Hour)) || behind != 2*time.Hour {
			t.Errorf("raised to +3h at +1h: %s, host behind by %s", got, behind)
		}
		if now, ok := c.witness(start.Add(3*time.Hour + maxAhead + time.Second)); ok || !now.Equal(start.Add(3*time.Hour)) {
			t.Errorf("a time a second past maxAhead: witnessed %v, clock %s", ok, now)
		}
		if now, ok := c.witness(start.Add(3*time.Hour + maxAhead)); !ok || !now.Equal(start.Add(3*time.Hour+maxAhead)) {
			t.Errorf("a time maxAhead ahead: witnessed %v, clock %s", ok, now)
		}
		if now, ok := c.witness(start); !ok || !now.Equal(start.Add(3*time.Hour+maxAhead)) {
			t.Errorf("an old time: witnessed %v, clock %s; want taken, the clock unmoved", ok, now)
		}
		time.Sleep(3 * time.Hour)
		if got, behind := c.read(); !got.Equal(start.Add(4*time.Hour)) || behind != 0 {
			t.Errorf("once the host's clock passed the raise: %s, behind %s", got, behind)
		}
	})

	host := testStart
	c := newTrustedClock(func() time.Time { return host })
	c.now()
	host = testStart.Add(-time.Hour)
	if got, behind := c.read(); !got.Equal(testStart) || behind != time.Hour {
		t.Errorf("the host put its clock back an hour: %s, behind %s", got, behind)
	}
}

// FuzzOpenTimeMark: a time mark from the store opens only if this
// enclave sealed it under its name; whatever else the host writes there
// is refused, without a panic.
func FuzzOpenTimeMark(f *testing.F) {
	v := newEnv(f)
	good, err := v.e.sealMark(testStart, 7)
	if err != nil {
		f.Fatal(err)
	}
	other, err := v.e.SealSecret("ohttp_keys/g1", make([]byte, markSize))
	if err != nil {
		f.Fatal(err)
	}
	long, err := v.e.SealSecret(markNameOf(v.e.heads.id), make([]byte, markSize+1))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{good, flip(good), good[:len(good)-1], other, long, nil, {secretVersion}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		at, _, n, err := v.e.openMark(markKeyOf(v.e.heads.id), b)
		if err == nil && (!at.Equal(testStart) || n != 7 || !bytes.Equal(b, good)) {
			t.Fatalf("%x opened as a time mark of %s", b, at)
		}
	})
}
