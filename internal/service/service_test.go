package service_test

import (
	"bytes"
	"context"
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
}

func newWorld(t testing.TB) *world {
	t.Helper()
	lab, err := authority.GenerateKey("lab-1")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, dir: t.TempDir(), lab: lab, sizes: &sizeRecorder{}, now: time.Now()}
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

func (w *world) window(d *device.Device) []contactlog.Tuple {
	return d.Log().Tuples(enid.IntervalOf(w.now.Add(-14*24*time.Hour)), enid.IntervalOf(w.now)+1)
}

// sizeRecorder records the length of every gateway response.
type sizeRecorder struct {
	mu    sync.Mutex
	sizes []int
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
	s.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func (s *sizeRecorder) last() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sizes[len(s.sizes)-1]
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
	n, err := c.Upload(ctx, pr.UploadAuthorization, uploaded)
	if err != nil || n != 2 {
		t.Fatalf("upload: %d, %v (want 2 tuples)", n, err)
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

	// The uploaded identifiers appear nowhere the backend writes.
	err = filepath.WalkDir(w.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, _ := os.ReadFile(p)
		for _, tu := range uploaded {
			if bytes.Contains(data, tu.Own[:]) || bytes.Contains(data, tu.Heard[:]) {
				t.Errorf("%s holds an uploaded RPI in the clear", filepath.Base(p))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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
