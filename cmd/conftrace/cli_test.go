package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/cmdtest"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// cmdFunc is the signature of every command.
type cmdFunc = func(ctx context.Context, cio cmdIO, args []string) error

// cliRun runs a command with buffers for its output.
func cliRun(t *testing.T, fn cmdFunc, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = fn(t.Context(), cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, args)
	return out.String(), errb.String(), err
}

// mustRun runs a command that must succeed and returns its stdout.
func mustRun(t *testing.T, fn cmdFunc, args ...string) string {
	t.Helper()
	out, stderr, err := cliRun(t, fn, args...)
	if err != nil {
		t.Fatalf("%v: %v (stderr %q)", args, err, stderr)
	}
	return out
}

// startServer runs a server command (relay) until the test ends.
func startServer(t *testing.T, fn cmdFunc, args ...string) *cmdtest.Server {
	t.Helper()
	return cmdtest.Start(t, func(ctx context.Context, args []string, log io.Writer) error {
		return fn(ctx, cmdIO{stdin: strings.NewReader(""), stdout: log, stderr: log}, args)
	}, args...)
}

// testBackend is a backend on loopback whose policy lists one health
// authority, "lab", whose key is in the file key.
type testBackend struct {
	*localbackend.Backend
	url, key string
	dir      string // a directory for the test's files
}

func newTestBackend(t *testing.T) *testBackend {
	t.Helper()
	return newTestBackendWithPolicy(t, nil)
}

// newTestBackendWithPolicy is newTestBackend with a policy of its own (nil
// for the default); its authorities are replaced by "lab".
func newTestBackendWithPolicy(t *testing.T, pol *policy.Policy) *testBackend {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "lab.key")
	mustRun(t, runAuthorityKeygen, "--out", key)
	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := authority.ParsePrivateKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	if pol != nil {
		// Answers leave at once, as with the default policy of a local
		// backend: on loopback their timing tells nothing, and tests
		// should not wait.
		p := *pol
		p.AnswerReleaseMillis = 0
		pol = &p
	}
	lb, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Authority: lab, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	return &testBackend{Backend: lb, url: lb.URL, key: key, dir: dir}
}

// measurement is the backend's attested measurement in hex.
func (b *testBackend) measurement() string { return hex.EncodeToString(b.TEE.Measurement()) }

// policySHA256 is the SHA-256 of the backend's attested policy in hex.
func (b *testBackend) policySHA256() string {
	return fmt.Sprintf("%x", sha256.Sum256(b.Service.Bundle.Policy))
}

// buildConftraced builds the backend's binary into a temporary directory
// and returns its path, so that a test runs it as an operator would.
func buildConftraced(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build conftraced:", err)
	}
	out := filepath.Join(t.TempDir(), "conftraced")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/conftraced")
	cmd.Dir = filepath.Join("..", "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building conftraced: %v\n%s", err, b)
	}
	return out
}

// The backend moved to conftraced: "conftrace serve" says where, with the
// usage exit status, and help no longer lists it.
func TestServeMoved(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(t.Context(), cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, []string{"serve", "--data", "d"})
	if code != 2 || !strings.Contains(errb.String(), "conftraced") {
		t.Errorf("conftrace serve: exit %d, stderr %q; want 2 and a pointer to conftraced", code, errb.String())
	}
	errb.Reset()
	if code := run(t.Context(), cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, []string{"help"}); code != 0 {
		t.Fatalf("conftrace help: exit %d", code)
	}
	if strings.Contains(errb.String(), "serve") || !strings.Contains(errb.String(), "demo") {
		t.Errorf("conftrace help lists serve, or not demo:\n%s", errb.String())
	}
}

func TestRelayHelp(t *testing.T) {
	out, stderr, err := cliRun(t, runRelay, "--help")
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("relay --help returned %v, want flag.ErrHelp", err)
	}
	if out != "" || !strings.Contains(stderr, "usage: conftrace relay") || !strings.Contains(stderr, "-listen") {
		t.Errorf("relay --help: stdout %q, stderr %q; want usage with the flags on stderr", out, stderr)
	}
}
