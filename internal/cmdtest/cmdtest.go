// Package cmdtest runs the servers of conftrace's commands in tests: a
// command's run function in a goroutine, or a built binary in a process,
// started with --addr-file and waited for until it listens, stopped as
// SIGINT or SIGTERM would stop it, its log kept for the test to read.
package cmdtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to listen, and to stop.
const startTimeout = 30 * time.Second

// Server is a server command running for a test.
type Server struct {
	// Addr is the address the server listens on, host:port.
	Addr string
	// AddrFile is where the server wrote Addr.
	AddrFile string
	// Log is what the server wrote to its standard output and error.
	Log *SyncBuffer

	stop func() error
	once sync.Once
	err  error
}

// RunFunc is a server command's entry point: it serves until ctx ends,
// writing its log to log.
type RunFunc func(ctx context.Context, args []string, log io.Writer) error

// Start runs fn with args plus "--addr-file FILE" in a goroutine and waits
// until it has written its address. The server is stopped when the test
// ends.
func Start(t testing.TB, fn RunFunc, args ...string) *Server {
	t.Helper()
	s := &Server{AddrFile: filepath.Join(t.TempDir(), "addr"), Log: &SyncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx, append(args, "--addr-file", s.AddrFile), s.Log) }()
	s.stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(startTimeout):
			return errors.New("cmdtest: the server did not stop within 30 s of cancellation")
		}
	}
	s.wait(t, done)
	return s
}

// StartProcess runs the program at path with args plus "--addr-file FILE"
// and waits until it has written its address. Stop sends it SIGTERM (on
// Windows, kills it). The process is stopped when the test ends.
func StartProcess(t testing.TB, path string, args ...string) *Server {
	t.Helper()
	s := &Server{AddrFile: filepath.Join(t.TempDir(), "addr"), Log: &SyncBuffer{}}
	cmd := exec.Command(path, append(args, "--addr-file", s.AddrFile)...)
	cmd.Stdout, cmd.Stderr = s.Log, s.Log
	if err := cmd.Start(); err != nil {
		t.Fatalf("cmdtest: starting %s: %v", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.stop = func() error {
		if runtime.GOOS == "windows" {
			cmd.Process.Kill()
		} else {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case err := <-done:
			return err
		case <-time.After(startTimeout):
			cmd.Process.Kill()
			return errors.New("cmdtest: the process did not stop within 30 s of SIGTERM")
		}
	}
	s.wait(t, done)
	return s
}

// wait waits for the address file, failing the test if the server exits
// first or takes too long.
func (s *Server) wait(t testing.TB, done <-chan error) {
	t.Helper()
	t.Cleanup(func() { s.Stop() })
	deadline := time.Now().Add(startTimeout)
	for {
		if b, err := os.ReadFile(s.AddrFile); err == nil {
			s.Addr = strings.TrimSpace(string(b))
			return
		}
		select {
		case err := <-done:
			t.Fatalf("cmdtest: the server exited before listening: %v\n%s", err, s.Log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("cmdtest: the server wrote no address file within 30 s\n%s", s.Log)
		}
	}
}

// Stop stops the server, as SIGINT or SIGTERM would, and returns what it
// returned. Later calls return the same.
func (s *Server) Stop() error {
	s.once.Do(func() { s.err = s.stop() })
	return s.err
}

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.Addr }

var logAttr = regexp.MustCompile(`(\w+)=(\S+)`)

// LogLine returns the attributes of the first line of a log/slog text log
// whose message is msg, or nil if there is none.
func LogLine(log, msg string) map[string]string {
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

// SyncBuffer is a bytes.Buffer that a server may write while the test
// reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
