package replicatest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/cmdtest"
)

// repoRoot is the repository's root, relative to this package.
const repoRoot = "../.."

// startTimeout bounds how long a replica may take to listen, or to exit
// when it refuses to start (asking a peer for the key included).
const startTimeout = 60 * time.Second

// Log messages of conftraced that the tests look for (internal/service).
const (
	msgObtainedKEK = `msg="key-encryption key obtained from a peer`
	msgReleasedKEK = `msg="key-encryption key released to an attested replica"`
	msgRefusedKEK  = `msg="key release refused"`
)

// errHung is returned by launch for a process that neither listened nor
// exited in time.
var errHung = errors.New("neither listened nor exited in time")

// build is a conftraced binary built for a test.
type build struct {
	path string
	// measurement is what the simulated TEE attests for it: the SHA-256
	// of the executable.
	measurement []byte
}

// buildConftraced builds cmd/conftraced with go build's flags extra added,
// into a temporary directory.
func buildConftraced(t *testing.T, extra ...string) build {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	path := filepath.Join(t.TempDir(), "conftraced")
	args := append([]string{"build", "-buildvcs=false"}, extra...)
	cmd := exec.Command(goTool, append(args, "-o", path, "./cmd/conftraced")...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building conftraced: %v\n%s", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return build{path: path, measurement: h.Sum(nil)}
}

// process is a conftraced process.
type process struct {
	name string
	cmd  *exec.Cmd
	// log is what it wrote to its standard output and error.
	log *cmdtest.SyncBuffer
	// addr is the address it listens on, host:port, once it does.
	addr string
	// exited is closed when the process has exited; err is then what
	// Wait returned.
	exited chan struct{}
	err    error
}

// launch starts the binary with args plus --addr-file, and waits until it
// listens or exits. It returns the process and nil once it listens, or an
// error if it exited first, with its log; the process is then done. A
// process that listens is stopped when the test ends, and its log shown if
// the test failed.
func launch(t *testing.T, name string, b build, args ...string) (*process, error) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	p := &process{name: name, log: &cmdtest.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(b.path, append(args, "--addr-file", addrFile)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, p.log)
		}
	})
	deadline := time.After(startTimeout)
	for {
		if a, err := os.ReadFile(addrFile); err == nil {
			p.addr = strings.TrimSpace(string(a))
			return p, nil
		}
		select {
		case <-p.exited:
			return p, fmt.Errorf("%s exited before listening: %w", name, p.err)
		case <-deadline:
			p.kill(t)
			return p, fmt.Errorf("%s: %w (%s)", name, errHung, startTimeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// start launches a replica that must start.
func start(t *testing.T, name string, b build, args ...string) *process {
	t.Helper()
	p, err := launch(t, name, b, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, p.log)
	}
	return p
}

// refused launches a replica that must refuse to start, and returns its
// output.
func refused(t *testing.T, name string, b build, args ...string) string {
	t.Helper()
	p, err := launch(t, name, b, args...)
	if err == nil {
		t.Fatalf("%s started (listening on %s), want a refusal\n%s", name, p.addr, p.log)
	}
	var exit *exec.ExitError
	if errors.Is(err, errHung) || !errors.As(p.err, &exit) {
		t.Fatalf("%s: %v, want it to exit with an error", name, err)
	}
	return p.log.String()
}

// url is the replica's base URL.
func (p *process) url() string { return "http://" + p.addr }

// kill kills the process with SIGKILL, as a machine that fails, and waits
// for it to exit.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop stops the process gracefully (SIGTERM), or kills it if it takes
// longer than startTimeout. It does nothing to a process that exited.
func (p *process) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("%s exited with %v after SIGTERM, want a graceful stop", p.name, p.err)
		}
	case <-time.After(startTimeout):
		t.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, startTimeout)
		p.kill(t)
	}
}
