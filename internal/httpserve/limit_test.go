package httpserve

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// get sends a keep-alive GET for path on c.
func get(t *testing.T, c net.Conn, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Beyond MaxConns busy connections, a new one is not served until one of
// them ends.
func TestMaxConnsBusy(t *testing.T) {
	entered := make(chan string, 3)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.URL.Path
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	addr := start(t, h, Options{MaxConns: 2})
	defer close(release)
	busy := []net.Conn{dial(t, addr), dial(t, addr)}
	for i, c := range busy {
		get(t, c, fmt.Sprintf("/%d", i))
		<-entered
	}
	third := dial(t, addr)
	get(t, third, "/third")
	select {
	case p := <-entered:
		t.Fatalf("%s served beside 2 busy connections, with MaxConns 2", p)
	case <-time.After(200 * time.Millisecond):
	}
	busy[0].Close()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting connection was not served once a busy one closed")
	}
}

// At MaxConns, connections idle between requests make room for new ones,
// the one idle longest first; so does one that goes idle while a new
// connection waits.
func TestMaxConnsIdle(t *testing.T) {
	block := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			<-block
		}
		io.WriteString(w, "ok")
	})
	addr := start(t, h, Options{MaxConns: 2})
	first, second := dial(t, addr), dial(t, addr)
	for _, c := range []net.Conn{first, second} {
		get(t, c, "/")
		if resp, _ := answer(t, c, 5*time.Second); resp.StatusCode != http.StatusOK {
			t.Fatal(resp.Status)
		}
		time.Sleep(10 * time.Millisecond) // so that first is idle longer
	}
	third := dial(t, addr)
	get(t, third, "/")
	if resp, _ := answer(t, third, 5*time.Second); resp.StatusCode != http.StatusOK {
		t.Fatalf("new connection beside 2 idle ones: %s", resp.Status)
	}
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := first.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the connection idle longest was not closed (read %d bytes)", n)
	}
	get(t, second, "/")
	if resp, _ := answer(t, second, 5*time.Second); resp.StatusCode != http.StatusOK {
		t.Fatalf("the other idle connection: %s", resp.Status)
	}

	// second is idle, third busy; fourth takes second's place; fifth
	// waits until third's request ends and third goes idle.
	get(t, third, "/block")
	time.Sleep(50 * time.Millisecond)
	fourth := dial(t, addr)
	get(t, fourth, "/block")
	fifth := dial(t, addr)
	get(t, fifth, "/")
	time.Sleep(100 * time.Millisecond)
	close(block)
	for _, c := range []net.Conn{third, fourth} {
		if resp, _ := answer(t, c, 5*time.Second); resp.StatusCode != http.StatusOK {
			t.Fatalf("blocked request: %s", resp.Status)
		}
	}
	t0 := time.Now()
	if resp, _ := answer(t, fifth, 5*time.Second); resp.StatusCode != http.StatusOK {
		t.Fatalf("connection waiting for an idle one to close: %s", resp.Status)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("waiting connection served after %v, want at once when one goes idle", d)
	}
}
