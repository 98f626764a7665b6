package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
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
	"github.com/conftrace/conftrace/policy"
)

// startRelay runs an Oblivious HTTP relay to gateway and returns its URL.
// startRelay runs a relay to gateway; with now, its cache follows that
// clock.
func startRelay(t testing.TB, gateway string, now ...func() time.Time) string {
	t.Helper()
	rl, err := relay.New(gateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range now {
		rl.SetClock(n)
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

// With a relay, every request goes to the relay, the bundle fetch as well
// as those that carry personal data; the backend hears only from the relay.
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
	if g := countGets(w); g != 1 {
		t.Errorf("%d bundle fetches, want 1", g)
	}
	for _, e := range w.all() {
		if e.Host != host(t, relayURL) {
			t.Errorf("client sent %s %s to %s, not to the relay", e.Method, e.Path, e.Host)
		}
	}
	var gateway, bundles int
	for _, h := range f.seen() {
		if h.UserAgent != "conftrace-relay" {
			t.Errorf("the backend heard %s %s from %q, not from the relay", h.Method, h.Path, h.UserAgent)
		}
		switch h.Path {
		case api.PathGateway:
			gateway++
		case api.PathAttestation:
			bundles++
		default:
			t.Errorf("the backend saw a request for %s", h.Path)
		}
	}
	if gateway != len(posts) || bundles != 1 {
		t.Errorf("the backend saw %d gateway requests and %d bundle fetches, the client sent %d and 1", gateway, bundles, len(posts))
	}

	// A relay that is down or misconfigured fails New; the client never
	// falls back to the backend.
	down := httptest.NewServer(nil)
	down.Close()
	hits := len(f.seen())
	for _, r := range []string{down.URL, "http://[::1", "relay.example", "ftp://relay.example"} {
		if _, err := client.New(ctx, client.Config{Server: f.URL, Relay: r, Expectations: b.Expectations()}); err == nil {
			t.Errorf("New with relay %q succeeded", r)
		}
	}
	// Nor when the relay goes away after New.
	rl, err := relay.New(f.URL+api.PathGateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone := httptest.NewServer(rl)
	c, err = client.New(ctx, client.Config{Server: f.URL, Relay: gone.URL, Expectations: b.Expectations(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	if _, err := c.CheckExposure(ctx, contactlog.Report{}); err == nil {
		t.Error("CheckExposure with the relay gone succeeded")
	}
	for _, h := range f.seen()[hits:] {
		if h.UserAgent != "conftrace-relay" {
			t.Errorf("with the relay unusable, the client sent %s %s to the backend directly", h.Method, h.Path)
		}
	}
}

// dialed records the local addresses of the connections a client opens.
type dialed struct {
	mu    sync.Mutex
	local map[string]bool
}

func (d *dialed) transport(t testing.TB) *http.Transport {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			d.mu.Lock()
			if d.local == nil {
				d.local = make(map[string]bool)
			}
			d.local[conn.LocalAddr().String()] = true
			d.mu.Unlock()
		}
		return conn, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func (d *dialed) addrs() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.local)
}

// rotatingPolicy is the default policy with bundles valid for 6 hours, the
// least a policy allows.
func rotatingPolicy() *policy.Policy {
	p := policy.Default()
	p.BundleHours = 6
	return &p
}

// rotate moves clk past the validity of every bundle b served so far and
// has b rotate its keys: the key a client verified before is no longer
// held, and its bundle has expired.
func rotate(t testing.TB, b *localbackend.Backend, clk *clock) {
	t.Helper()
	clk.Add(b.Policy.BundleLifetime() + time.Minute)
	if err := b.Service.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// With a relay, no request reaches the backend on a connection of the
// client's: not the bundle fetch at New, not the fetch after the keys
// rotated, not the encapsulated requests. Were any to, the backend would
// learn the phone's address.
func TestRelayHidesClientFromBackend(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	dir := t.TempDir()
	b1 := startBackend(t, localbackend.Config{Dir: dir, Now: clk.Now, Policy: rotatingPolicy()})
	f := newFront(t, b1.URL)
	relayURL := startRelay(t, f.URL+api.PathGateway, clk.Now)
	conns := &dialed{}
	w := &wire{rt: conns.transport(t)}
	c, err := client.New(ctx, client.Config{Server: f.URL, Relay: relayURL, Expectations: b1.Expectations(), HTTPClient: w.client(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, b1.URL)
	if _, err := c.CheckExposure(ctx, window(d, c.Policy(), clk.Now())); err != nil {
		t.Fatalf("check through the relay: %v", err)
	}
	before := c.Identity().ReportData

	// A restart keeps the keys; a rotation retires the client's.
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := startBackend(t, localbackend.Config{Dir: dir, Authority: b1.Authority, Now: clk.Now, Policy: rotatingPolicy()})
	f.setTarget(t, b2.URL)
	if _, err := c.CheckExposure(ctx, window(d, c.Policy(), clk.Now())); err != nil {
		t.Fatalf("check after the restart: %v", err)
	}
	rotate(t, b2, clk)
	if _, err := c.CheckExposure(ctx, window(d, c.Policy(), clk.Now())); err != nil {
		t.Fatalf("check after the rotation: %v", err)
	}
	if c.Identity().ReportData == before {
		t.Error("the client did not adopt the rotated keys")
	}
	if g := countGets(w); g != 2 {
		t.Errorf("%d bundle fetches, want 2 (at New and after the rotation)", g)
	}
	for _, e := range w.all() {
		if e.Host != host(t, relayURL) {
			t.Errorf("the client sent %s %s to %s, not to the relay", e.Method, e.Path, e.Host)
		}
	}

	local := conns.addrs()
	if len(local) == 0 {
		t.Fatal("no connection of the client recorded")
	}
	var bundles int
	for _, h := range f.seen() {
		if local[h.RemoteAddr] {
			t.Errorf("the backend saw %s %s on the client's own connection", h.Method, h.Path)
		}
		if h.UserAgent != "conftrace-relay" {
			t.Errorf("the backend heard %s %s from %q, not from the relay", h.Method, h.Path, h.UserAgent)
		}
		if h.Path == api.PathAttestation {
			bundles++
		}
	}
	if bundles != 2 {
		t.Errorf("the backend served %d bundles through the relay, want 2", bundles)
	}
}

// A backend restart keeps the gateway's keys: a client made before it goes
// on without fetching the bundle, and state sealed before it is still
// there. When the keys rotate, a client whose key the gateway dropped
// fetches the new bundle, verifies it as strictly as the first, and goes
// on.
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
	b1 := startBackend(t, localbackend.Config{Dir: dir, Now: clk.Now, Policy: rotatingPolicy()})
	f := newFront(t, b1.URL)
	w := &wire{}
	cfg := client.Config{Server: f.URL, Expectations: b1.Expectations(), HTTPClient: w.client(), Now: clk.Now}
	if viaRelay {
		cfg.Relay = startRelay(t, f.URL+api.PathGateway, clk.Now)
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
		next := startBackend(t, localbackend.Config{Dir: dir, Authority: b1.Authority, Now: clk.Now, Policy: rotatingPolicy()})
		f.setTarget(t, next.URL)
		return next
	}
	b2 := restart(b1)
	gets, posts := countGets(w), len(w.posts())
	up, err := c.Upload(ctx, pr.UploadAuthorization, window(cc, c.Policy(), now))
	if err != nil || up.Sightings == 0 || up.Keys == 0 {
		t.Fatalf("upload after the restart: %+v, %v", up, err)
	}
	if c.Identity().ReportData != before {
		t.Error("a restart changed the attested keys")
	}
	if g, p := countGets(w)-gets, len(w.posts())-posts; g != 0 || p != 1 {
		t.Errorf("the upload after a restart took %d bundle fetches and %d posts, want 0 and 1", g, p)
	}
	// Written by the journal's next flush; an upload not yet durable
	// would not survive the next restart.
	flushUntil(t, b2, clk, up.DurableBy)
	b3 := restart(b2)
	if r, err := c.CheckExposure(ctx, window(a, c.Policy(), now)); err != nil || !r.Exposed {
		t.Fatalf("check after a restart: %+v, %v; want the sealed upload to expose A", r, err)
	}

	// The keys rotate on the attested schedule: the client's bundle has
	// expired, so it fetches the new one before it sends: one bundle, one
	// post, no refusal.
	rotate(t, b3, clk)
	gets, posts = countGets(w), len(w.posts())
	if r, err := c.CheckExposure(ctx, window(a, c.Policy(), now)); err != nil || !r.Exposed {
		t.Fatalf("check after the keys rotated: %+v, %v", r, err)
	}
	if c.Identity().ReportData == before {
		t.Error("the client did not adopt the new attested keys")
	}
	if g, p := countGets(w)-gets, len(w.posts())-posts; g != 1 || p != 1 || w.posts()[posts].Status != http.StatusOK {
		t.Errorf("the check after a rotation took %d bundle fetches and %d posts (first answered %d), want 1 and 1 (200)", g, p, w.posts()[posts].Status)
	}

	// A backend that drops the keys early (here: restarted under another
	// policy, whose bundles never carry keys verified under the old one)
	// refuses the client's key as unknown: one refusal, one bundle, one
	// retry.
	shorter := rotatingPolicy()
	shorter.RetentionDays = 13
	if err := b3.Close(); err != nil {
		t.Fatal(err)
	}
	b3 = startBackend(t, localbackend.Config{Dir: dir, Authority: b1.Authority, Now: clk.Now, Policy: shorter})
	f.setTarget(t, b3.URL)
	gets, posts = countGets(w), len(w.posts())
	if r, err := c.CheckExposure(ctx, window(a, c.Policy(), now)); err != nil || !r.Exposed {
		t.Fatalf("check after a restart under another policy: %+v, %v", r, err)
	}
	if g, p := countGets(w)-gets, len(w.posts())-posts; g != 1 || p != 2 {
		t.Errorf("recovering took %d bundle fetches and %d posts, want 1 and 2", g, p)
	}
	if stale := w.posts()[posts]; stale.Status != http.StatusUnprocessableEntity {
		t.Errorf("first post after the policy changed answered %d, want %d", stale.Status, http.StatusUnprocessableEntity)
	}
	if c.Policy().RetentionDays != 13 {
		t.Errorf("the client enforces retention_days %d, want the new policy's 13", c.Policy().RetentionDays)
	}

	// Concurrent requests whose bundle expired fetch one new bundle, and
	// all go on.
	rotate(t, b3, clk)
	gets = countGets(w)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range cap(errs) {
		wg.Go(func() {
			r, err := c.CheckExposure(ctx, window(a, c.Policy(), now))
			if err == nil && !r.Exposed {
				err = errors.New("A not exposed after the rotation")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent check after a rotation: %v", err)
		}
	}
	if g := countGets(w) - gets; g != 1 {
		t.Errorf("%d concurrent checks after a rotation fetched %d bundles, want 1", cap(errs), g)
	}

	// A backend of other code at the address is not followed: its bundle
	// must meet the same expectations, and the client keeps its keys. (Its
	// clock is a month off, so that its keys' IDs are not the genuine
	// one's, and it says the client's key is unknown.)
	rogue := startBackend(t, localbackend.Config{Measurement: sha256Sum("a patched build"), Policy: rotatingPolicy(),
		Now: func() time.Time { return clk.Now().Add(30 * 24 * time.Hour) }})
	f.setTarget(t, rogue.URL)
	identity := c.Identity()
	_, err = c.CheckExposure(ctx, window(a, c.Policy(), now))
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Fatalf("check against a backend of other code: %v, want a measurement mismatch", err)
	}
	if c.Identity().ReportData != identity.ReportData {
		t.Error("the client adopted the keys of a backend it refused")
	}
	f.setTarget(t, b3.URL)
	if r, err := c.CheckExposure(ctx, window(a, c.Policy(), now)); err != nil || !r.Exposed {
		t.Fatalf("check back at the genuine backend: %+v, %v", r, err)
	}
	if viaRelay {
		for _, e := range w.all() {
			if e.Host != host(t, cfg.Relay) {
				t.Errorf("the client sent %s %s to %s, not to the relay", e.Method, e.Path, e.Host)
			}
		}
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

	// An answer cut short: the connection ends before the length the
	// answer announced.
	t.Run("answer cut short", func(t *testing.T) {
		// A middlebox that forwards to the backend and ends the connection
		// ten bytes into the gateway's answer.
		cut := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			req, err := http.NewRequestWithContext(r.Context(), r.Method, b.URL+r.URL.Path, r.Body)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header = r.Header.Clone()
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
			if r.URL.Path == api.PathGateway {
				body = body[:10]
			}
			rw.Write(body)
		}))
		t.Cleanup(cut.Close)
		c := newClient(t, cut.URL, b, nil, nil)
		if _, err := c.CheckExposure(t.Context(), window(d, c.Policy(), time.Now())); err == nil || !strings.Contains(err.Error(), "reading response") {
			t.Fatalf("CheckExposure: %v, want an error reading the response", err)
		}
	})

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
