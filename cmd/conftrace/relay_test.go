package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/cmdtest"
)

func TestRelayForwardsToGateway(t *testing.T) {
	b := newTestBackend(t)
	// Count what reaches the backend through the relay's gateway URL.
	var forwarded, bundles atomic.Int32
	backend, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(backend)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case api.PathGateway:
			forwarded.Add(1)
		case api.PathAttestation:
			bundles.Add(1)
		}
		if got := r.Header.Get("X-Forwarded-For") + r.Header.Get("Forwarded"); got != "" {
			t.Errorf("the relay told the backend the client's address: %q", got)
		}
		if ua := r.Header.Get("User-Agent"); ua != "conftrace-relay" {
			t.Errorf("the backend heard %s %s from %q, not from the relay", r.Method, r.URL.Path, ua)
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	// A bare URL gets the gateway path.
	rl := startServer(t, runRelay, "--listen", "127.0.0.1:0", "--gateway", front.URL)
	l := cmdtest.LogLine(rl.Log.String(), "listening")
	if l["gateway"] != front.URL+"/v1/gateway" || l["backend"] != front.URL {
		t.Errorf("relay logged gateway %q and backend %q, want %s/v1/gateway and %[3]s", l["gateway"], l["backend"], front.URL)
	}
	// The client fetches the bundle through the relay too: with a relay,
	// Server only names the backend and is never contacted.
	c, err := client.New(t.Context(), client.Config{
		Server:       "http://backend.invalid",
		Relay:        rl.URL(),
		Expectations: attest.Expectations{AllowSimulated: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.CheckExposure(t.Context(), contactlog.Report{})
	if err != nil {
		t.Fatalf("exposure check through the relay: %v", err)
	}
	if resp.Exposed || resp.LastExposure != "" || resp.Days != nil {
		t.Errorf("answer through the relay: %+v", resp)
	}
	if forwarded.Load() != 1 || bundles.Load() != 1 {
		t.Errorf("%d requests reached the gateway and %d the bundle, want 1 and 1 (through the relay)", forwarded.Load(), bundles.Load())
	}
	if err := rl.Stop(); err != nil {
		t.Errorf("relay returned %v on shutdown", err)
	}
}

// The relay serves the backend's bundle and key configurations as the
// backend does.
func TestRelayServesBundle(t *testing.T) {
	b := newTestBackend(t)
	rl := startServer(t, runRelay, "--listen", "127.0.0.1:0", "--gateway", b.url)
	for _, path := range []string{api.PathAttestation, api.PathKeys} {
		want, wantType := getPublic(t, b.url+path)
		got, gotType := getPublic(t, rl.URL()+path)
		if !bytes.Equal(got, want) || gotType != wantType {
			t.Errorf("relay served %s as %d bytes of %s, the backend %d bytes of %s", path, len(got), gotType, len(want), wantType)
		}
	}
	// What it serves is a bundle a client accepts.
	var bundle attest.Bundle
	got, _ := getPublic(t, rl.URL()+api.PathAttestation)
	if err := json.Unmarshal(got, &bundle); err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyBundle(t.Context(), bundle, time.Now(), b.Expectations(), sim.NewVerifier(sim.VerifierOptions{AllowSimulated: true})); err != nil {
		t.Errorf("the bundle the relay served does not verify: %v", err)
	}
	if err := rl.Stop(); err != nil {
		t.Errorf("relay returned %v on shutdown", err)
	}
}

// getPublic GETs url and returns the body and its content type.
func getPublic(t *testing.T, url string) ([]byte, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return body, resp.Header.Get("Content-Type")
}

func TestRelayErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no gateway", nil, "--gateway is required", true},
		{"not a URL", []string{"--gateway", "::"}, "want an http or https URL", true},
		{"no scheme", []string{"--gateway", "backend.example/v1/gateway"}, "want an http or https URL", true},
		{"other scheme", []string{"--gateway", "ftp://backend.example"}, "want an http or https URL", true},
		{"empty listen", []string{"--gateway", "http://backend.example", "--listen", ""}, "--listen is empty", true},
		{"bad listen", []string{"--gateway", "http://backend.example", "--listen", "127.0.0.1:99999"}, "invalid port", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := cliRun(t, runRelay, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
		})
	}
}
