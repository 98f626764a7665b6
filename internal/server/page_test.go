package server

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// simBundle returns a bundle for gw's keys attested in a simulated TEE of
// the given measurement, under the default policy.
func simBundle(t *testing.T, gw *ohttp.Gateway, measurement []byte) attest.Bundle {
	t.Helper()
	tee, err := teesim.New(teesim.Options{Measurement: measurement})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		t.Fatal(err)
	}
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b, err := attest.NewBundle(t.Context(), tee, attest.Bundle{KeyConfigs: keys, Policy: doc, IssuedAt: now.Unix(), NotAfter: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The transparency page is served at "/" only, from the bundle served
// now: a key rotation (SetBundle) renders it again.
func TestTransparencyPage(t *testing.T) {
	key, err := ohttp.GenerateKey(1, ohttp.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	first, second := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	s, err := New(Config{Backend: &fakeBackend{}, Gateway: gw, Bundle: simBundle(t, gw, first)})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(method, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(method, path, nil)
		r.Host = "backend.example"
		s.ServeHTTP(rec, r)
		return rec
	}
	page := func() string {
		rec := serve(http.MethodGet, "/")
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("GET /: %d, %s", rec.Code, rec.Header().Get("Content-Type"))
		}
		return rec.Body.String()
	}
	if p := page(); !strings.Contains(p, hex.EncodeToString(first)) || !strings.Contains(p, "Simulated TEE: no protection.") {
		t.Fatal("the page does not show the served bundle's measurement, or that it is simulated")
	}
	if err := s.SetBundle(simBundle(t, gw, second), gw); err != nil {
		t.Fatal(err)
	}
	if p := page(); !strings.Contains(p, hex.EncodeToString(second)) || strings.Contains(p, hex.EncodeToString(first)) {
		t.Error("after SetBundle the page does not show the new bundle's measurement alone")
	}
	if rec := serve(http.MethodGet, "/index.html"); rec.Code != http.StatusNotFound {
		t.Errorf("GET /index.html: %d, want 404", rec.Code)
	}
	if rec := serve(http.MethodPost, "/"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", rec.Code)
	}
	if rec := serve(http.MethodHead, "/"); rec.Code != http.StatusOK {
		t.Errorf("HEAD /: %d, want 200", rec.Code)
	}
}
