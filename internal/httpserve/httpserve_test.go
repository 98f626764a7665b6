package httpserve

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/cmdtest"
)

// A request in flight when the context ends is answered before Serve
// returns nil, and the address file lives exactly as long as the server.
func TestGracefulShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	var log cmdtest.SyncBuffer
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, h, Options{Log: slog.New(slog.NewTextHandler(&log, nil)), AddrFile: addrFile})
	}()

	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	<-started
	if b, err := os.ReadFile(addrFile); err != nil || strings.TrimSpace(string(b)) != ln.Addr().String() {
		t.Errorf("address file holds %q, %v; want %s", b, err, ln.Addr())
	}
	cancel()
	for !strings.Contains(log.String(), "shutting down") {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if got := <-answer; got != "finished" {
		t.Errorf("the request in flight got %q, want its answer", got)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve returned %v after a graceful shutdown, want nil", err)
	}
	if _, err := os.Stat(addrFile); !os.IsNotExist(err) {
		t.Errorf("address file left behind: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still accepting connections after Serve returned")
	}
}

// A listener that fails is an error, not a silent stop.
func TestServeFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := Serve(t.Context(), ln, http.NotFoundHandler(), Options{}); err == nil || !strings.Contains(err.Error(), "serving") {
		t.Errorf("Serve on a closed listener = %v, want a serving error", err)
	}
}
