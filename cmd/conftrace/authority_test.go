package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
)

func TestAuthorityKeygen(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lab-1.key")
	stdout := mustRun(t, runAuthorityKeygen, "--out", out)
	if !strings.Contains(stdout, "lab-1") {
		t.Errorf("keygen printed %q, want the authority's name", stdout)
	}
	priv, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(out + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	key, err := authority.ParsePrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	name, pk, err := authority.ParsePublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	if key.Name != "lab-1" || name != "lab-1" {
		t.Errorf("names %q (private) and %q (public), want lab-1 from the file name", key.Name, name)
	}
	if !pk.Equal(key.PublicKey()) {
		t.Error("FILE.pub does not hold FILE's public key")
	}

	// --name overrides the file name.
	other := filepath.Join(dir, "k.pem")
	mustRun(t, runAuthorityKeygen, "--out", other, "--name", "Hôpital Nord")
	b, _ := os.ReadFile(other)
	if key, err := authority.ParsePrivateKeyPEM(b); err != nil || key.Name != "Hôpital Nord" {
		t.Errorf("--name: got %v, %v; want the name Hôpital Nord", key, err)
	}

	// Neither file is ever replaced.
	_, _, err = cliRun(t, runAuthorityKeygen, "--out", out)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("keygen over an existing key: %v, want a refusal", err)
	}
	if now, _ := os.ReadFile(out); string(now) != string(priv) {
		t.Error("keygen replaced an existing private key")
	}
	lone := filepath.Join(dir, "lone.key")
	if err := os.WriteFile(lone+".pub", []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cliRun(t, runAuthorityKeygen, "--out", lone); err == nil {
		t.Error("keygen over an existing FILE.pub succeeded")
	}
	if _, err := os.Stat(lone); err == nil {
		t.Error("keygen refused FILE.pub but left a private key behind")
	}
}

func TestAuthorityKeygenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no out", nil, "--out is required", true},
		{"empty name", []string{"--out", filepath.Join(dir, "a"), "--name", ""}, "want 1 to 64 bytes", true},
		{"long name", []string{"--out", filepath.Join(dir, "a"), "--name", strings.Repeat("x", 65)}, "want 1 to 64 bytes", true},
		{"newline in name", []string{"--out", filepath.Join(dir, "a"), "--name", "a\nb"}, "no control characters", true},
		{"padded name", []string{"--out", filepath.Join(dir, "a"), "--name", " lab"}, "surrounding spaces", true},
		{"no directory", []string{"--out", filepath.Join(dir, "none", "a.key")}, "no such file or directory", false},
		{"stray argument", []string{"--out", filepath.Join(dir, "a"), "x"}, "unexpected argument", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := cliRun(t, runAuthorityKeygen, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
		})
	}
}

// checkErr asserts that err contains want and is (or is not) a usage error.
func checkErr(t *testing.T, err error, want string, usage bool) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want one containing %q", err, want)
	}
	var ue usageError
	if errors.As(err, &ue) != usage {
		t.Errorf("error %q: usage error (exit 2) = %t, want %t", err, !usage, usage)
	}
}

func TestAuthorityResultErrors(t *testing.T) {
	b := newTestBackend(t)
	dir := t.TempDir()
	code := api.TestCode(make([]byte, 32))
	stranger := filepath.Join(dir, "stranger.key")
	mustRun(t, runAuthorityKeygen, "--out", stranger)
	notKey := filepath.Join(dir, "not.key")
	os.WriteFile(notKey, []byte("hello"), 0o600)
	base := []string{"--server", b.url, "--key", b.key, "--code", code, "--allow-simulated"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	tomorrow := time.Now().UTC().AddDate(0, 0, 2).Format(api.DateLayout)

	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no server", []string{"--key", b.key, "--code", code, "--positive"}, "--server is required", true},
		{"no key", []string{"--server", b.url, "--code", code, "--positive"}, "--key is required", true},
		{"no code", []string{"--server", b.url, "--key", b.key, "--positive"}, "--code is required", true},
		{"no result", with(), "exactly one of --positive and --negative", true},
		{"both results", with("--positive", "--negative"), "exactly one of --positive and --negative", true},
		{"bad code", with("--positive", "--code", "ABC"), "--code", true},
		{"bad code character", with("--positive", "--code", "ABCD-EFGH-JKMN-PQRSU"), "not a code character", true},
		{"mistyped code", with("--positive", "--code", "ABCD-EFGH-JKMN-PQRS2"), "check character does not match", true},
		{"bad test date", with("--positive", "--test-date", "2026-13-01"), "--test-date \"2026-13-01\": want YYYY-MM-DD", true},
		{"test date not a date", with("--positive", "--test-date", "yesterday"), "want YYYY-MM-DD", true},
		{"bad onset", with("--positive", "--symptom-onset", "1/2/2026"), "--symptom-onset", true},
		{"bad measurement hex", with("--positive", "--measurement", "xyz"), "not valid hex", true},
		{"short measurement", with("--positive", "--measurement", "abcd"), "is 2 bytes, want 32", true},
		{"unreadable key", with("--positive", "--key", filepath.Join(dir, "none")), "reading key", false},
		{"not a key", with("--positive", "--key", notKey), "no PEM PRIVATE KEY block", false},
		{"public key as key", with("--positive", "--key", b.key+".pub"), "no PEM PRIVATE KEY block", false},
		{"simulated not allowed", []string{"--server", b.url, "--key", b.key, "--code", code, "--positive"}, "simulated TEE evidence refused", false},
		{"authority not in policy", with("--positive", "--key", stranger), "the backend refused the result: unknown_authority", false},
		{"future test date", with("--positive", "--test-date", tomorrow), "the backend refused the result: malformed", false},
		{"server down", []string{"--server", "http://127.0.0.1:1", "--key", b.key, "--code", code, "--positive", "--allow-simulated"}, "fetching attestation", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := cliRun(t, runAuthorityResult, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
			if out != "" {
				t.Errorf("printed %q on stdout despite the error", out)
			}
		})
	}

	// A second result for the same code is a replay.
	if out := mustRun(t, runAuthorityResult, with("--negative", "--test-date", time.Now().UTC().AddDate(0, 0, -1).Format(api.DateLayout))...); !strings.Contains(out, "negative") || !strings.Contains(out, code) {
		t.Errorf("result printed %q, want the result and the code", out)
	}
	_, _, err := cliRun(t, runAuthorityResult, with("--positive")...)
	if !errors.Is(err, &api.Error{Code: api.CodeReplayed}) {
		t.Errorf("second result for one code: %v, want the backend's replayed refusal", err)
	}
	var me *attest.MismatchError
	_, _, err = cliRun(t, runAuthorityResult, with("--positive", "--measurement", strings.Repeat("00", 32))...)
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Errorf("result to a backend with another measurement: %v, want a measurement mismatch", err)
	}
}
