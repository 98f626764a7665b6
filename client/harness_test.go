package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// testMeasurement is the measurement the local backends of these tests
// attest, so that they need not hash the test binary.
var testMeasurement = sha256Sum("conftrace client test backend")

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// clock is the time a backend and its clients agree on; tests move it.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

// newClock starts at a fixed noon, far enough from the real date that code
// reading the real clock instead would behave visibly differently.
func newClock() *clock {
	return &clock{now: time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// startBackend starts a local backend in cfg.Dir (a new temporary directory
// if empty), attesting testMeasurement unless cfg says otherwise, and
// closes it when the test ends.
func startBackend(t testing.TB, cfg localbackend.Config) *localbackend.Backend {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Measurement == nil {
		cfg.Measurement = testMeasurement
	}
	if cfg.Policy != nil {
		// Answers leave at once, as with the default policy of a local
		// backend: on loopback their timing tells nothing, and tests
		// should not wait.
		p := *cfg.Policy
		p.AnswerReleaseMillis = 0
		cfg.Policy = &p
	}
	b, err := localbackend.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// newClient makes a client of server that accepts b, sending through w
// when w is not nil.
func newClient(t testing.TB, server string, b *localbackend.Backend, w *wire, now func() time.Time) *client.Client {
	t.Helper()
	cfg := client.Config{Server: server, Expectations: b.Expectations(), Now: now}
	if w != nil {
		cfg.HTTPClient = w.client()
	}
	c, err := client.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return c
}

// newDevice makes a phone's state in a temporary directory.
func newDevice(t testing.TB, server string) *device.Device {
	t.Helper()
	d, err := device.Create(context.Background(), filepath.Join(t.TempDir(), "device"), device.Config{Server: server, AllowSimulated: true})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// meet records an encounter of minutes at close range on both devices.
func meet(t testing.TB, a, b *device.Device, at time.Time, minutes int) {
	t.Helper()
	if _, err := device.Meet(context.Background(), a, b, at, time.Duration(minutes)*time.Minute, 50, 52); err != nil {
		t.Fatal(err)
	}
}

// window returns what d sends in an upload or an exposure check at now:
// its daily keys and sightings of p's retention window.
func window(d *device.Device, p policy.Policy, now time.Time) contactlog.Report {
	return d.Report(p, now)
}

// positive registers a test on d, has lab declare it positive through c
// and returns d's test secret.
func positive(t testing.TB, c *client.Client, lab *authority.Key, d *device.Device, now time.Time) []byte {
	t.Helper()
	code, err := d.RegisterTest(now)
	if err != nil {
		t.Fatal(err)
	}
	res, err := lab.SignResult(code, api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SubmitResult(context.Background(), res); err != nil {
		t.Fatalf("SubmitResult: %v", err)
	}
	tst, err := d.Test()
	if err != nil {
		t.Fatal(err)
	}
	return tst.Secret
}

// flushUntil moves clk to durableBy, if it is not past it yet, and has b
// make the journal flushes then due: an upload acknowledged as durable by
// durableBy is durable after it.
func flushUntil(t testing.TB, b *localbackend.Backend, clk *clock, durableBy int64) {
	t.Helper()
	if d := time.Unix(durableBy, 0).Sub(clk.Now()); d > 0 {
		clk.Add(d)
	}
	if err := b.Service.Enclave.FlushDue(context.Background()); err != nil {
		t.Fatalf("FlushDue: %v", err)
	}
}

// exchange is one HTTP request a client made, as an observer of the
// network sees it.
type exchange struct {
	Method, Host, Path, ContentType string
	ReqSize, RespSize, Status       int
}

// wire is a RoundTripper that records every exchange of a client.
type wire struct {
	// rt sends the requests; nil means http.DefaultTransport.
	rt  http.RoundTripper
	mu  sync.Mutex
	log []exchange
}

func (w *wire) client() *http.Client { return &http.Client{Transport: w} }

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	ex := exchange{Method: r.Method, Host: r.URL.Host, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), ReqSize: int(r.ContentLength)}
	rt := w.rt
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := rt.RoundTrip(r)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		ex.RespSize, ex.Status = len(body), resp.StatusCode
	}
	w.mu.Lock()
	w.log = append(w.log, ex)
	w.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// all returns the exchanges so far.
func (w *wire) all() []exchange {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]exchange(nil), w.log...)
}

// posts returns the POST exchanges so far: the Oblivious HTTP requests.
func (w *wire) posts() []exchange {
	var ps []exchange
	for _, e := range w.all() {
		if e.Method == http.MethodPost {
			ps = append(ps, e)
		}
	}
	return ps
}

// last returns the latest exchange.
func (w *wire) last(t testing.TB) exchange {
	t.Helper()
	all := w.all()
	if len(all) == 0 {
		t.Fatal("no request on the wire")
	}
	return all[len(all)-1]
}

// hit is a request that reached a backend through a front, and the
// address it came from.
type hit struct{ Method, Path, UserAgent, RemoteAddr string }

// front is a forwarding proxy with a stable address in front of a backend
// whose address changes when it restarts. It records what passes and may
// tamper with answers.
type front struct {
	URL    string
	mu     sync.Mutex
	target *url.URL
	hits   []hit
	// modify, if set, may change an answer before the client sees it.
	modify func(*http.Response) error
}

func newFront(t testing.TB, target string) *front {
	t.Helper()
	f := &front{}
	f.setTarget(t, target)
	rp := &httputil.ReverseProxy{
		// No connection outlives its request: a spare connection that the
		// transport dialed and never used would hold up a backend's
		// graceful shutdown for seconds.
		Transport: &http.Transport{DisableKeepAlives: true},
		Rewrite: func(pr *httputil.ProxyRequest) {
			f.mu.Lock()
			pr.SetURL(f.target)
			f.hits = append(f.hits, hit{pr.In.Method, pr.In.URL.Path, pr.In.Header.Get("User-Agent"), pr.In.RemoteAddr})
			f.mu.Unlock()
		},
		ModifyResponse: func(r *http.Response) error {
			f.mu.Lock()
			m := f.modify
			f.mu.Unlock()
			if m == nil {
				return nil
			}
			return m(r)
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *front) setTarget(t testing.TB, target string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.target = u
	f.mu.Unlock()
}

func (f *front) setModify(m func(*http.Response) error) {
	f.mu.Lock()
	f.modify = m
	f.mu.Unlock()
}

func (f *front) seen() []hit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hit(nil), f.hits...)
}

// replaceBody swaps an answer's body.
func replaceBody(r *http.Response, body []byte) {
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
}

// expectations accept the local backends of these tests.
func expectations() attest.Expectations {
	return attest.Expectations{Measurements: [][]byte{testMeasurement}, AllowSimulated: true}
}
