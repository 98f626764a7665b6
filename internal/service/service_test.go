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
	lab, err := authority.GenerateKey("lab-1")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, dir: t.TempDir(), lab: lab, sizes: &sizeRecorder{}, now: time.Now(), policy: p}
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

	// Before any upload, nobody is exposed.
	before, err := c.CheckExposure(ctx, w.window(a))
	if err != nil || before.Exposed {
		t.Fatalf("A before upload: %+v, %v", before, err)
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
	if want := (api.UploadResponse{Sightings: 2, Keys: 1}); err != nil || up != want {
		t.Fatalf("upload: %+v, %v; want %+v (20 minutes of one day)", up, err, want)
	}
	if _, err := c.Upload(ctx, pr.UploadAuthorization, uploaded); !errors.Is(err, &api.Error{Code: api.CodeAlreadyUsed}) {
		t.Fatalf("reused authorization: %v", err)
	}
	if pr3, _ := c.PollResult(ctx, tst.Secret); !pr3.Uploaded || pr3.UploadAuthorization != nil {
		t.Fatalf("poll after upload: %+v", pr3)
	}

	ea, err := c.CheckExposure(ctx, w.window(a))
	if err != nil || !ea.Exposed {
		t.Fatalf("A: %+v, %v; want exposed", ea, err)
	}
	exposedSize := w.sizes.last()
	var minutes int
	for _, d := range ea.Days {
		minutes += d.Minutes
		if d.Minutes > 0 && (!d.Reciprocal || d.OneSided || d.MinAttenuation != 50) {
			t.Errorf("A on %s: %+v; want a reciprocal match at A's 50 dB", d.Date, d)
		}
	}
	if minutes != 20 || len(ea.Days) != w.pol.RetentionDays {
		t.Fatalf("A: %d exposure minutes over %d days, want 20 over %d", minutes, len(ea.Days), w.pol.RetentionDays)
	}
	eb, err := c.CheckExposure(ctx, w.window(b))
	if err != nil || eb.Exposed {
		t.Fatalf("B: %+v, %v; want not exposed", eb, err)
	}
	if exposedSize != notExposedSize || w.sizes.last() != exposedSize {
		t.Fatalf("exposure answers differ in size on the wire: %d exposed, %d and %d not", exposedSize, notExposedSize, w.sizes.last())
	}

	// An upload without a positive result is refused.
	if _, err := c.Upload(ctx, make([]byte, 32), w.window(b)); !errors.Is(err, &api.Error{Code: api.CodeNotAuthorized}) {
		t.Fatalf("upload without authorization: %v", err)
	}

	// After a restart, A is still exposed.
	w.restart()
	c = w.client()
	if ea, err := c.CheckExposure(ctx, w.window(a)); err != nil || !ea.Exposed {
		t.Fatalf("A after restart: %+v, %v", ea, err)
	}

	// The uploaded identifiers, heard and derived, and the daily keys they
	// derive from appear nowhere the backend writes; nor does anything of
	// the checks, which are never stored.
	type secret struct {
		what  string
		bytes []byte
	}
	var secrets []secret
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
	}
	err = filepath.WalkDir(w.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
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
	const class = 16 << 10
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

// After a restart the gateway has fresh keys; a client made before it
// verifies the new bundle and carries on.
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
	c, err := client.New(ctx, client.Config{Server: stable.URL, Expectations: w.b.Expectations()})
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
		t.Fatalf("after the gateway rotated its keys: %v", err)
	}
	if c.Identity().ReportData == before {
		t.Fatal("the client did not adopt the new attested keys")
	}
}
