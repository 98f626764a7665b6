package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
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

// syncBuffer is a bytes.Buffer that a server goroutine may write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a server command running in a goroutine.
type running struct {
	addr     string
	addrFile string
	stderr   *syncBuffer
	cancel   context.CancelFunc
	done     chan error
	err      error
	once     sync.Once
}

// stop cancels the server's context, as SIGINT does, and returns what the
// command returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatal("server did not stop within 30 s of cancellation")
		}
	})
	return r.err
}

// startServer runs fn (serve or relay) with args plus an --addr-file and
// waits until it listens. The server is stopped when the test ends.
func startServer(t *testing.T, fn cmdFunc, args ...string) *running {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{addrFile: addrFile, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- fn(ctx, cmdIO{stdin: strings.NewReader(""), stdout: r.stderr, stderr: r.stderr}, append(args, "--addr-file", addrFile))
	}()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(addrFile)
		if err == nil {
			r.addr = strings.TrimSpace(string(b))
			return r
		}
		select {
		case err := <-r.done:
			t.Fatalf("server %v exited before listening: %v\n%s", args, err, r.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %v wrote no address file within 30 s\n%s", args, r.stderr)
		}
	}
}

// testBackend is a running backend with one health authority, "lab".
type testBackend struct {
	dir, data, policy, key string
	srv                    *running
	url                    string
}

func newTestBackend(t *testing.T) *testBackend {
	t.Helper()
	dir := t.TempDir()
	b := &testBackend{
		dir:    dir,
		data:   filepath.Join(dir, "data"),
		policy: filepath.Join(dir, "policy.json"),
		key:    filepath.Join(dir, "lab.key"),
	}
	mustRun(t, runAuthorityKeygen, "--out", b.key)
	mustRun(t, runPolicyInit, "--authority", "lab="+b.key+".pub", "--out", b.policy)
	b.srv = startServer(t, runServe, "--listen", "127.0.0.1:0", "--data", b.data, "--policy", b.policy)
	b.url = "http://" + b.srv.addr
	return b
}

var logAttr = regexp.MustCompile(`(\w+)=(\S+)`)

// logLine returns the attributes of the first log line with the message.
func logLine(log, msg string) map[string]string {
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "msg="+msg+" ") && !strings.HasSuffix(l, "msg="+msg) {
			continue
		}
		attrs := map[string]string{}
		for _, m := range logAttr.FindAllStringSubmatch(l, -1) {
			attrs[m[1]] = m[2]
		}
		return attrs
	}
	return nil
}

func TestServeLogsAndStops(t *testing.T) {
	b := newTestBackend(t)
	policyOut := mustRun(t, runPolicyInit, "--authority", "lab="+b.key+".pub", "--out", b.policy, "--force")

	start := logLine(b.srv.stderr.String(), "listening")
	if start == nil {
		t.Fatalf("no \"listening\" log line:\n%s", b.srv.stderr)
	}
	if start["addr"] != b.srv.addr || strings.HasSuffix(start["addr"], ":0") {
		t.Errorf("logged addr=%s, address file says %s; want the bound address", start["addr"], b.srv.addr)
	}
	if start["tee"] != "sim" {
		t.Errorf("logged tee=%s, want sim", start["tee"])
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(start["measurement"]) {
		t.Errorf("logged measurement=%q, want 64 lowercase hex digits", start["measurement"])
	}
	if h := start["policy_sha256"]; h == "" || !strings.Contains(policyOut, "policy sha256 "+h) {
		t.Errorf("logged policy_sha256=%q; policy init printed %q", h, policyOut)
	}
	if _, err := os.Stat(filepath.Join(b.data, simKeyFile)); err != nil {
		t.Errorf("sim platform key not in the data directory: %v", err)
	}

	if err := b.srv.stop(t); err != nil {
		t.Fatalf("serve returned %v after cancellation, want nil (graceful shutdown)", err)
	}
	if !strings.Contains(b.srv.stderr.String(), "msg=stopped") {
		t.Errorf("no \"stopped\" log line:\n%s", b.srv.stderr)
	}
	if _, err := os.Stat(b.srv.addrFile); err == nil {
		t.Error("address file left behind after shutdown")
	}
}

func TestServeErrors(t *testing.T) {
	b := newTestBackend(t)
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
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no data", []string{"--policy", b.policy}, "--data is required", true},
		{"no policy", []string{"--data", data}, "--policy is required", true},
		{"empty listen", []string{"--data", data, "--policy", b.policy, "--listen", ""}, "--listen is empty", true},
		{"unknown tee", []string{"--data", data, "--policy", b.policy, "--tee", "tpm"}, `--tee "tpm": want sim, sgx, tdx or snp`, true},
		{"tee checked first", []string{"--data", data, "--policy", filepath.Join(dir, "none.json"), "--tee", "tpm"}, `--tee "tpm"`, true},
		// This machine is no TEE: each backend must say so at start.
		{"sgx absent", []string{"--data", data, "--policy", b.policy, "--tee", "sgx"}, "not running under Gramine-SGX", false},
		{"tdx absent", []string{"--data", data, "--policy", b.policy, "--tee", "tdx"}, "TDX guest interface not found", false},
		{"snp absent", []string{"--data", data, "--policy", b.policy, "--tee", "snp"}, "not found", false},
		{"missing policy", []string{"--data", data, "--policy", filepath.Join(dir, "none.json")}, "reading policy", false},
		{"invalid policy", []string{"--data", data, "--policy", bad}, "policy: invalid", false},
		{"data is a file", []string{"--data", notDir, "--policy", b.policy}, "data directory", false},
		{"address in use", []string{"--data", data, "--policy", b.policy, "--listen", b.srv.addr}, "address already in use", false},
		{"stray argument", []string{"--data", data, "--policy", b.policy, "now"}, "unexpected argument", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := cliRun(t, runServe, tt.args...)
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

func TestServerCommandsHelp(t *testing.T) {
	for name, fn := range map[string]cmdFunc{"serve": runServe, "relay": runRelay} {
		out, stderr, err := cliRun(t, fn, "--help")
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help returned %v, want flag.ErrHelp", name, err)
		}
		if out != "" || !strings.Contains(stderr, "usage: conftrace "+name) || !strings.Contains(stderr, "-listen") {
			t.Errorf("%s --help: stdout %q, stderr %q; want usage with the flags on stderr", name, out, stderr)
		}
	}
}
