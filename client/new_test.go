package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/attest/tdx"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
	simtee "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// onlyAttestationFetched fails the test if the client did anything but
// fetch the attestation bundle: nothing may be sent before it verified.
func onlyAttestationFetched(t *testing.T, w *wire) {
	t.Helper()
	for _, e := range w.all() {
		if e.Method != http.MethodGet || e.Path != api.PathAttestation {
			t.Errorf("client sent %s %s before it trusted the backend", e.Method, e.Path)
		}
	}
}

func TestNewAcceptsAttestedBackend(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	w := &wire{}
	// A trailing slash is how people paste base URLs.
	c := newClient(t, b.URL+"/", b, w, nil)
	id := c.Identity()
	if id.TEE != attest.Sim || string(id.Measurement) != string(testMeasurement) {
		t.Errorf("Identity() = %s %x, want sim %x", id.TEE, id.Measurement, testMeasurement)
	}
	if got := c.Policy(); got.RetentionDays != b.Policy.RetentionDays || len(got.Authorities) != 1 || !got.Authorities[0].PublicKey.Equal(b.Authority.PublicKey()) {
		t.Errorf("Policy() = %+v, want the backend's with authority %s", got, b.Authority.Name)
	}
	want, err := b.Policy.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if string(c.PolicyDocument()) != string(want) {
		t.Errorf("PolicyDocument() = %s, want %s", c.PolicyDocument(), want)
	}
	onlyAttestationFetched(t, w)
	if n := len(w.all()); n != 1 {
		t.Errorf("New made %d requests, want 1", n)
	}
}

func TestNewRefusesWrongMeasurement(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	w := &wire{}
	other := sha256Sum("some other build")
	_, err := client.New(t.Context(), client.Config{
		Server:       b.URL,
		Expectations: attest.Expectations{Measurements: [][]byte{other}, AllowSimulated: true},
		HTTPClient:   w.client(),
	})
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Fatalf("New with another measurement: %v, want a measurement mismatch", err)
	}
	onlyAttestationFetched(t, w)
}

func TestNewRefusesSimulatedUnlessAllowed(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	w := &wire{}
	_, err := client.New(t.Context(), client.Config{
		Server:       b.URL,
		Expectations: attest.Expectations{Measurements: [][]byte{testMeasurement}},
		HTTPClient:   w.client(),
	})
	if !errors.Is(err, attest.ErrSimulated) {
		t.Fatalf("New without AllowSimulated: %v, want attest.ErrSimulated", err)
	}
	onlyAttestationFetched(t, w)

	// Verifiers made for expectations that refuse simulation keep refusing
	// it even when the expectations passed along allow it.
	vs, err := client.DefaultVerifiers(attest.Expectations{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.New(t.Context(), client.Config{Server: b.URL, Expectations: expectations(), Verifiers: vs})
	if !errors.Is(err, attest.ErrSimulated) {
		t.Fatalf("New with verifiers that refuse simulation: %v, want attest.ErrSimulated", err)
	}
}

// A proxy between the client and the backend (a TLS terminator, a CDN)
// must not be able to slip in its own keys or policy.
func TestNewRefusesTamperedBundle(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	attacker, err := ohttp.GenerateKey(7, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	attackerKeys, err := ohttp.MarshalKeyConfigs([]ohttp.KeyConfig{attacker.KeyConfig()})
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := authority.GenerateKey("mallory")
	if err != nil {
		t.Fatal(err)
	}
	withMallory := b.Policy
	withMallory.Authorities = append(withMallory.Authorities, policy.Authority{Name: mallory.Name, PublicKey: mallory.PublicKey()})
	malloryDoc, err := withMallory.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tamper func(*attest.Bundle)
		check  func(error) bool
	}{
		{"own keys", func(bd *attest.Bundle) { bd.KeyConfigs = attackerKeys }, isMismatch("report_data")},
		{"own authority", func(bd *attest.Bundle) { bd.Policy = malloryDoc }, isMismatch("report_data")},
		{"longer retention", func(bd *attest.Bundle) {
			bd.Policy = json.RawMessage(strings.Replace(string(bd.Policy), `"retention_days":14`, `"retention_days":365`, 1))
		}, isMismatch("report_data")},
		{"altered evidence", func(bd *attest.Bundle) { bd.Evidence.Data[len(bd.Evidence.Data)-1] ^= 1 }, func(err error) bool { return errors.Is(err, sim.ErrBadSignature) }},
		{"other TEE claimed", func(bd *attest.Bundle) { bd.Evidence.TEE = attest.TDX }, func(err error) bool { return errors.Is(err, tdx.ErrMalformed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFront(t, b.URL)
			f.setModify(rewriteBundle(tc.tamper))
			w := &wire{}
			_, err := client.New(t.Context(), client.Config{Server: f.URL, Expectations: b.Expectations(), HTTPClient: w.client()})
			if !tc.check(err) {
				t.Fatalf("New through a proxy that changed the bundle: %v", err)
			}
			onlyAttestationFetched(t, w)
			if len(w.all()) == 0 {
				t.Fatal("no bundle fetched")
			}
		})
	}

	// Re-encoding the policy with other whitespace is not tampering: the
	// binding hashes its canonical form.
	f := newFront(t, b.URL)
	f.setModify(rewriteBundle(func(bd *attest.Bundle) {
		var out bytes.Buffer
		if err := json.Indent(&out, bd.Policy, "", "  "); err != nil {
			t.Error(err)
		}
		bd.Policy = out.Bytes()
	}))
	if _, err := client.New(t.Context(), client.Config{Server: f.URL, Expectations: b.Expectations()}); err != nil {
		t.Fatalf("New through a proxy that re-indented the policy: %v", err)
	}
}

func isMismatch(field string) func(error) bool {
	return func(err error) bool {
		var me *attest.MismatchError
		return errors.As(err, &me) && me.Field == field
	}
}

// rewriteBundle returns a front modifier that edits attestation bundles.
func rewriteBundle(edit func(*attest.Bundle)) func(*http.Response) error {
	return func(r *http.Response) error {
		if r.Request.URL.Path != api.PathAttestation {
			return nil
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		var bd attest.Bundle
		if err := json.Unmarshal(body, &bd); err != nil {
			return err
		}
		edit(&bd)
		if body, err = json.Marshal(bd); err != nil {
			return err
		}
		replaceBody(r, body)
		return nil
	}
}

// Simulated evidence proves nothing: anyone can sign some. A client that
// pins the simulated platform's key (Config.Verifiers) refuses evidence
// from any other.
func TestNewPinnedSimPlatformRefusesForgery(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	doc, err := b.Policy.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	forged := forgeBundle(t, testMeasurement, nil, doc)
	f := newFront(t, b.URL)
	pinned := []attest.Verifier{sim.NewVerifier(sim.VerifierOptions{AllowSimulated: true, PlatformKeys: []ed25519.PublicKey{b.TEE.PlatformKey()}})}
	if _, err := client.New(t.Context(), client.Config{Server: f.URL, Expectations: b.Expectations(), Verifiers: pinned}); err != nil {
		t.Fatalf("pinned client and the genuine backend: %v", err)
	}
	f.setModify(rewriteBundle(func(bd *attest.Bundle) { *bd = forged }))
	if _, err := client.New(t.Context(), client.Config{Server: f.URL, Expectations: b.Expectations(), Verifiers: pinned}); !errors.Is(err, sim.ErrUnknownPlatform) {
		t.Fatalf("pinned client and a forged bundle: %v, want sim.ErrUnknownPlatform", err)
	}
}

// forgeBundle attests keys (fresh ones if nil) and doc with a simulated TEE
// of its own, as anyone can, valid from now for a day.
func forgeBundle(t testing.TB, measurement, keys, doc []byte) attest.Bundle {
	t.Helper()
	now := time.Now()
	return forgeBundleAt(t, measurement, keys, doc, now, now.Add(24*time.Hour), nil)
}

// forgeBundleAt is forgeBundle with a validity and a release statement of
// the caller's.
func forgeBundleAt(t testing.TB, measurement, keys, doc []byte, issuedAt, notAfter time.Time, rel []byte) attest.Bundle {
	t.Helper()
	tee, err := simtee.New(simtee.Options{Measurement: measurement})
	if err != nil {
		t.Fatal(err)
	}
	if keys == nil {
		k, err := ohttp.GenerateKey(0, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
		if err != nil {
			t.Fatal(err)
		}
		if keys, err = ohttp.MarshalKeyConfigs([]ohttp.KeyConfig{k.KeyConfig()}); err != nil {
			t.Fatal(err)
		}
	}
	bd, err := attest.NewBundle(context.Background(), tee, attest.Bundle{
		KeyConfigs: keys, Policy: doc, IssuedAt: issuedAt.Unix(), NotAfter: notAfter.Unix(), Release: rel,
	})
	if err != nil {
		t.Fatal(err)
	}
	return bd
}

// serve answers every request with status and body, and fails the test if
// the client asks for anything but the bundle.
func serve(t *testing.T, status int, body []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != api.PathAttestation {
			t.Errorf("client sent %s %s to an unverified server", r.Method, r.URL.Path)
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// New refuses servers that are not conftrace backends, or not reachable,
// each with an error that says why.
func TestNewRefusesNonBackends(t *testing.T) {
	t.Parallel()
	down := httptest.NewServer(nil)
	down.Close()
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	// Key configurations the client cannot use: a known KEM with only an
	// unknown AEAD.
	x, err := ohttp.GenerateKey(0, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	unusable := x.KeyConfig()
	unusable.Suites = []ohttp.SymmetricSuite{{KDF: ohttp.KDFHKDFSHA256, AEAD: 0x7777}}
	unusableKeys, err := ohttp.MarshalKeyConfigs([]ohttp.KeyConfig{unusable})
	if err != nil {
		t.Fatal(err)
	}
	syntax := func(err error) bool { var se *json.SyntaxError; return errors.As(err, &se) }
	says := func(s string) func(error) bool {
		return func(err error) bool { return err != nil && strings.Contains(err.Error(), s) }
	}
	for _, tc := range []struct {
		name   string
		server string
		check  func(error) bool
	}{
		{"empty URL", "", says("no server URL")},
		{"bad URL", "http://[::1", says("fetching attestation")},
		{"unreachable", down.URL, func(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }},
		{"not found", serve(t, http.StatusNotFound, []byte("404 page not found")), says("404 Not Found")},
		{"server error", serve(t, http.StatusInternalServerError, []byte(`{"evidence":{}}`)), says("500 Internal Server Error")},
		{"web page", serve(t, http.StatusOK, []byte("<!doctype html><title>Welcome to nginx!</title>")), syntax},
		{"plain text", serve(t, http.StatusOK, []byte("ok\n")), syntax},
		{"JSON of something else", serve(t, http.StatusOK, []byte(`[{"id":1}]`)), func(err error) bool { var te *json.UnmarshalTypeError; return errors.As(err, &te) }},
		{"JSON without evidence", serve(t, http.StatusOK, []byte(`{"status":"up"}`)), says("bundle policy is not valid JSON")},
		{"truncated bundle", serve(t, http.StatusOK, marshal(t, forgeBundle(t, testMeasurement, nil, doc))[:200]), syntax},
		{"garbage evidence", serve(t, http.StatusOK, []byte(`{"evidence":{"tee":"sim","data":"AAAA"},"ohttp_keys":"AAAA","policy":{}}`)), func(err error) bool { return errors.Is(err, sim.ErrTruncated) }},
		{"huge", serve(t, http.StatusOK, make([]byte, 1<<20+1)), says("larger than")},
		{"unreadable attested policy", serve(t, http.StatusOK, marshal(t, forgeBundle(t, testMeasurement, nil, []byte(`{"version":2}`)))), func(err error) bool { return errors.Is(err, policy.ErrInvalid) }},
		{"unusable attested keys", serve(t, http.StatusOK, marshal(t, forgeBundle(t, testMeasurement, unusableKeys, doc))), func(err error) bool { return errors.Is(err, ohttp.ErrUnsupportedSuite) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(t.Context(), client.Config{Server: tc.server, Expectations: expectations()})
			if !tc.check(err) {
				t.Fatalf("New: %v", err)
			}
			if c != nil {
				t.Fatal("New returned a client along with its error")
			}
		})
	}
}

// A server that never answers ties New up only as long as its context.
func TestNewHonoursContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := client.New(ctx, client.Config{Server: srv.URL, Expectations: expectations()}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New against a silent server: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("New took %s to give up", d)
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := client.New(canceled, client.Config{Server: srv.URL, Expectations: expectations()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("New with a canceled context: %v, want context.Canceled", err)
	}

	// So does the HTTP client's own timeout.
	hc := &http.Client{Timeout: 100 * time.Millisecond}
	var ne interface{ Timeout() bool }
	if _, err := client.New(t.Context(), client.Config{Server: srv.URL, Expectations: expectations(), HTTPClient: hc}); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("New with a 100 ms HTTP client: %v, want a timeout", err)
	}
}
