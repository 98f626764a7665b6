package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/relay"
	"github.com/conftrace/conftrace/internal/store/sqlite"
	"github.com/conftrace/conftrace/policy"
)

// world is a backend on loopback with the devices and authority of one test.
type world struct {
	t     testing.TB
	dir   string // the backend's directory: Dir of every start
	lab   *authority.Key
	pol   policy.Policy
	b     *localbackend.Backend
	sizes *sizeRecorder
	now   time.Time
	// policy, if set, replaces the default policy (with the lab added).
	policy *policy.Policy
}

func newWorld(t testing.TB) *world { return newWorldWithPolicy(t, nil) }

func newWorldWithPolicy(t testing.TB, p *policy.Policy) *world {
	t.Helper()
	return newWorldAt(t, p, time.Now())
}

// newWorldAt returns a world whose clock starts at now.
func newWorldAt(t testing.TB, p *policy.Policy, now time.Time) *world {
	t.Helper()
	lab, err := authority.GenerateKey("lab-1")
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		// Answers leave at once, as with the default policy of a local
		// backend: on loopback their timing tells nothing, and tests
		// should not wait.
		q := *p
		q.AnswerReleaseMillis = 0
		p = &q
	}
	w := &world{t: t, dir: t.TempDir(), lab: lab, sizes: &sizeRecorder{}, now: now, policy: p}
	w.start()
	t.Cleanup(w.stop)
	return w
}

func (w *world) start() { w.startWithLogger(nil) }

// startWithLogger starts the backend on the world's directory and
// authority, so that it opens the sealed state of any previous start.
func (w *world) startWithLogger(log *slog.Logger) {
	w.t.Helper()
	b, err := localbackend.Start(context.Background(), localbackend.Config{
		Dir:       w.dir,
		Authority: w.lab,
		Logger:    log,
		Now:       func() time.Time { return w.now },
		Policy:    w.policy,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.b, w.pol = b, b.Policy
}

func (w *world) stop() {
	if w.b != nil {
		if err := w.b.Close(); err != nil {
			w.t.Errorf("closing the backend: %v", err)
		}
		w.b = nil
	}
}

func (w *world) restart() {
	w.stop()
	w.start()
}

// dbPath is the sealed SQLite file, which tests tamper with as the host
// could.
func (w *world) dbPath() string { return filepath.Join(w.dir, "data", sqlite.FileName) }

func (w *world) client() *client.Client {
	w.t.Helper()
	c, err := client.New(context.Background(), client.Config{
		Server:       w.b.URL,
		Expectations: w.b.Expectations(),
		HTTPClient:   &http.Client{Transport: w.sizes},
		// The backend's clock: requests are dated, and the gateway answers
		// only those of its present.
		Now: func() time.Time { return w.now },
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) device(name string) *device.Device {
	w.t.Helper()
	d, err := device.Create(context.Background(), filepath.Join(w.t.TempDir(), name), device.Config{Server: w.b.URL, AllowSimulated: true})
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// window returns what d sends in an upload or an exposure check: its
// daily keys and sightings of the policy's window.
func (w *world) window(d *device.Device) contactlog.Report {
	return d.Report(w.pol, w.now)
}

// sizeRecorder records the length of every gateway request and response.
type sizeRecorder struct {
	mu        sync.Mutex
	sizes     []int
	requested []int
}

func (s *sizeRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.URL.Path != api.PathGateway {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.sizes = append(s.sizes, len(body))
	s.requested = append(s.requested, int(r.ContentLength))
	s.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// last returns the length of the latest gateway response.
func (s *sizeRecorder) last() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sizes[len(s.sizes)-1]
}

// lastRequest returns the length of the latest gateway request.
func (s *sizeRecorder) lastRequest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requested[len(s.requested)-1]
}

// flush moves the world's clock past durableBy, if it is not past it,
// and has the backend make the journal flushes then due: an upload
// acknowledged as durable by durableBy is durable after it. (DurableBy is
// in whole seconds, and the world's clock, started at time.Now, is not:
// the flush due is up to a second after.)
func (w *world) flush(durableBy int64) {
	w.t.Helper()
	if at := time.Unix(durableBy+1, 0); at.After(w.now) {
		w.now = at
	}
	if err := w.b.Service.Enclave.FlushDue(context.Background()); err != nil {
		w.t.Fatalf("FlushDue: %v", err)
	}
}

// flushPeriod returns how often the journal flushes.
func (w *world) flushPeriod() time.Duration {
	return time.Duration(w.pol.StoreFlushSeconds) * time.Second
}

// notExposed reports whether r is the coarse answer of a phone that was
// not exposed: nothing but "no", and no per-day figures.
func notExposed(r api.ExposureResponse) bool {
	return !r.Exposed && r.LastExposure == "" && !r.Reciprocal && !r.OneSided && r.Days == nil
}

// positive registers a test on d, has the lab declare it positive and
// returns the upload authorization d polls.
func (w *world) positive(c *client.Client, d *device.Device) []byte {
	w.t.Helper()
	ctx := context.Background()
	code, err := d.RegisterTest(w.now)
	if err != nil {
		w.t.Fatal(err)
	}
	res, err := w.lab.SignResult(code, api.Positive, w.now.Add(-24*time.Hour), time.Time{}, w.now)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := c.SubmitResult(ctx, res); err != nil {
		w.t.Fatal(err)
	}
	tst, _ := d.Test()
	pr, err := c.PollResult(ctx, tst.Secret)
	if err != nil {
		w.t.Fatal(err)
	}
	if pr.Result != api.Positive || len(pr.UploadAuthorization) == 0 {
		w.t.Fatalf("poll after a positive result: %+v", pr)
	}
	return pr.UploadAuthorization
}

func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	a, b, cc := w.device("a"), w.device("b"), w.device("c")
	twoDaysAgo := w.now.Add(-48 * time.Hour).Truncate(time.Hour)
	if _, err := device.Meet(ctx, a, cc, twoDaysAgo, 20*time.Minute, 50, 52); err != nil {
		t.Fatal(err)
	}
	if _, err := device.Meet(ctx, b, a, twoDaysAgo.Add(3*time.Hour), 20*time.Minute, 50, 50); err != nil {
		t.Fatal(err)
	}
	checkA := func(when string) api.ExposureResponse {
		t.Helper()
		r, err := c.CheckExposure(ctx, w.window(a))
		if err != nil {
			t.Fatalf("A %s: %v", when, err)
		}
		return r
	}

	// Before any upload, nobody is exposed.
	if r := checkA("before the upload"); !notExposed(r) {
		t.Fatalf("A before the upload: %+v, want a coarse answer, not exposed", r)
	}
	notExposedSize := w.sizes.last()

	// C's test: pending, then positive after the lab's statement.
	code, _ := cc.RegisterTest(w.now)
	tst, _ := cc.Test()
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || pr.Result != api.Pending {
		t.Fatalf("poll before result: %+v, %v", pr, err)
	}
	res, _ := w.lab.SignResult(code, api.Positive, w.now.Add(-24*time.Hour), time.Time{}, w.now)
	if err := c.SubmitResult(ctx, res); err != nil {
		t.Fatal(err)
	}
	if err := c.SubmitResult(ctx, res); !errors.Is(err, &api.Error{Code: api.CodeReplayed}) {
		t.Fatalf("replayed result: %v", err)
	}
	pr, err := c.PollResult(ctx, tst.Secret)
	if err != nil || pr.Result != api.Positive || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("poll after positive: %+v, %v", pr, err)
	}
	pr2, _ := c.PollResult(ctx, tst.Secret)
	if !bytes.Equal(pr2.UploadAuthorization, pr.UploadAuthorization) {
		t.Fatal("a second poll before upload must return the same authorization")
	}
	uploaded := w.window(cc)
	up, err := c.Upload(ctx, pr.UploadAuthorization, uploaded)
	if err != nil || up.Sightings != 2 || up.Keys != 1 {
		t.Fatalf("upload: %+v, %v; want 2 sightings and 1 key (20 minutes of one day)", up, err)
	}
	// Taken, not yet written: the journal's next flush writes it.
	// DurableBy is rounded up to the second.
	if up.Durable || up.DurableBy < w.now.Unix() || up.DurableBy > w.now.Add(w.flushPeriod()+time.Second).Unix() {
		t.Errorf("upload: durable %t by %s; want durable within a flush period of %s", up.Durable, time.Unix(up.DurableBy, 0), w.now)
	}
	if _, err := c.Upload(ctx, pr.UploadAuthorization, uploaded); !errors.Is(err, &api.Error{Code: api.CodeAlreadyUsed}) {
		t.Fatalf("reused authorization: %v", err)
	}
	if pr3, _ := c.PollResult(ctx, tst.Secret); pr3.Uploaded || !pr3.UploadPending || pr3.UploadAuthorization != nil {
		t.Fatalf("poll after upload, before the flush: %+v; want the upload pending", pr3)
	}

	// The upload matches at once. The answer is coarse: exposed, on which
	// day, by which rule.
	ea := checkA("after the upload")
	if !ea.Exposed || ea.LastExposure != twoDaysAgo.Format(api.DateLayout) || !ea.Reciprocal || ea.OneSided || ea.Days != nil {
		t.Fatalf("A: %+v; want exposed reciprocally on %s, no per-day figures", ea, twoDaysAgo.Format(api.DateLayout))
	}
	exposedSize := w.sizes.last()
	eb, err := c.CheckExposure(ctx, w.window(b))
	if err != nil || !notExposed(eb) {
		t.Fatalf("B: %+v, %v; want not exposed", eb, err)
	}
	if exposedSize != notExposedSize || w.sizes.last() != exposedSize {
		t.Fatalf("exposure answers differ in size on the wire: %d exposed, %d and %d not", exposedSize, notExposedSize, w.sizes.last())
	}

	// An upload without a positive result is refused.
	if _, err := c.Upload(ctx, make([]byte, 32), w.window(b)); !errors.Is(err, &api.Error{Code: api.CodeNotAuthorized}) {
		t.Fatalf("upload without authorization: %v", err)
	}

	// A restart before the flush loses the upload, which was taken but
	// never said durable: A is not exposed any more, and C's next poll
	// hands out an authorization again, with which C uploads again.
	w.restart()
	c = w.client()
	if r := checkA("after a restart that lost the upload"); !notExposed(r) {
		t.Fatalf("A after a restart that lost the upload: %+v, want not exposed", r)
	}
	pr, err = c.PollResult(ctx, tst.Secret)
	if err != nil || pr.Result != api.Positive || len(pr.UploadAuthorization) != api.AuthorizationSize || pr.Uploaded || pr.UploadPending {
		t.Fatalf("poll after a restart that lost the upload: %+v, %v; want an authorization again", pr, err)
	}
	if up, err = c.Upload(ctx, pr.UploadAuthorization, uploaded); err != nil {
		t.Fatalf("upload again: %v", err)
	}
	w.flush(up.DurableBy)
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || !pr.Uploaded || pr.UploadPending || pr.UploadAuthorization != nil {
		t.Fatalf("poll after the flush: %+v, %v; want uploaded", pr, err)
	}

	// Durable, it survives a restart: A is still exposed, C's poll still
	// says uploaded.
	w.restart()
	c = w.client()
	if r := checkA("after a restart"); !r.Exposed || r.LastExposure != twoDaysAgo.Format(api.DateLayout) {
		t.Fatalf("A after restart: %+v", r)
	}
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || !pr.Uploaded || pr.UploadAuthorization != nil {
		t.Fatalf("poll after a restart: %+v, %v; want uploaded", pr, err)
	}

	// The uploaded identifiers, heard and derived, and the daily keys they
	// derive from appear nowhere the backend writes; nor does anything of
	// the checks, which are never stored, nor the test's code, secret or
	// upload authorizations.
	type secret struct {
		what  string
		bytes []byte
	}
	secrets := []secret{
		{"C's test code", []byte(code)},
		{"C's test code without dashes", []byte(strings.ReplaceAll(code, "-", ""))},
		{"C's test secret", tst.Secret},
		{"C's first upload authorization", pr2.UploadAuthorization},
		{"C's second upload authorization", pr.UploadAuthorization},
	}
	for name, d := range map[string]*device.Device{"C's upload": cc, "A's check": a, "B's check": b} {
		r := w.window(d)
		if len(r.Keys) == 0 || len(r.Sightings) == 0 {
			t.Fatalf("%s: %d keys and %d sightings, want some of each", name, len(r.Keys), len(r.Sightings))
		}
		for _, k := range r.Keys {
			secrets = append(secrets, secret{name + ": a daily key", k.TEK[:]})
		}
		for _, s := range r.Sightings {
			own, err := d.RPI(s.Interval)
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, secret{name + ": a heard RPI", s.Heard[:]}, secret{name + ": an own RPI", own[:]})
		}
		body, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, secret{name + ": its report", body})
	}
	var files int
	err = filepath.WalkDir(w.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		files++
		data, _ := os.ReadFile(p)
		for _, sc := range secrets {
			if bytes.Contains(data, sc.bytes) {
				t.Errorf("%s holds %s in the clear", filepath.Base(p), sc.what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("the backend wrote no file")
	}
}

// A check's report travels in binary (api.MediaTypeReport), not as base64
// inside JSON: a report whose binary form fits a size class, and whose
// base64 would not, crosses the wire in that class, and is answered.
func TestCheckTravelsInBinary(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	a, b := w.device("a"), w.device("b")
	// Four and a half days in one household: a sighting of each of
	// 648 intervals.
	start := w.now.Add(-5 * 24 * time.Hour).Truncate(enid.IntervalLength)
	if n, err := device.Meet(ctx, a, b, start, 108*time.Hour, 50, 50); err != nil || n != 648 {
		t.Fatalf("Meet: %d sightings, %v", n, err)
	}
	r := w.window(a)
	body, err := r.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	asJSON, err := json.Marshal(map[string][]byte{"report": body})
	if err != nil {
		t.Fatal(err)
	}
	const class = 8 << 10
	if len(body) > class-256 || len(asJSON) <= class {
		t.Fatalf("a report of %d bytes (%d as JSON) does not tell binary from JSON in the %d-byte class", len(body), len(asJSON), class)
	}
	// The encapsulation adds the same bytes to every request: those of
	// the smallest decoy beyond the smallest class.
	if err := c.Decoy(ctx, 0); err != nil {
		t.Fatal(err)
	}
	overhead := w.sizes.lastRequest() - 1024
	if _, err := c.CheckExposure(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got := w.sizes.lastRequest(); got != class+overhead {
		t.Errorf("the check of a %d-byte report was %d bytes on the wire, want %d: the %d-byte class and %d of encapsulation", len(body), got, class+overhead, class, overhead)
	}
}

// Who learns what under each matching rule. A met C and both heard each
// other; M, a sniffer, heard C's identifiers in the same intervals but C
// never heard M. After C's upload, A is exposed by the reciprocal rule
// whatever the policy; M learns that C uploaded only where the attested
// policy allows one-sided matching.
func TestMatchingRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		matching []string
		mExposed bool
	}{
		{"reciprocal only", []string{policy.MatchReciprocal}, false},
		{"reciprocal and one-sided", []string{policy.MatchReciprocal, policy.MatchOneSided}, true},
		{"one-sided only", []string{policy.MatchOneSided}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p := policy.Default()
			p.Matching = tc.matching
			// Detailed answers give the figures of every day.
			p.Answers = policy.AnswersDetailed
			w := newWorldWithPolicy(t, &p)
			c := w.client()
			a, cc, m := w.device("a"), w.device("c"), w.device("m")
			at := w.now.Add(-30 * time.Hour).Truncate(time.Hour)
			if _, err := device.Meet(ctx, a, cc, at, 20*time.Minute, 50, 52); err != nil {
				t.Fatal(err)
			}
			for k := range 2 {
				i := enid.IntervalOf(at) + enid.Interval(k)
				rc, err := cc.RPI(i)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Hear(ctx, rc, i.Time(), 10, 45); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.Upload(ctx, w.positive(c, cc), w.window(cc)); err != nil {
				t.Fatal(err)
			}
			oneSided := p.OneSided()
			for _, x := range []struct {
				name                string
				d                   *device.Device
				exposed, reciprocal bool
			}{
				// A's sightings match both rules where both apply; they
				// count once, as reciprocal.
				{"A", a, true, p.Reciprocal()},
				{"M", m, tc.mExposed, false},
			} {
				e, err := c.CheckExposure(ctx, w.window(x.d))
				if err != nil {
					t.Fatalf("%s: %v", x.name, err)
				}
				if e.Exposed != x.exposed {
					t.Errorf("%s: exposed %t, want %t", x.name, e.Exposed, x.exposed)
				}
				if e.Reciprocal != (x.exposed && x.reciprocal) || e.OneSided != (x.exposed && !x.reciprocal && oneSided) || len(e.Days) != w.pol.RetentionDays {
					t.Errorf("%s: %+v; want reciprocal %t, one-sided %t, over %d days", x.name, e, x.exposed && x.reciprocal, x.exposed && !x.reciprocal && oneSided, w.pol.RetentionDays)
				}
				for _, day := range e.Days {
					if day.Minutes == 0 {
						if day.Reciprocal || day.OneSided || day.MinAttenuation != 255 {
							t.Errorf("%s on %s, a day without a match: %+v", x.name, day.Date, day)
						}
						continue
					}
					if day.Date != at.Format(api.DateLayout) || day.Minutes != 20 || day.Reciprocal != x.reciprocal || day.OneSided != (!x.reciprocal && oneSided) {
						t.Errorf("%s on %s: %+v; want 20 minutes on %s, reciprocal %t", x.name, day.Date, day, at.Format(api.DateLayout), x.reciprocal)
					}
				}
			}
		})
	}
}

func TestThroughRelay(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	var gatewayPeers []string
	var mu sync.Mutex
	// The backend behind a recorder of who reaches its gateway.
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.PathGateway {
			mu.Lock()
			gatewayPeers = append(gatewayPeers, r.Header.Get("User-Agent"))
			mu.Unlock()
		}
		w.b.Service.Handler.ServeHTTP(rw, r)
	}))
	defer backend.Close()
	rl, err := relay.New(backend.URL+api.PathGateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rl)
	defer front.Close()

	c, err := client.New(ctx, client.Config{Server: backend.URL, Relay: front.URL, Expectations: w.b.Expectations()})
	if err != nil {
		t.Fatal(err)
	}
	d := w.device("d")
	resp, err := c.CheckExposure(ctx, w.window(d))
	if err != nil || resp.Exposed {
		t.Fatalf("check through the relay: %+v, %v", resp, err)
	}
	if err := c.Decoy(ctx, 2000); err != nil {
		t.Fatalf("decoy through the relay: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gatewayPeers) != 2 || gatewayPeers[0] != "conftrace-relay" {
		t.Fatalf("gateway saw %q; want two requests, all from the relay", gatewayPeers)
	}
}

// A restart keeps the gateway's keys; once the schedule has rotated them
// past the key a client verified, the client verifies the new bundle and
// carries on.
func TestClientFollowsKeyRotation(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	var mu sync.Mutex
	stable := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := w.b.Service.Handler
		mu.Unlock()
		h.ServeHTTP(rw, r)
	}))
	defer stable.Close()
	c, err := client.New(ctx, client.Config{Server: stable.URL, Expectations: w.b.Expectations(), Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	d := w.device("d")
	if _, err := c.CheckExposure(ctx, w.window(d)); err != nil {
		t.Fatal(err)
	}
	before := c.Identity().ReportData
	mu.Lock()
	w.restart()
	mu.Unlock()
	if _, err := c.CheckExposure(ctx, w.window(d)); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if c.Identity().ReportData != before {
		t.Fatal("a restart changed the attested keys")
	}
	// Past its bundle's not_after, the key the client verified is no
	// longer held.
	w.now = w.now.Add(w.pol.BundleLifetime() + time.Minute)
	if err := w.b.Service.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckExposure(ctx, w.window(d)); err != nil {
		t.Fatalf("after the gateway rotated its keys: %v", err)
	}
	if c.Identity().ReportData == before {
		t.Fatal("the client did not adopt the new attested keys")
	}
}
