package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/relay"
	"github.com/conftrace/conftrace/ohttp"
)

// startRelay runs an Oblivious HTTP relay to gateway and returns its URL.
func startRelay(t testing.TB, gateway string) string {
	t.Helper()
	rl, err := relay.New(gateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rl)
	t.Cleanup(srv.Close)
	return srv.URL
}

func host(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// With a relay, every request that carries personal data goes to the
// relay; the backend's gateway hears only from the relay.
func TestThroughRelay(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	f := newFront(t, b.URL)
	relayURL := startRelay(t, f.URL+api.PathGateway)
	w := &wire{}
	c, err := client.New(ctx, client.Config{Server: f.URL, Relay: relayURL, Expectations: b.Expectations(), HTTPClient: w.client(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	a, cc := newDevice(t, b.URL), newDevice(t, b.URL)
	meet(t, a, cc, now.Add(-5*time.Hour), 20)
	secret := positive(t, c, b.Authority, cc, now)
	pr, err := c.PollResult(ctx, secret)
	if err != nil || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("poll through the relay: %+v, %v", pr, err)
	}
	if _, err := c.Upload(ctx, pr.UploadAuthorization, window(cc, c.Policy(), now)); err != nil {
		t.Fatalf("upload through the relay: %v", err)
	}
	if r, err := c.CheckExposure(ctx, window(a, c.Policy(), now)); err != nil || !r.Exposed {
		t.Fatalf("check through the relay: %+v, %v; want exposed", r, err)
	}
	if err := c.Decoy(ctx, 10); err != nil {
		t.Fatalf("decoy through the relay: %v", err)
	}
	if _, err := c.CheckTrace(ctx, gps.Trace{{Time: now.Unix(), Lat: 46.5, Lon: 6.6}}); err != nil {
		t.Fatalf("trace check through the relay: %v", err)
	}

	posts := w.posts()
	if len(posts) != 6 {
		t.Fatalf("%d POSTs, want 6", len(posts))
	}
	for _, e := range posts {
		if e.Host != host(t, relayURL) {
			t.Errorf("client posted to %s%s, not to the relay", e.Host, e.Path)
		}
	}
	var gateway int
	for _, h := range f.seen() {
		switch h.Path {
		case api.PathGateway:
			gateway++
			if h.UserAgent != "conftrace-relay" {
				t.Errorf("the gateway heard from %q, not from the relay", h.UserAgent)
			}
		case api.PathAttestation:
		default:
			t.Errorf("the backend saw a request for %s", h.Path)
		}
	}
	if gateway != len(posts) {
		t.Errorf("the gateway saw %d requests, the client sent %d", gateway, len(posts))
	}

	// A relay that is down or misconfigured fails the call; the client
	// never falls back to the gateway.
	down := httptest.NewServer(nil)
	down.Close()
	for _, r := range []string{down.URL, "http://[::1"} {
		c, err := client.New(ctx, client.Config{Server: f.URL, Relay: r, Expectations: b.Expectations()})
		if err != nil {
			t.Fatal(err)
		}
		hits := len(f.seen())
		if _, err := c.CheckExposure(ctx, contactlog.Report{}); err == nil {
			t.Errorf("CheckExposure with relay %q succeeded", r)
		}
		for _, h := range f.seen()[hits:] {
			if h.Path == api.PathGateway {
				t.Errorf("with relay %q unusable, the client went to the gateway directly", r)
			}
		}
	}
}

// A backend restart rotates the gateway's keys. A client made before it
// fetches the new bundle, verifies it as strictly as the first, and goes
// on; state sealed before the restart is still there.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	for _, viaRelay := range []bool{false, true} {
		name := "direct"
		if viaRelay {
			name = "relay"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testKeyRotation(t, viaRelay)
		})
	}
}

func testKeyRotation(t *testing.T, viaRelay bool) {
	ctx := t.Context()
	clk := newClock()
	dir := t.TempDir()
	b1 := startBackend(t, localbackend.Config{Dir: dir, Now: clk.Now})
	f := newFront(t, b1.URL)
	w := &wire{}
	cfg := client.Config{Server: f.URL, Expectations: b1.Expectations(), HTTPClient: w.client(), Now: clk.Now}
	if viaRelay {
		cfg.Relay = startRelay(t, f.URL+api.PathGateway)
	}
	c, err := client.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	a, cc := newDevice(t, b1.URL), newDevice(t, b1.URL)
	meet(t, a, cc, now.Add(-5*time.Hour), 20)
	secret := positive(t, c, b1.Authority, cc, now)
	pr, err := c.PollResult(ctx, secret)
	if err != nil || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("poll: %+v, %v", pr, err)
	}
	before := c.Identity().ReportData

	restart := func(prev *localbackend.Backend) *localbackend.Backend {
		t.Helper()
		if err := prev.Close(); err != nil {
			t.Fatal(err)
		}
		next := startBackend(t, localbackend.Config{Dir: dir, Authority: b1.Authority, Now: clk.Now})
		f.setTarget(t, next.URL)
		return next
	}
	b2 := restart(b1)
	gets, posts := countGets(w), len(w.posts())
	up, err := c.Upload(ctx, pr.UploadAuthorization, window(cc, c.Policy(), now))
	if err != nil || up.Sightings == 0 || up.Keys == 0 {
		t.Fatalf("upload after the restart: %+v, %v", up, err)
	}
	if c.Identity().ReportData == before {
		t.Error("the client did not adopt the new attested keys")
	}
	// One refusal of the old key, one bundle, one retry: no more.
	if g, p := countGets(w)-gets, len(w.posts())-posts; g != 1 || p != 2 {
		t.Errorf("recovering took %d bundle fetches and %d posts, want 1 and 2", g, p)
	}
	if stale := w.posts()[posts]; stale.Status != http.StatusUnprocessableEntity {
		t.Errorf("first post after the restart answered %d, want %d", stale.Status, http.StatusUnprocessableEntity)
	}

	// Concurrent requests that all hold the old key all recover.
	b3 := restart(b2)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range cap(errs) {
		wg.Go(func() {
			r, err := c.CheckExposure(ctx, window(a, c.Policy(), now))
			if err == nil && !r.Exposed {
				err = errors.New("A not exposed after restarts")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent check after a restart: %v", err)
		}
	}

	// A restart into other code is not followed: the new bundle must meet
	// the same expectations, and the client keeps its old keys.
	rogue := startBackend(t, localbackend.Config{Measurement: sha256Sum("a patched build"), Now: clk.Now})
	f.setTarget(t, rogue.URL)
	identity := c.Identity()
	_, err = c.CheckExposure(ctx, window(a, c.Policy(), now))
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Fatalf("check after a restart into other code: %v, want a measurement mismatch", err)
	}
	if c.Identity().ReportData != identity.ReportData {
		t.Error("the client adopted the keys of a backend it refused")
	}
	f.setTarget(t, b3.URL)
	if r, err := c.CheckExposure(ctx, window(a, c.Policy(), now)); err != nil || !r.Exposed {
		t.Fatalf("check back at the genuine backend: %+v, %v", r, err)
	}
}

func countGets(w *wire) int {
	n := 0
	for _, e := range w.all() {
		if e.Method == http.MethodGet && e.Path == api.PathAttestation {
			n++
		}
	}
	return n
}

// What goes wrong between the client and the backend surfaces as an error
// that says what, never as a panic or a wrong answer.
func TestTransportFailures(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	d := newDevice(t, b.URL)
	onGateway := func(edit func(r *http.Response, body []byte) (int, []byte)) func(*http.Response) error {
		return func(r *http.Response) error {
			if r.Request.URL.Path != api.PathGateway {
				return nil
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return err
			}
			status, body := edit(r, body)
			r.StatusCode, r.Status = status, ""
			replaceBody(r, body)
			return nil
		}
	}
	var mu sync.Mutex
	var previous []byte
	for _, tc := range []struct {
		name  string
		edit  func(*http.Response, []byte) (int, []byte)
		check func(error) bool
	}{
		{"bad gateway", func(*http.Response, []byte) (int, []byte) { return http.StatusBadGateway, []byte("upstream down") }, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "502") && strings.Contains(err.Error(), "upstream down") && !errors.As(err, new(*api.Error))
		}},
		{"altered answer", func(_ *http.Response, b []byte) (int, []byte) { b[len(b)-1] ^= 1; return http.StatusOK, b }, func(err error) bool { return errors.Is(err, ohttp.ErrDecrypt) }},
		{"empty answer", func(*http.Response, []byte) (int, []byte) { return http.StatusOK, nil }, func(err error) bool { return errors.Is(err, ohttp.ErrTruncated) }},
		{"replayed answer", func(_ *http.Response, b []byte) (int, []byte) {
			mu.Lock()
			defer mu.Unlock()
			if previous == nil {
				previous = bytes.Clone(b)
				return http.StatusOK, b
			}
			return http.StatusOK, previous
		}, func(err error) bool { return errors.Is(err, ohttp.ErrDecrypt) }},
		// A middlebox that keeps claiming the key is stale gets one fresh
		// bundle and one retry, not a loop.
		{"always stale", func(*http.Response, []byte) (int, []byte) {
			return http.StatusUnprocessableEntity, []byte("unknown key")
		}, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "does not know the attested key")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFront(t, b.URL)
			w := &wire{}
			c := newClient(t, f.URL, b, w, nil)
			f.setModify(onGateway(tc.edit))
			report := window(d, c.Policy(), time.Now())
			var err error
			for range 2 { // the second request gets the replayed answer
				if _, err = c.CheckExposure(t.Context(), report); err != nil {
					break
				}
			}
			if !tc.check(err) {
				t.Fatalf("CheckExposure: %v", err)
			}
			if n := len(w.posts()); n > 2 {
				t.Errorf("%d requests sent, want at most 2", n)
			}
		})
	}

	// The backend goes away after the client verified it. (No kept-alive
	// connection, so that the refusal is the connection's, not an EOF.)
	c, err := client.New(t.Context(), client.Config{Server: b.URL, Expectations: b.Expectations(), HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckExposure(t.Context(), contactlog.Report{}); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("CheckExposure with the backend down: %v, want ECONNREFUSED", err)
	}
}

// Every call gives up when its context ends, with the context's error.
func TestCallsHonourContext(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	f := newFront(t, b.URL)
	c := newClient(t, f.URL, b, nil, nil)
	now := time.Now()
	trace := gps.Trace{{Time: now.Unix(), Lat: 46.5, Lon: 6.6}}
	calls := map[string]func(context.Context) error{
		"SubmitResult": func(ctx context.Context) error { return c.SubmitResult(ctx, api.SignedResult{}) },
		"PollResult": func(ctx context.Context) error {
			_, err := c.PollResult(ctx, make([]byte, api.TestSecretSize))
			return err
		},
		"Upload": func(ctx context.Context) error {
			_, err := c.Upload(ctx, make([]byte, api.AuthorizationSize), contactlog.Report{})
			return err
		},
		"CheckExposure": func(ctx context.Context) error {
			_, err := c.CheckExposure(ctx, contactlog.Report{})
			return err
		},
		"ImportGAEN": func(ctx context.Context) error {
			_, err := c.ImportGAEN(ctx, []byte("PK"))
			return err
		},
		"SubmitTrace": func(ctx context.Context) error {
			_, err := c.SubmitTrace(ctx, api.SignedTrace{})
			return err
		},
		"CheckTrace": func(ctx context.Context) error {
			_, err := c.CheckTrace(ctx, trace)
			return err
		},
		"Decoy": func(ctx context.Context) error { return c.Decoy(ctx, 0) },
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for name, call := range calls {
		if err := call(canceled); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled", name, err)
		}
	}

	// A gateway that holds the request: the deadline ends the wait.
	f.setModify(func(r *http.Response) error {
		if r.Request.URL.Path == api.PathGateway {
			<-r.Request.Context().Done()
		}
		return nil
	})
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		err := call(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s against a silent gateway: %v, want context.DeadlineExceeded", name, err)
		}
	}
}
