package httpserve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// start serves h until the test ends and returns its address.
func start(t *testing.T, h http.Handler, opts Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// bodyHandler answers with the length of the body it read through b.
func bodyHandler(b *Bodies) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, release, err := b.Read(w, r)
		if err != nil {
			var be *BodyError
			errors.As(err, &be)
			http.Error(w, be.Reason, be.Status)
			return
		}
		defer release()
		fmt.Fprint(w, len(body))
	})
}

// post opens a connection and sends a request declaring a body of
// declared bytes (none if negative: chunked), then the first bytes of it.
func post(t *testing.T, addr string, declared int, sent string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	length := fmt.Sprintf("Content-Length: %d", declared)
	if declared < 0 {
		length = "Transfer-Encoding: chunked"
	}
	if _, err := fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n%s", length, sent); err != nil {
		t.Fatal(err)
	}
	return c
}

// answer reads the response on c, within d.
func answer(t *testing.T, c net.Conn, d time.Duration) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, strings.TrimSpace(string(b))
}

// waitFree waits until b's budget has exactly free bytes left.
func waitFree(t *testing.T, b *budget, free int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		b.mu.Lock()
		f := b.free
		b.mu.Unlock()
		if f == free {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget has %d bytes free, want %d", f, free)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitWaiters waits until n requests wait for room in b.
func waitWaiters(t *testing.T, b *budget, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		b.mu.Lock()
		k := len(b.waiters)
		b.mu.Unlock()
		if k == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests wait for room, want %d", k, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Bodies that would exceed the budget wait, and are refused unread (503)
// if no room comes; those that get room in time are read.
func TestBodyBudget(t *testing.T) {
	const wait = 500 * time.Millisecond
	b := NewBodies(BodyLimits{Max: 1000, Budget: 2000, Wait: wait, Timeout: 10 * time.Second})
	addr := start(t, bodyHandler(b), Options{})

	// Two stalled bodies hold the whole budget.
	c1 := post(t, addr, 1000, "x")
	c2 := post(t, addr, 1000, "x")
	waitFree(t, b.all, 0)

	// A third is refused once the wait is over, without its body: it
	// sent none.
	t0 := time.Now()
	c3 := post(t, addr, 1000, "")
	resp, _ := answer(t, c3, 5*time.Second)
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third body: %s, close %v, Retry-After %q; want 503, closing, with Retry-After", resp.Status, resp.Close, resp.Header.Get("Retry-After"))
	}
	if d := time.Since(t0); d < wait {
		t.Errorf("third body refused after %v, before the wait of %v", d, wait)
	}

	// A fourth gets the room the first leaves while it waits.
	c4 := post(t, addr, 1000, strings.Repeat("x", 1000))
	waitWaiters(t, b.all, 1)
	io.WriteString(c1, strings.Repeat("x", 999))
	for i, c := range []net.Conn{c1, c4} {
		if resp, got := answer(t, c, 5*time.Second); resp.StatusCode != http.StatusOK || got != "1000" {
			t.Errorf("body %d: %s %q, want 200 1000", []int{1, 4}[i], resp.Status, got)
		}
	}
	// An empty body holds nothing, so it never waits.
	if resp, got := answer(t, post(t, addr, 0, ""), time.Second); resp.StatusCode != http.StatusOK || got != "0" {
		t.Errorf("empty body: %s %q, want 200 0", resp.Status, got)
	}
	c2.Close()
	waitFree(t, b.all, 2000)
}

// A flood of the largest bodies fills only their share of the budget:
// smaller bodies are still read.
func TestBodyLargeShare(t *testing.T) {
	b := NewBodies(BodyLimits{Max: 1000, Budget: 2000, Large: 100, Wait: 200 * time.Millisecond, Timeout: 10 * time.Second})
	addr := start(t, bodyHandler(b), Options{})
	post(t, addr, 1000, "x")
	waitFree(t, b.large, 0)
	if resp, _ := answer(t, post(t, addr, 1000, ""), 5*time.Second); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second large body: %s, want 503", resp.Status)
	}
	for range 3 {
		resp, got := answer(t, post(t, addr, 100, strings.Repeat("x", 100)), 5*time.Second)
		if resp.StatusCode != http.StatusOK || got != "100" {
			t.Errorf("small body beside a stalled large one: %s %q, want 200 100", resp.Status, got)
		}
	}
}

// The body deadline is fixed when the body gets room: a sender that
// trickles bytes does not extend it. Once the body is in, the deadline no
// longer applies: a handler may run past it.
func TestBodyDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	b := NewBodies(BodyLimits{Max: 1000, Timeout: timeout})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, release, err := b.Read(w, r)
		if err != nil {
			var be *BodyError
			errors.As(err, &be)
			http.Error(w, be.Reason, be.Status)
			return
		}
		defer release()
		if r.Header.Get("Sleep") != "" {
			time.Sleep(2 * timeout)
		}
		fmt.Fprint(w, r.Context().Err())
	})
	addr := start(t, slow, Options{})

	c := post(t, addr, 100, "")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// 100 bytes at one per 20 ms would take 2 s.
		for range 100 {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
		}
	}()
	t0 := time.Now()
	resp, _ := answer(t, c, 5*time.Second)
	if d := time.Since(t0); resp.StatusCode != http.StatusRequestTimeout || d > timeout+time.Second {
		t.Errorf("trickled body: %s after %v; want 408 after about %v", resp.Status, d, timeout)
	}

	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "POST / HTTP/1.1\r\nHost: x\r\nSleep: 1\r\nContent-Length: 3\r\n\r\nabc")
	if resp, got := answer(t, c2, 5*time.Second); resp.StatusCode != http.StatusOK || got != "<nil>" {
		t.Errorf("handler running past the body deadline: %s, context error %q; want 200, <nil>", resp.Status, got)
	}
}

// Bodies longer than Max are refused: unread if declared so, else once
// Max bytes are in. A chunked body within Max is read whole.
func TestBodyTooLarge(t *testing.T) {
	b := NewBodies(BodyLimits{Max: 1000})
	addr := start(t, bodyHandler(b), Options{})
	if resp, _ := answer(t, post(t, addr, 1001, ""), 5*time.Second); resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Errorf("declared 1001 bytes: %s, close %v; want 413, closing", resp.Status, resp.Close)
	}
	chunk := func(n int) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", n, strings.Repeat("x", n)) }
	if resp, got := answer(t, post(t, addr, -1, chunk(1000)), 5*time.Second); resp.StatusCode != http.StatusOK || got != "1000" {
		t.Errorf("chunked 1000 bytes: %s %q, want 200 1000", resp.Status, got)
	}
	if resp, _ := answer(t, post(t, addr, -1, chunk(1001)), 5*time.Second); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked 1001 bytes: %s, want 413", resp.Status)
	}
	// A body cut short is a bad request, and gives its room back.
	c := post(t, addr, 1000, "abc")
	c.(*net.TCPConn).CloseWrite()
	if resp, _ := answer(t, c, 5*time.Second); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("truncated body: %s, want 400", resp.Status)
	}
	waitFree(t, b.all, DefaultBodyBudget)
}

// The budget serves waiters in order: a small request does not overtake a
// large one that waits, and a waiter that gives up lets those behind it in.
func TestBudgetOrder(t *testing.T) {
	b := newBudget(10)
	ctx := context.Background()
	if err := b.acquire(ctx, 6); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 3)
	gctx, giveUp := context.WithCancel(ctx)
	go func() {
		if err := b.acquire(gctx, 5); err != nil {
			got <- "gave up"
		}
	}()
	waitWaiters(t, b, 1)
	go func() { b.acquire(ctx, 4); got <- "small" }()
	waitWaiters(t, b, 2)
	select {
	case s := <-got:
		t.Fatalf("%s went ahead of a waiting larger request", s)
	case <-time.After(20 * time.Millisecond):
	}
	giveUp()
	if s, s2 := <-got, <-got; s+s2 != "gave upsmall" && s+s2 != "smallgave up" {
		t.Fatalf("got %q and %q, want the first waiter to give up and the second to get in", s, s2)
	}
	b.release(6)
	b.release(4)
	if b.free != 10 || len(b.waiters) != 0 {
		t.Errorf("after all releases: %d free, %d waiting; want 10, 0", b.free, len(b.waiters))
	}
}
