package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/cmdtest"
	"github.com/conftrace/conftrace/release"
)

// ownMeasurement is what the simulated TEE attests for this process: the
// SHA-256 of its executable.
func ownMeasurement(t *testing.T) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return h[:]
}

// writeRelease writes a release statement that the members of a new
// governance set signed, and returns its path and the set.
func writeRelease(t *testing.T, st release.Statement) (string, *release.Governance) {
	t.Helper()
	gov := &release.Governance{}
	var f []byte
	for i, name := range []string{"health-authority", "auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		gov.Members = append(gov.Members, k.Member())
		if i == 0 {
			f, err = release.Sign(st, k)
		} else {
			f, err = release.Cosign(f, k)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "release.txt")
	if err := os.WriteFile(path, f, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, gov
}

// conftraced --release serves the statement in its bundle, bound by the
// evidence, so a phone pinned to the governance set accepts it.
func TestServeRelease(t *testing.T) {
	pol, sha := writePolicy(t)
	h, err := hex.DecodeString(sha)
	if err != nil {
		t.Fatal(err)
	}
	rel, gov := writeRelease(t, release.Statement{Sequence: 7, TEE: attest.Sim, Measurements: [][]byte{ownMeasurement(t)},
		PolicySHA256: [32]byte(h), Note: "test build"})
	srv := cmdtest.Start(t, run, "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--policy", pol, "--release", rel)
	if l := cmdtest.LogLine(srv.Log.String(), `"release statement"`); l == nil || l["sequence"] != "7" {
		t.Errorf("no release statement logged with its sequence:\n%s", srv.Log)
	}
	resp, err := http.Get(srv.URL() + api.PathAttestation)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var b attest.Bundle
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(rel)
	if !bytes.Equal(b.Release, want) {
		t.Fatalf("the bundle carries release %q, want the file's", b.Release)
	}
	c, err := client.New(t.Context(), client.Config{Server: srv.URL(), Governance: gov, Expectations: attest.Expectations{AllowSimulated: true}})
	if err != nil {
		t.Fatalf("a phone pinned to the governance set: %v", err)
	}
	if st, ok := c.Release(); !ok || st.Sequence != 7 || st.Note != "test build" {
		t.Errorf("the phone accepted release %+v (%t), want 7", st, ok)
	}
}

// A release statement that phones would refuse anyway stops conftraced at
// start, naming what is wrong.
func TestServeReleaseRefused(t *testing.T) {
	pol, sha := writePolicy(t)
	h, err := hex.DecodeString(sha)
	if err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("another build"))
	ok := release.Statement{Sequence: 1, TEE: attest.Sim, Measurements: [][]byte{ownMeasurement(t)}, PolicySHA256: [32]byte(h)}
	otherPolicy, otherTEE, otherBuild := ok, ok, ok
	otherPolicy.PolicySHA256 = sha256.Sum256([]byte("another policy"))
	otherTEE.TEE, otherTEE.Measurements = attest.TDX, [][]byte{bytes.Repeat([]byte{1}, 48)}
	otherTEE.RTMRs[1] = bytes.Repeat([]byte{2}, 48)
	otherBuild.Measurements = [][]byte{other[:]}
	garbled := filepath.Join(t.TempDir(), "garbled")
	os.WriteFile(garbled, []byte("conftrace release v1\nsequence 1\n"), 0o644)
	path := func(st release.Statement) string { p, _ := writeRelease(t, st); return p }
	for _, tc := range []struct{ name, file, want string }{
		{"another policy", path(otherPolicy), "admits the policy of SHA-256"},
		{"another TEE", path(otherTEE), "admits tdx code"},
		{"another build", path(otherBuild), "does not list this backend's measurement"},
		{"garbled", garbled, "release:"},
		{"missing", filepath.Join(t.TempDir(), "none"), "reading the release statement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log cmdtest.SyncBuffer
			err := run(t.Context(), []string{"--listen", "127.0.0.1:0", "--data", t.TempDir(), "--policy", pol, "--release", tc.file}, &log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("conftraced --release: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
