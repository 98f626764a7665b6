package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
)

// fetchBundle reads the backend's attestation bundle directly.
func fetchBundle(t *testing.T, url string) attest.Bundle {
	t.Helper()
	resp, err := http.Get(url + api.PathAttestation)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b attest.Bundle
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyJSON(t *testing.T) {
	b := newTestBackend(t)
	measurement := b.measurement()
	out := mustRun(t, runVerify, "--server", b.url, "--allow-simulated", "--measurement", measurement, "--json")

	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("verify --json printed %q: %v", out, err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"certificate_key", "debug", "issued_at", "measurement", "not_after", "policy", "product_id", "report_data", "signer", "svn", "tcb_status", "tee"}
	if !slices.Equal(keys, want) {
		t.Errorf("verify --json keys %v, want %v", keys, want)
	}
	var v struct {
		TEE, Measurement, Signer, ReportData string
		Debug                                bool
	}
	json.Unmarshal(raw["tee"], &v.TEE)
	json.Unmarshal(raw["measurement"], &v.Measurement)
	json.Unmarshal(raw["signer"], &v.Signer)
	json.Unmarshal(raw["report_data"], &v.ReportData)
	json.Unmarshal(raw["debug"], &v.Debug)
	if v.TEE != "sim" || v.Measurement != measurement || v.Signer != "" || v.Debug {
		t.Errorf("verify --json: tee %q measurement %q signer %q debug %t; want sim, %s, none, false", v.TEE, v.Measurement, v.Signer, v.Debug, measurement)
	}
	// The report data printed is the binding of the served keys and policy.
	bundle := fetchBundle(t, b.url)
	rd, err := attest.BindReportData(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if v.ReportData != hex.EncodeToString(rd[:]) {
		t.Errorf("report_data %s, want the bundle binding %x", v.ReportData, rd[:])
	}
	var compact bytes.Buffer
	json.Compact(&compact, raw["policy"])
	if compact.String() != string(bundle.Policy) {
		t.Errorf("policy %s, want the attested %s", raw["policy"], bundle.Policy)
	}
}

func TestVerifyText(t *testing.T) {
	b := newTestBackend(t)
	out := mustRun(t, runVerify, "--server", b.url, "--allow-simulated")
	for _, want := range []string{
		"SIMULATED",
		"measurement            " + b.measurement() + "\n",
		"debug                  false\n",
		"policy sha256          " + b.policySHA256() + "\n",
		"authority              lab (ed25519 ",
		"retention              14 days\n",
		"risk buckets           attenuation <= 55/63/73 dB, weights 100/100/50/0 %\n",
		"risk threshold         15 weighted minutes a day\n",
		"max order              1 (contacts of confirmed cases only)\n",
		"certificates           valid 336h0m0s\n",
		"statistics             (none released)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	// The certificate key printed is the one the bundle binds.
	bundle := fetchBundle(t, b.url)
	if want := fmt.Sprintf("certificate key        ed25519 %x\n", []byte(bundle.CertificateKey)); len(bundle.CertificateKey) == 0 || !strings.Contains(out, want) {
		t.Errorf("verify output lacks %q:\n%s", want, out)
	}
}

func TestVerifyErrors(t *testing.T) {
	b := newTestBackend(t)
	notConftrace := httptest.NewServer(http.NotFoundHandler())
	defer notConftrace.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{")) }))
	defer garbage.Close()
	other := strings.Repeat("cd", 48)
	tests := []struct {
		name   string
		args   []string
		want   string
		usage  bool
		target error
	}{
		{"no server", []string{"--allow-simulated"}, "--server or --evidence is required", true, nil},
		{"bad measurement", []string{"--server", b.url, "--measurement", "nothex"}, "not valid hex", true, nil},
		{"odd measurement", []string{"--server", b.url, "--measurement", "abc"}, "not valid hex", true, nil},
		{"simulated not allowed", []string{"--server", b.url}, "simulated", false, attest.ErrSimulated},
		{"simulated not allowed json", []string{"--server", b.url, "--json"}, "simulated", false, attest.ErrSimulated},
		{"wrong measurement", []string{"--server", b.url, "--allow-simulated", "--measurement", other}, "measurement mismatch", false, nil},
		{"not a conftrace server", []string{"--server", notConftrace.URL, "--allow-simulated"}, "404", false, nil},
		{"garbage bundle", []string{"--server", garbage.URL, "--allow-simulated"}, "attestation bundle", false, nil},
		{"unreachable", []string{"--server", "http://127.0.0.1:1", "--allow-simulated"}, "fetching attestation", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := cliRun(t, runVerify, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("error %v is not %v", err, tt.target)
			}
			if out != "" {
				t.Errorf("printed %q on stdout despite the error", out)
			}
		})
	}
}
