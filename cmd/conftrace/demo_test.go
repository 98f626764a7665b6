package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/population"
	"github.com/conftrace/conftrace/policy"
)

func TestDemo(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	cio := cmdIO{stdout: &stdout, stderr: &stderr}
	if err := runDemo(context.Background(), cio, []string{"--people", "120", "--days", "10", "--seed", "5", "--json", "--out", out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	for _, k := range []string{"people", "days", "infections", "positive_tests", "uploads", "notified", "should_be_notified",
		"notified_reciprocal", "notified_one_sided", "missed_notifications", "false_notifications", "mismatched_answers",
		"protocol_exact", "epi_recall", "epi_precision", "gaen_only_people", "gaen_cases", "gaen_exports", "gaen_keys_imported",
		"bytes_per_device_day", "gaen_bytes_per_device_day", "timing", "uploads_durable", "exchange_mismatches",
		"device_requests_per_day", "detailed_answers", "national_check_bytes"} {
		if _, ok := got[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	if got["protocol_exact"] != true || got["people"] != 120.0 || got["days"] != 10.0 {
		t.Fatalf("summary: protocol_exact %v, people %v, days %v", got["protocol_exact"], got["people"], got["days"])
	}
	if n, _ := got["uploads"].(float64); n == 0 {
		t.Fatal("no uploads: the demo did not exercise matching")
	}
	// One daily exchange per phone carries its check, its result poll and
	// its upload; the demo has the backend flush its journal as its clock
	// moves, so uploads become durable.
	if got["device_requests_per_day"] != 1.0 || got["uploads_durable"] == 0.0 || got["exchange_mismatches"] != 0.0 || got["detailed_answers"] != false {
		t.Fatalf("%v requests a device and day, %v uploads durable, %v exchange mismatches, detailed answers %v; want 1, some, 0, false",
			got["device_requests_per_day"], got["uploads_durable"], got["exchange_mismatches"], got["detailed_answers"])
	}
	// The default GAEN share gives the local backend a GAEN export key
	// and some of the people without the app a GAEN app.
	if n, _ := got["gaen_only_people"].(float64); n == 0 {
		t.Fatal("no GAEN-only people with the default --gaen-share")
	}
	// A phone at national scale, 2,000 sightings, spends at most 1/100 of
	// what a GAEN phone downloads at 10,000 cases a day (14 keys of 28
	// bytes a case).
	if n, _ := got["national_check_bytes"].(float64); n <= 0 || n*100 > 10_000*14*28 {
		t.Errorf("national_check_bytes %v: want a measured check within 1/100 of 3,920,000 bytes", got["national_check_bytes"])
	}
	timing := got["timing"].(map[string]any)
	if _, ok := timing["total_seconds"]; !ok {
		t.Error("timing lacks total_seconds")
	}
	// The backend's own latencies are measured around its handler: it
	// served at least every request the phones and the authority made.
	if served, _ := timing["backend_requests"].(float64); served < got["requests"].(float64) || timing["backend_p99_ms"] == nil {
		t.Errorf("backend timing: %v requests served for %v made, p99 %v", served, got["requests"], timing["backend_p99_ms"])
	}
	file, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(file), bytes.TrimSpace(stdout.Bytes())) {
		t.Error("summary.json differs from the --json output")
	}
	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil || !bytes.Contains(page, []byte("<svg")) {
		t.Fatalf("report.html: %v, %d bytes without a chart", err, len(page))
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet the demo wrote %q", stderr.String())
	}
}

func TestDemoTable(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		answers string
	}{
		{nil, "coarse"},
		{[]string{"--detailed-answers"}, "detailed"},
	} {
		var stdout, stderr bytes.Buffer
		if err := runDemo(context.Background(), cmdIO{stdout: &stdout, stderr: &stderr}, append([]string{"--people", "30", "--days", "2"}, tc.args...)); err != nil {
			t.Fatalf("demo %v: %v\n%s", tc.args, err, stderr.String())
		}
		out := stdout.String()
		if !strings.Contains(out, "protocol exact") || !strings.Contains(out, "YES") || !strings.Contains(out, "daily exchanges") {
			t.Fatalf("demo %v: table does not state exactness and the daily exchanges:\n%s", tc.args, out)
		}
		if !regexp.MustCompile(`(?m)^answers +` + tc.answers + `:`).MatchString(out) {
			t.Fatalf("demo %v: table does not say the answers were %s:\n%s", tc.args, tc.answers, out)
		}
	}
}

func TestDemoGPS(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cio := cmdIO{stdout: &stdout, stderr: &stderr}
	if err := runDemo(context.Background(), cio, []string{"--people", "100", "--days", "8", "--seed", "9", "--gps", "--gps-check-every", "2", "--json"}); err != nil {
		t.Fatalf("demo --gps: %v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	for _, k := range []string{"gps_checks", "gps_notified", "gps_should_be_notified", "gps_missed", "gps_false", "gps_protocol_exact", "protocol_exact"} {
		if _, ok := got[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	if got["gps_protocol_exact"] != true || got["protocol_exact"] != true {
		t.Fatalf("demo --gps: gps_protocol_exact %v, protocol_exact %v", got["gps_protocol_exact"], got["protocol_exact"])
	}
	if n, _ := got["gps_notified"].(float64); n == 0 || got["gps_should_be_notified"] != n {
		t.Fatalf("gps_notified %v, gps_should_be_notified %v: the demo did not exercise GPS matching", got["gps_notified"], got["gps_should_be_notified"])
	}
	if got["gps_check_every_days"] != 2.0 {
		t.Errorf("gps_check_every_days %v, want the flag's 2", got["gps_check_every_days"])
	}
}

func TestDemoUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--people", "1"},
		{"--days", "0"},
		{"--adoption", "0"},
		{"--server", "http://127.0.0.1:1"},
		{"--authority-key", "lab.key"},
		{"--allow-simulated"},
		{"--measurement", strings.Repeat("ab", 32)},
		{"--gps-check-every", "2"},
		{"--gps", "--gps-check-every", "0"},
		{"--gaen-share", "-0.1"},
		{"--gaen-share", "1.5"},
		{"--gaen-export-key", "gaen.pem"},
		{"--server", "http://127.0.0.1:1", "--authority-key", "lab.key", "--gaen-share", "0.2"},
		{"stray"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var buf bytes.Buffer
			err := runDemo(context.Background(), cmdIO{stdout: &buf, stderr: &buf}, args)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
		})
	}
}

// TestDemoServer drives a running backend twice with the same seed: the
// simulation ends at the present inside its retention window, both runs
// are exact, and the second neither matches the first's uploads (which
// would show as false notifications) nor replays its test codes.
func TestDemoServer(t *testing.T) {
	b := newTestBackend(t)
	// Seed 8 uploads whatever the weekday of the start, which a --server
	// run takes from the calendar.
	args := []string{"--server", b.url, "--authority-key", b.key, "--allow-simulated", "--people", "150", "--days", "10", "--seed", "8", "--json"}
	var nonces []string
	uploads := 0.0
	for run := range 2 {
		stdout, stderr, err := cliRun(t, runDemo, args...)
		if err != nil {
			t.Fatalf("run %d: demo --server: %v\n%s", run+1, err, stderr)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("run %d: --json output: %v", run+1, err)
		}
		if got["protocol_exact"] != true || got["live_backend"] != true || got["days"] != 10.0 {
			t.Fatalf("run %d: protocol_exact %v, live_backend %v, days %v", run+1, got["protocol_exact"], got["live_backend"], got["days"])
		}
		n, _ := got["uploads"].(float64)
		uploads += n
		nonce, _ := got["run_nonce"].(string)
		nonces = append(nonces, nonce)
		if !strings.Contains(stderr, "no --gaen-export-key, so no GAEN-only phones") || got["gaen_only_people"] != 0.0 {
			t.Fatalf("run %d: %v GAEN-only people without --gaen-export-key; stderr %q", run+1, got["gaen_only_people"], stderr)
		}
	}
	if uploads == 0 {
		t.Fatal("no uploads in either run: the test did not exercise matching")
	}
	if nonces[0] == "" || nonces[0] == nonces[1] {
		t.Fatalf("run nonces %q: want two different ones", nonces)
	}
}

// TestDemoServerRefuses checks what --server refuses before simulating:
// more days than the backend's window holds, an authority its policy does
// not list, a simulated backend not explicitly allowed, a bad key file.
func TestDemoServerRefuses(t *testing.T) {
	b := newTestBackend(t)
	other := filepath.Join(t.TempDir(), "other.key")
	mustRun(t, runAuthorityKeygen, "--out", other)
	garbage := filepath.Join(t.TempDir(), "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
		is   error
	}{
		{"too many days", []string{"--authority-key", b.key, "--allow-simulated", "--days", "14"}, "at most 13", population.ErrTooManyDays},
		{"unlisted authority", []string{"--authority-key", other, "--allow-simulated"}, "does not list authority", nil},
		{"simulated not allowed", []string{"--authority-key", b.key}, "", attest.ErrSimulated},
		{"no key file", []string{"--authority-key", filepath.Join(t.TempDir(), "none"), "--allow-simulated"}, "--authority-key", fs.ErrNotExist},
		{"bad key file", []string{"--authority-key", garbage, "--allow-simulated"}, "PRIVATE KEY", nil},
		{"detailed answers from a coarse backend", []string{"--authority-key", b.key, "--allow-simulated", "--detailed-answers"}, `answers "coarse"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cliRun(t, runDemo, append([]string{"--server", b.url, "--people", "10"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("got %v, want an error with %q (%v)", err, tc.want, tc.is)
			}
		})
	}
}

// TestDemoServerGAEN drives a running backend whose policy lists a GAEN
// export key with --gaen-export-key: the GAEN-only people's exports are
// imported and the run is exact. A key the policy does not list is
// refused before simulating.
func TestDemoServerGAEN(t *testing.T) {
	dir := t.TempDir()
	labFile := filepath.Join(dir, "lab.key")
	mustRun(t, runAuthorityKeygen, "--out", labFile)
	b, err := os.ReadFile(labFile)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := authority.ParsePrivateKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	listed, other := writeECKey(t, dir, "listed.pem", "EC PRIVATE KEY"), writeECKey(t, dir, "other.pem", "PRIVATE KEY")
	der, err := x509.MarshalPKIXPublicKey(&listed.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default()
	pol.GAENExportKeys = []policy.ExportKey{{Name: "foreign", PublicKey: der}}
	pol.AnswerReleaseMillis = 0 // in-process: nothing to hide, no need to wait
	lb, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Authority: lab, Policy: &pol})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	args := []string{"--server", lb.URL, "--authority-key", labFile, "--allow-simulated", "--people", "150", "--days", "10", "--seed", "8", "--gaen-share", "0.3"}

	stdout, stderr, err := cliRun(t, runDemo, append(args, "--gaen-export-key", filepath.Join(dir, "listed.pem"), "--json")...)
	if err != nil {
		t.Fatalf("demo --server --gaen-export-key: %v\n%s", err, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	if got["protocol_exact"] != true || got["gaen_keys_imported"] == 0.0 || got["gaen_only_people"] == 0.0 {
		t.Fatalf("protocol_exact %v, %v GAEN-only people, %v GAEN keys imported", got["protocol_exact"], got["gaen_only_people"], got["gaen_keys_imported"])
	}
	if other == nil {
		t.Fatal("no second key")
	}
	_, _, err = cliRun(t, runDemo, append(args, "--gaen-export-key", filepath.Join(dir, "other.pem"))...)
	if err == nil || !strings.Contains(err.Error(), "lists no GAEN export key") {
		t.Fatalf("a GAEN export key the policy does not list: %v", err)
	}
	_, _, err = cliRun(t, runDemo, append(args, "--gaen-export-key", labFile)...)
	if err == nil || !strings.Contains(err.Error(), "--gaen-export-key") {
		t.Fatalf("an authority key as GAEN export key: %v", err)
	}
}

// writeECKey writes a fresh ECDSA P-256 private key to dir/name as a PEM
// block of type typ (SEC 1 or PKCS #8) and returns it.
func writeECKey(t *testing.T, dir, name, typ string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var der []byte
	if typ == "EC PRIVATE KEY" {
		der, err = x509.MarshalECPrivateKey(k)
	} else {
		der, err = x509.MarshalPKCS8PrivateKey(k)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}
