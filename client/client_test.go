package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
)

// New must refuse every backend it cannot verify, with a reason, before
// it sends anything personal.
func TestNewRefuses(t *testing.T) {
	ctx := context.Background()
	serve := func(status int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != api.PathAttestation {
				t.Errorf("client asked for %s before verifying the backend", r.URL.Path)
			}
			w.WriteHeader(status)
			w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	// Port 1 (tcpmux) is not served here; a closed test server's port
	// could be reused by the servers this test starts.
	const down = "http://127.0.0.1:1"
	for _, tc := range []struct {
		name, url, want string
		exp             attest.Expectations
	}{
		{"no URL", "", "no server URL", attest.Expectations{}},
		{"unreachable", down, "fetching attestation", attest.Expectations{}},
		{"not found", serve(http.StatusNotFound, "nope"), "404", attest.Expectations{}},
		{"not JSON", serve(http.StatusOK, "<html>"), "attestation bundle", attest.Expectations{}},
		{"too large", serve(http.StatusOK, strings.Repeat(" ", maxBundleSize+10)), "larger than", attest.Expectations{}},
		{"simulated, not allowed", serve(http.StatusOK, `{"evidence":{"tee":"sim","data":""},"ohttp_keys":"","policy":{}}`), "simulated", attest.Expectations{}},
		{"unknown TEE", serve(http.StatusOK, `{"evidence":{"tee":"tpm","data":""},"ohttp_keys":"","policy":{}}`), "no verifier", attest.Expectations{}},
	} {
		_, err := New(ctx, Config{Server: tc.url, Expectations: tc.exp})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(ctx, Config{Server: serve(http.StatusOK, `{"evidence":{"tee":"sim","data":""},"ohttp_keys":"","policy":{}}`)}); !errors.Is(err, attest.ErrSimulated) {
		t.Errorf("simulated evidence: %v, want ErrSimulated", err)
	}
}

func TestDefaultVerifiersCoverEveryTEE(t *testing.T) {
	vs, err := DefaultVerifiers(attest.Expectations{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[attest.TEE]bool{}
	for _, v := range vs {
		got[v.TEE()] = true
	}
	for _, tee := range []attest.TEE{attest.Sim, attest.SGX, attest.TDX, attest.SNP} {
		if !got[tee] {
			t.Errorf("no default verifier for %s", tee)
		}
	}
}
