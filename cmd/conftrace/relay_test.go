package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/cmdtest"
)

func TestRelayForwardsToGateway(t *testing.T) {
	b := newTestBackend(t)
	// Count what reaches the backend through the relay's gateway URL.
	var forwarded atomic.Int32
	backend, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(backend)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Add(1)
		if got := r.Header.Get("X-Forwarded-For") + r.Header.Get("Forwarded"); got != "" {
			t.Errorf("the relay told the gateway the client's address: %q", got)
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	// A bare URL gets the gateway path.
	rl := startServer(t, runRelay, "--listen", "127.0.0.1:0", "--gateway", front.URL)
	if l := cmdtest.LogLine(rl.Log.String(), "listening"); l["gateway"] != front.URL+"/v1/gateway" {
		t.Errorf("relay logged gateway %q, want %s/v1/gateway", l["gateway"], front.URL)
	}
	c, err := client.New(t.Context(), client.Config{
		Server:       b.url,
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
	if resp.Exposed || len(resp.Days) != 14 {
		t.Errorf("answer through the relay: %+v", resp)
	}
	if forwarded.Load() != 1 {
		t.Errorf("%d requests reached the gateway, want 1 (through the relay)", forwarded.Load())
	}
	if err := rl.Stop(); err != nil {
		t.Errorf("relay returned %v on shutdown", err)
	}
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
