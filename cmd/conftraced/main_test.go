package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/cmdtest"
	"github.com/conftrace/conftrace/internal/service"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
	"github.com/conftrace/conftrace/policy"
)

// writePolicy writes a policy listing one new authority and returns its
// path and the SHA-256 of its canonical form, which the backend attests.
func writePolicy(t *testing.T) (path, sha string) {
	t.Helper()
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf("%x", sha256.Sum256(doc))
}

func TestServeLogsAndStops(t *testing.T) {
	pol, sha := writePolicy(t)
	data := filepath.Join(t.TempDir(), "data")
	srv := cmdtest.Start(t, run, "--listen", "127.0.0.1:0", "--data", data, "--policy", pol)

	start := cmdtest.LogLine(srv.Log.String(), "listening")
	if start == nil {
		t.Fatalf("no \"listening\" log line:\n%s", srv.Log)
	}
	if start["addr"] != srv.Addr || strings.HasSuffix(start["addr"], ":0") {
		t.Errorf("logged addr=%s, address file says %s; want the bound address", start["addr"], srv.Addr)
	}
	if start["tee"] != "sim" {
		t.Errorf("logged tee=%s, want sim", start["tee"])
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(start["measurement"]) {
		t.Errorf("logged measurement=%q, want 64 lowercase hex digits", start["measurement"])
	}
	if start["policy_sha256"] != sha {
		t.Errorf("logged policy_sha256=%q, want %s", start["policy_sha256"], sha)
	}
	if !strings.Contains(srv.Log.String(), "simulated TEE: it protects nothing") {
		t.Errorf("no warning that the simulated TEE protects nothing:\n%s", srv.Log)
	}
	if _, err := os.Stat(filepath.Join(data, service.SimKeyFile)); err != nil {
		t.Errorf("sim platform key not in the data directory: %v", err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("conftraced returned %v after cancellation, want nil (graceful shutdown)", err)
	}
	if !strings.Contains(srv.Log.String(), "msg=stopped") {
		t.Errorf("no \"stopped\" log line:\n%s", srv.Log)
	}
	if _, err := os.Stat(srv.AddrFile); err == nil {
		t.Error("address file left behind after shutdown")
	}
}

func TestServeErrors(t *testing.T) {
	pol, _ := writePolicy(t)
	running := cmdtest.Start(t, run, "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--policy", pol)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version": 1, "retention_days": 0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	// Read before the TEE opens, checked after: any file gets that far.
	rel := filepath.Join(dir, "release.txt")
	if err := os.WriteFile(rel, []byte("conftrace release v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no data", []string{"--policy", pol}, "--data is required", true},
		{"no policy", []string{"--data", data}, "--policy is required", true},
		{"empty listen", []string{"--data", data, "--policy", pol, "--listen", ""}, "--listen is empty", true},
		{"unknown tee", []string{"--data", data, "--policy", pol, "--tee", "tpm"}, `TEE "tpm": want sim, sgx, tdx or snp`, true},
		{"tee checked first", []string{"--data", data, "--policy", filepath.Join(dir, "none.json"), "--tee", "tpm"}, `TEE "tpm"`, true},
		// This machine is no TEE: each backend must say so at start.
		{"sgx absent", []string{"--data", data, "--policy", pol, "--tee", "sgx", "--collateral", dir, "--release", rel}, "not running under Gramine-SGX", false},
		{"tdx absent", []string{"--data", data, "--policy", pol, "--tee", "tdx", "--release", rel}, "TDX guest interface not found", false},
		{"snp absent", []string{"--data", data, "--policy", pol, "--tee", "snp", "--release", rel}, "not found", false},
		// A real TEE serves phones that pin a governance set.
		{"tdx without release", []string{"--data", data, "--policy", pol, "--tee", "tdx"}, "--tee tdx needs --release FILE", true},
		{"missing release", []string{"--data", data, "--policy", pol, "--tee", "snp", "--release", filepath.Join(dir, "none.txt")}, "reading the release statement", false},
		{"missing policy", []string{"--data", data, "--policy", filepath.Join(dir, "none.json")}, "reading policy", false},
		{"invalid policy", []string{"--data", data, "--policy", bad}, "policy: invalid", false},
		{"data is a file", []string{"--data", notDir, "--policy", pol}, "data directory", false},
		{"address in use", []string{"--data", data, "--policy", pol, "--listen", running.Addr}, "address already in use", false},
		{"stray argument", []string{"--data", data, "--policy", pol, "now"}, "unexpected argument", true},
		{"unknown flag", []string{"--data", data, "--policy", pol, "--debug"}, "flag provided but not defined", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log cmdtest.SyncBuffer
			err := run(t.Context(), tt.args, &log)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
			var ue usageError
			if errors.As(err, &ue) != tt.usage {
				t.Errorf("usage error (exit 2) = %t, want %t", !tt.usage, tt.usage)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var log cmdtest.SyncBuffer
	if err := run(t.Context(), []string{"--help"}, &log); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help returned %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"usage: conftraced", "-data", "-policy", "-listen", "-tee", "sgx"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("--help does not mention %q:\n%s", want, log.String())
		}
	}
}

// TestServeOnPostgres runs conftraced over a PostgreSQL store, as replicas
// do, and checks that it says so without the connection's password.
func TestServeOnPostgres(t *testing.T) {
	pol, _ := writePolicy(t)
	connURL := pgtest.URL(t)
	data := filepath.Join(t.TempDir(), "data")
	srv := cmdtest.Start(t, run, "--listen", "127.0.0.1:0", "--data", data, "--policy", pol, "--store", connURL)
	if err := srv.Stop(); err != nil {
		t.Fatalf("conftraced returned %v after cancellation, want nil", err)
	}
	line := cmdtest.LogLine(srv.Log.String(), "store")
	if line == nil || line["postgres"] == "" {
		t.Fatalf("no log line naming the PostgreSQL store:\n%s", srv.Log)
	}
	if u, err := url.Parse(connURL); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && strings.Contains(srv.Log.String(), pw) {
			t.Errorf("the log shows the store's password:\n%s", srv.Log)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "conftrace.db")); err == nil {
		t.Error("conftraced made a SQLite store beside the PostgreSQL one")
	}
}
