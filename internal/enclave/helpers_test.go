package enclave

// The enclave's tests run over memstore, with a clock they move by hand, a
// sealing key and one health authority, so that every rule of the trusted
// logic can be checked directly and in milliseconds. The same flows are
// covered end to end, through OHTTP and SQLite, in internal/service.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/memstore"
	"github.com/conftrace/conftrace/policy"
)

// testStart is the tests' "now": mid-afternoon UTC, so that an hour either
// way stays on the same day and window edges fall where the tests expect.
var testStart = time.Date(2026, 3, 10, 14, 23, 0, 0, time.UTC)

// allTables lists every table the enclave writes, so that tests can look
// at everything the untrusted host sees.
var allTables = []string{tableKEK, tableDayKeys, tableResults, tableJournal, tableTraces, tableTraceSeen, tableGAENImports, tableGAENKeys, tableClock}

// testClock is a time source the test moves; the enclave reads it
// through Config.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// logBuffer collects the enclave's logs for tests that check what it
// reports (and what it must not).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Reset()
}

// faultStore is a store whose operations the test can make fail, as an
// unavailable database would.
type faultStore struct {
	store.Store
	mu      sync.Mutex
	failing faults
}

// faults says which store operations fail.
type faults struct {
	apply bool            // Apply and DeleteDay
	days  bool            // Days
	scans map[string]bool // Scan, by table
}

var errInjected = errors.New("injected store failure")

// set makes the operations of f fail from now on, and the others work.
func (s *faultStore) set(f faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = f
}

func (s *faultStore) fails(what func(faults) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return what(s.failing)
}

func (s *faultStore) Apply(ctx context.Context, b *store.Batch) error {
	if s.fails(func(f faults) bool { return f.apply }) {
		return errInjected
	}
	return s.Store.Apply(ctx, b)
}

func (s *faultStore) DeleteDay(ctx context.Context, d calendar.Day) (int64, error) {
	if s.fails(func(f faults) bool { return f.apply }) {
		return 0, errInjected
	}
	return s.Store.DeleteDay(ctx, d)
}

func (s *faultStore) Days(ctx context.Context) ([]calendar.Day, error) {
	if s.fails(func(f faults) bool { return f.days }) {
		return nil, errInjected
	}
	return s.Store.Days(ctx)
}

func (s *faultStore) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if s.fails(func(f faults) bool { return f.scans[table] }) {
		return errInjected
	}
	return s.Store.Scan(ctx, table, fn)
}

// recorder is the host's view of the enclave's use of its store: every
// call, with the enclave's clock when it was made, so that tests can check
// what the host learns from reads and writes and from their timing.
type recorder struct {
	store.Store
	clock *testClock
	mu    sync.Mutex
	calls []storeCall
}

// storeCall is one call the enclave made to its store.
type storeCall struct {
	at     time.Time
	op     string // get, scan, apply, delete_day or days
	table  string // of a get or a scan
	ops    []store.Op
	checks int
}

// String says what the call was, without the bytes.
func (c storeCall) String() string {
	return fmt.Sprintf("%s %s (%d ops, %d checks) at %s", c.op, c.table, len(c.ops), c.checks, c.at.Format(time.RFC3339))
}

func (r *recorder) record(c storeCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.at = r.clock.Now()
	r.calls = append(r.calls, c)
}

// take returns the calls recorded since the last take, and forgets them.
func (r *recorder) take() []storeCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls := r.calls
	r.calls = nil
	return calls
}

func (r *recorder) Get(ctx context.Context, table string, key []byte) (store.Record, error) {
	r.record(storeCall{op: "get", table: table})
	return r.Store.Get(ctx, table, key)
}

func (r *recorder) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	r.record(storeCall{op: "scan", table: table})
	return r.Store.Scan(ctx, table, fn)
}

func (r *recorder) Apply(ctx context.Context, b *store.Batch) error {
	ops := make([]store.Op, len(b.Ops))
	for i, o := range b.Ops {
		ops[i] = store.Op{Record: store.Record{Table: o.Table, Key: bytes.Clone(o.Key), Day: o.Day, Value: bytes.Clone(o.Value)}, Delete: o.Delete}
	}
	r.record(storeCall{op: "apply", ops: ops, checks: len(b.Checks)})
	return r.Store.Apply(ctx, b)
}

func (r *recorder) DeleteDay(ctx context.Context, d calendar.Day) (int64, error) {
	r.record(storeCall{op: "delete_day"})
	return r.Store.DeleteDay(ctx, d)
}

func (r *recorder) Days(ctx context.Context) ([]calendar.Day, error) {
	r.record(storeCall{op: "days"})
	return r.Store.Days(ctx)
}

// hostSees returns the store calls that f makes the enclave make.
func (v *env) hostSees(f func()) []storeCall {
	v.rec.take()
	f()
	return v.rec.take()
}

// env is one enclave with its store, sealing key, clock and authority.
type env struct {
	t          testing.TB
	clock      *testClock
	store      *memstore.Store // the host's view: every record, no faults
	faults     *faultStore     // the store's failures
	rec        *recorder       // what the enclave is given: every call recorded
	sealingKey [seal.KeySize]byte
	lab        *authority.Key
	labPriv    ed25519.PrivateKey // lab's key, to sign statements SignResult would not make
	pol        policy.Policy
	logs       *logBuffer
	e          *Enclave
}

// newEnv opens an enclave over an empty store with the default policy,
// after edit changes it, listing one authority, "lab-1".
func newEnv(t testing.TB, edit ...func(*policy.Policy)) *env {
	t.Helper()
	lab, err := authority.GenerateKey("lab-1")
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _, err := lab.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(privPEM)
	if block == nil {
		t.Fatal("authority key: no PEM block")
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default()
	pol.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	for _, f := range edit {
		f(&pol)
	}
	mem := memstore.New()
	clock := &testClock{now: testStart}
	faults := &faultStore{Store: mem}
	v := &env{t: t, clock: clock, store: mem, faults: faults, rec: &recorder{Store: faults, clock: clock}, lab: lab, labPriv: priv.(ed25519.PrivateKey), pol: pol, logs: &logBuffer{}}
	rand.Read(v.sealingKey[:])
	t.Cleanup(func() { v.store.Close() })
	v.restart()
	return v
}

// config returns the configuration of an enclave over the env's store.
func (v *env) config() Config {
	return Config{
		Policy:     v.pol,
		Store:      v.rec,
		SealingKey: v.sealingKey,
		HostClock:  v.clock.Now,
		Logger:     slog.New(slog.NewTextHandler(v.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// restart replaces the enclave by a new one over the same store and
// sealing key, as a restart of the backend would. What the journal has not
// written yet is lost: tests that mean to keep it call flushAll first.
func (v *env) restart() {
	v.t.Helper()
	e, err := Open(context.Background(), v.config())
	if err != nil {
		v.t.Fatalf("Open: %v", err)
	}
	v.e = e
}

// flushAll makes at once the flushes that write everything the journal
// holds, as if their time had come: it moves the flush schedule, not the
// clock, so that tests of other rules can make uploads durable without
// moving their dates.
func (v *env) flushAll() {
	v.t.Helper()
	for {
		v.e.mu.Lock()
		pending := len(v.e.journal.pending) > 0
		if pending {
			v.e.journal.nextFlush = v.now()
		}
		v.e.mu.Unlock()
		if !pending {
			return
		}
		if err := v.e.FlushDue(context.Background()); err != nil {
			v.t.Fatalf("FlushDue: %v", err)
		}
	}
}

// pendingRecords returns how many records the journal holds unwritten.
func (v *env) pendingRecords() int {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	return len(v.e.journal.pending)
}

// flushEvery is the policy's flush period.
func (v *env) flushEvery() time.Duration {
	return time.Duration(v.pol.StoreFlushSeconds) * time.Second
}

// nextFlush returns when the next flush is due.
func (v *env) nextFlush() time.Time {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	return v.e.journal.nextFlush
}

// flushDue moves the clock by d and makes the flushes then due.
func (v *env) flushDue(d time.Duration) {
	v.t.Helper()
	v.clock.Advance(d)
	if err := v.e.FlushDue(context.Background()); err != nil {
		v.t.Fatalf("FlushDue: %v", err)
	}
}

func (v *env) now() time.Time { return v.clock.Now() }

// wantCode fails unless err is the refusal with the given code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if !errors.Is(err, &api.Error{Code: code}) {
		t.Errorf("%s: err = %v, want refusal %q", what, err, code)
	}
}

// wantInternal fails unless err is an internal failure: an error, but not
// a refusal the client could act on.
func wantInternal(t *testing.T, what string, err error) {
	t.Helper()
	var ae *api.Error
	if err == nil || errors.As(err, &ae) {
		t.Errorf("%s: err = %v, want an internal error", what, err)
	}
}

func newSecret() []byte {
	s := make([]byte, api.TestSecretSize)
	rand.Read(s)
	return s
}

// signResult has the lab sign a result for secret's test code, dated the
// day before now.
func (v *env) signResult(secret []byte, result api.Result) api.SignedResult {
	v.t.Helper()
	now := v.now()
	r, err := v.lab.SignResult(api.TestCode(secret), result, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		v.t.Fatal(err)
	}
	return r
}

// resign signs r again with the lab's key, after a test changed it.
func (v *env) resign(r *api.SignedResult) {
	r.Signature = ed25519.Sign(v.labPriv, r.SignedBytes())
}

// submit has the lab declare secret's test.
func (v *env) submit(secret []byte, result api.Result) {
	v.t.Helper()
	if _, err := v.e.SubmitResult(context.Background(), v.signResult(secret, result)); err != nil {
		v.t.Fatalf("SubmitResult: %v", err)
	}
}

// detailed is a policy edit for tests that read the per-day figures of
// answers (policy.AnswersDetailed).
func detailed(p *policy.Policy) { p.Answers = policy.AnswersDetailed }

// poll polls secret's result. PollResult wipes the secret it is given, so
// it gets a copy.
func (v *env) poll(secret []byte) (api.PollResultResponse, error) {
	return v.e.PollResult(context.Background(), api.PollResultRequest{Secret: bytes.Clone(secret)})
}

// authorize registers a new test, has it declared positive and returns
// the upload authorization its first poll yields.
func (v *env) authorize() []byte {
	v.t.Helper()
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil || pr.Result != api.Positive || len(pr.UploadAuthorization) == 0 {
		v.t.Fatalf("first poll of a positive test: %+v, %v", pr, err)
	}
	return pr.UploadAuthorization
}

func (v *env) upload(token []byte, r contactlog.Report) (api.UploadResponse, error) {
	return v.e.Upload(context.Background(), api.UploadRequest{Authorization: token, Report: encode(v.t, r)})
}

// mustUpload uploads r under a fresh authorization.
func (v *env) mustUpload(r contactlog.Report) {
	v.t.Helper()
	if got, err := v.upload(v.authorize(), r); err != nil || got.Sightings != len(r.Sightings) || got.Keys != len(r.Keys) {
		v.t.Fatalf("Upload: %+v, %v; want %d sightings and %d keys stored", got, err, len(r.Sightings), len(r.Keys))
	}
}

// exchange sends a daily exchange. Exchange wipes the secret, the
// authorization and the report it is given, so it gets copies.
func (v *env) exchange(flags byte, secret, token []byte, r contactlog.Report) (api.ExchangeResponse, error) {
	return v.e.Exchange(context.Background(), api.ExchangeRequest{Flags: flags, Secret: bytes.Clone(secret), Authorization: bytes.Clone(token), Report: encode(v.t, r)})
}

func (v *env) check(r contactlog.Report) api.ExposureResponse {
	v.t.Helper()
	resp, err := v.e.CheckExposure(context.Background(), api.ExposureRequest{Report: encode(v.t, r)})
	if err != nil {
		v.t.Fatalf("CheckExposure: %v", err)
	}
	return resp
}

// encode returns the wire form of r. It encodes a copy, since encoding
// sorts the keys in place.
func encode(t testing.TB, r contactlog.Report) []byte {
	t.Helper()
	r.Keys = slices.Clone(r.Keys)
	b, err := r.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawReport encodes keys and sightings in the wire format without the
// checks that AppendBinary makes, so that tests can send what a
// well-behaved device would not. A sighting goes under the first key
// valid in its interval, or, if none is, under the first key at the
// offset its interval gives, past the key's validity; without keys, its
// bytes trail the report.
func rawReport(keys []contactlog.DailyKey, ss []contactlog.Sighting) []byte {
	groups := make([][]contactlog.Sighting, max(len(keys), 1))
	for _, s := range ss {
		k := slices.IndexFunc(keys, func(k contactlog.DailyKey) bool { return k.Contains(s.Interval) })
		groups[max(k, 0)] = append(groups[max(k, 0)], s)
	}
	b := []byte{contactlog.ReportVersion, byte(len(keys))}
	for i, k := range keys {
		b = append(b, k.TEK[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(k.Start))
		b = append(b, k.Period)
		b = binary.BigEndian.AppendUint16(b, uint16(len(groups[i])))
	}
	for i, g := range groups {
		var start enid.Interval
		if i < len(keys) {
			start = keys[i].Start
		}
		for _, s := range g {
			b = append(b, s.Heard[:contactlog.RPIPrefixSize]...)
			b = append(b, byte(s.Interval-start), s.Minutes, s.Attenuation)
		}
	}
	return b
}

func newRPI() enid.RPI {
	var r enid.RPI
	rand.Read(r[:])
	return r
}

// device is a simulated phone: its daily keys, from which the RPIs it
// broadcasts derive. Asked for an RPI of an interval that no key covers,
// it makes that UTC day's key, as a phone makes one a day; tests that
// need other layouts give the keys explicitly.
type device struct {
	keys    []contactlog.DailyKey
	derived map[contactlog.DailyKey]*enid.Key
}

func newDevice(keys ...contactlog.DailyKey) *device {
	return &device{keys: keys, derived: map[contactlog.DailyKey]*enid.Key{}}
}

// dayKey returns a fresh key valid for the whole UTC day of i.
func dayKey(i enid.Interval) contactlog.DailyKey {
	return contactlog.DailyKey{TEK: enid.NewTEK(), Start: i.RollingStart(), Period: enid.RollingPeriod}
}

// key returns the device's key valid at i, making the day's key if there
// is none.
func (d *device) key(i enid.Interval) *enid.Key {
	j := slices.IndexFunc(d.keys, func(k contactlog.DailyKey) bool { return k.Contains(i) })
	if j < 0 {
		k := dayKey(i)
		if slices.ContainsFunc(d.keys, func(o contactlog.DailyKey) bool { return o.Start < k.End() && k.Start < o.End() }) {
			panic(fmt.Sprintf("test set-up: interval %d falls in a gap of the device's explicit keys", i))
		}
		d.keys = append(d.keys, k)
		j = len(d.keys) - 1
	}
	dk := d.keys[j]
	k, ok := d.derived[dk]
	if !ok {
		var err error
		if k, err = dk.Key(); err != nil {
			panic(fmt.Sprintf("test set-up: %v", err))
		}
		d.derived[dk] = k
	}
	return k
}

// rpi returns the RPI the device broadcasts during i.
func (d *device) rpi(i enid.Interval) enid.RPI { return d.key(i).RPI(i) }

// hears returns the device's sighting, logged at its interval at, of the
// RPI that other broadcast during theirs (the two differ by clock skew).
func (d *device) hears(other *device, at, theirs enid.Interval, minutes, attenuation uint8) contactlog.Sighting {
	d.key(at) // the device's own key must cover its sighting
	return contactlog.Sighting{Heard: other.rpi(theirs), Interval: at, Minutes: minutes, Attenuation: attenuation}
}

// report returns what the device sends: all its keys and the sightings ss.
func (d *device) report(ss ...contactlog.Sighting) contactlog.Report {
	return contactlog.Report{Keys: slices.Clone(d.keys), Sightings: ss}
}

// meet has a and b hear each other during the interval of at, each for
// minutes at attenuation (tests change a side's figures as they need). It
// returns a's sighting of b and b's of a.
func meet(a, b *device, at time.Time, minutes, attenuation uint8) (ab, ba contactlog.Sighting) {
	i := enid.IntervalOf(at)
	return a.hears(b, i, i, minutes, attenuation), b.hears(a, i, i, minutes, attenuation)
}

// encounter returns both sides of one encounter at at between two fresh
// devices: the report that the device that will test positive uploads,
// and the report the other device checks with. Each holds its device's
// key of the day and its one sighting of the other.
func encounter(at time.Time, minutes, attenuation uint8) (infected, contact contactlog.Report) {
	a, b := newDevice(), newDevice()
	ab, ba := meet(a, b, at, minutes, attenuation)
	return a.report(ab), b.report(ba)
}

// when returns the time of a report's first sighting.
func when(r contactlog.Report) time.Time { return r.Sightings[0].Interval.Time() }

// bothRules is a policy edit that matches uploads by both rules.
func bothRules(p *policy.Policy) { p.Matching = []string{policy.MatchReciprocal, policy.MatchOneSided} }

// records returns every record of table, as the host sees it.
func (v *env) records(table string) []store.Record {
	v.t.Helper()
	var rs []store.Record
	if err := v.store.Scan(context.Background(), table, func(r store.Record) error {
		rs = append(rs, r)
		return nil
	}); err != nil {
		v.t.Fatal(err)
	}
	return rs
}

// snapshot returns everything the store holds.
func (v *env) snapshot() []store.Record {
	v.t.Helper()
	var rs []store.Record
	for _, table := range allTables {
		rs = append(rs, v.records(table)...)
	}
	return rs
}

func sameRecords(a, b []store.Record) bool {
	return slices.EqualFunc(a, b, func(x, y store.Record) bool {
		return x.Table == y.Table && bytes.Equal(x.Key, y.Key) && x.Day == y.Day && bytes.Equal(x.Value, y.Value)
	})
}

// put writes r into the store as the host would, bypassing the enclave.
func (v *env) put(r store.Record) {
	v.t.Helper()
	var b store.Batch
	b.Put(r.Table, r.Key, r.Day, r.Value)
	if err := v.store.Apply(context.Background(), &b); err != nil {
		v.t.Fatal(err)
	}
}

// del deletes a record as the host would.
func (v *env) del(table string, key []byte) {
	v.t.Helper()
	var b store.Batch
	b.Delete(table, key)
	if err := v.store.Apply(context.Background(), &b); err != nil {
		v.t.Fatal(err)
	}
}

// flip returns value with one bit changed in its middle.
func flip(value []byte) []byte {
	v := bytes.Clone(value)
	v[len(v)/2] ^= 1
	return v
}

func utcDay(t time.Time) calendar.Day { return calendar.DayOf(t) }
