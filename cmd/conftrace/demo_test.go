package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/population"
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
		"missed_notifications", "false_notifications", "protocol_exact", "epi_recall", "epi_precision",
		"bytes_per_device_day", "gaen_bytes_per_device_day", "timing"} {
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
	var stdout, stderr bytes.Buffer
	if err := runDemo(context.Background(), cmdIO{stdout: &stdout, stderr: &stderr}, []string{"--people", "30", "--days", "2"}); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "protocol exact") || !strings.Contains(stdout.String(), "YES") {
		t.Fatalf("table does not state exactness:\n%s", stdout.String())
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cliRun(t, runDemo, append([]string{"--server", b.url, "--people", "10"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("got %v, want an error with %q (%v)", err, tc.want, tc.is)
			}
		})
	}
}
