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
	"encoding/pem"
	"errors"
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
var allTables = []string{tableKEK, tableDayKeys, tableResults, tableAuths, tableAuthsUsed, tableUploads, tableTraces, tableTraceSeen}

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

// env is one enclave with its store, sealing key, clock and authority.
type env struct {
	t          *testing.T
	clock      *testClock
	store      *memstore.Store // the host's view: every record, no faults
	faults     *faultStore     // what the enclave is given
	sealingKey [seal.KeySize]byte
	lab        *authority.Key
	labPriv    ed25519.PrivateKey // lab's key, to sign statements SignResult would not make
	pol        policy.Policy
	logs       *logBuffer
	e          *Enclave
}

// newEnv opens an enclave over an empty store with the default policy,
// after edit changes it, listing one authority, "lab-1".
func newEnv(t *testing.T, edit ...func(*policy.Policy)) *env {
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
	v := &env{t: t, clock: &testClock{now: testStart}, store: mem, faults: &faultStore{Store: mem}, lab: lab, labPriv: priv.(ed25519.PrivateKey), pol: pol, logs: &logBuffer{}}
	rand.Read(v.sealingKey[:])
	t.Cleanup(func() { v.store.Close() })
	v.restart()
	return v
}

// config returns the configuration of an enclave over the env's store.
func (v *env) config() Config {
	return Config{
		Policy:     v.pol,
		Store:      v.faults,
		SealingKey: v.sealingKey,
		Now:        v.clock.Now,
		Logger:     slog.New(slog.NewTextHandler(v.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// restart replaces the enclave by a new one over the same store and
// sealing key, as a restart of the backend would.
func (v *env) restart() {
	v.t.Helper()
	e, err := Open(context.Background(), v.config())
	if err != nil {
		v.t.Fatalf("Open: %v", err)
	}
	v.e = e
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

func (v *env) upload(token []byte, ts ...contactlog.Tuple) (api.UploadResponse, error) {
	return v.e.Upload(context.Background(), api.UploadRequest{Authorization: token, Tuples: encode(v.t, ts)})
}

// mustUpload uploads ts under a fresh authorization.
func (v *env) mustUpload(ts ...contactlog.Tuple) {
	v.t.Helper()
	if r, err := v.upload(v.authorize(), ts...); err != nil || r.Accepted != len(ts) {
		v.t.Fatalf("Upload: %+v, %v; want %d accepted", r, err, len(ts))
	}
}

func (v *env) check(ts ...contactlog.Tuple) api.ExposureResponse {
	v.t.Helper()
	r, err := v.e.CheckExposure(context.Background(), api.ExposureRequest{Tuples: encode(v.t, ts)})
	if err != nil {
		v.t.Fatalf("CheckExposure: %v", err)
	}
	return r
}

func encode(t *testing.T, ts []contactlog.Tuple) []byte {
	t.Helper()
	b, err := contactlog.AppendBatch(nil, ts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newRPI() enid.RPI {
	var r enid.RPI
	rand.Read(r[:])
	return r
}

// encounter returns both sides of one encounter at at: the tuple that the
// device that will test positive logs, and the mirror the other device
// logs. Each side measured its own attenuation; minutes is both sides'.
func encounter(at time.Time, minutes uint16, attenuation uint8) (infected, contact contactlog.Tuple) {
	infected = contactlog.Tuple{Own: newRPI(), Heard: newRPI(), Interval: enid.IntervalOf(at), Duration: minutes, Attenuation: attenuation}
	contact = infected.Mirror()
	return infected, contact
}

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
