package httpserve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// Defaults of BodyLimits.
const (
	// DefaultBodyBudget holds 32 bodies of 1 MiB, the largest request
	// class, or hundreds of the 16 to 64 KiB requests of a daily check: far
	// more than a backend reads at once at its design peak (about 10^3
	// checks a second, each read in milliseconds from a relay), and a
	// small, fixed share of an enclave's memory. A request in flight holds
	// a few times its body (ciphertext, plaintext, decoded form), so this
	// bounds the gateway's working memory to about a hundred MiB.
	DefaultBodyBudget = 32 << 20
	// DefaultBodyWait lets a burst pass without refusals, and refuses a
	// flood soon enough that its requests do not pile up.
	DefaultBodyWait = 2 * time.Second
	// DefaultBodyTimeout reads 1 MiB at 560 kbit/s and a 256 KiB check at
	// 140 kbit/s, slow mobile uplinks; with ReadHeaderTimeout and
	// DefaultBodyWait it ends before the server's ReadTimeout.
	DefaultBodyTimeout = 15 * time.Second
)

// BodyLimits bound the request bodies that a handler reads whole.
type BodyLimits struct {
	// Max is the longest body accepted, in bytes (required). A longer one
	// is refused (413), unread if its declared length says so.
	Max int64
	// Budget bounds the body bytes held at once by all requests that
	// read through one Bodies; zero means DefaultBodyBudget, and less than
	// Max means Max. Each request is charged its declared length (Max if
	// it declares none) from before its body is read until it calls
	// release, so memory is charged before it is allocated.
	Budget int64
	// Large, if positive, makes bodies declared longer than Large share
	// at most half of Budget (but at least Max), so that a flood of the
	// largest bodies leaves room for the smaller, everyday ones.
	Large int64
	// Wait is how long a request waits for room in the budget before it is
	// refused (503) with its body unread; zero means DefaultBodyWait.
	Wait time.Duration
	// Timeout bounds reading one body, counted from when it gets room: a
	// fixed deadline, which a slow sender cannot extend by trickling
	// bytes; zero means DefaultBodyTimeout. It tightens the server's own
	// ReadTimeout, which bounds the whole request.
	Timeout time.Duration
}

// Bodies reads request bodies whole within BodyLimits. It is safe for
// concurrent use; share one among the handlers whose bodies it should
// bound together.
type Bodies struct {
	limits     BodyLimits
	all, large *budget
}

// NewBodies returns a Bodies for l, with defaults for its zero fields.
func NewBodies(l BodyLimits) *Bodies {
	if l.Max <= 0 {
		panic("httpserve: BodyLimits.Max must be positive")
	}
	if l.Budget == 0 {
		l.Budget = DefaultBodyBudget
	}
	l.Budget = max(l.Budget, l.Max)
	if l.Wait <= 0 {
		l.Wait = DefaultBodyWait
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultBodyTimeout
	}
	b := &Bodies{limits: l, all: newBudget(l.Budget)}
	if l.Large > 0 {
		b.large = newBudget(max(l.Budget/2, l.Max))
	}
	return b
}

// A BodyError is why Read refused a body, with the status to answer.
type BodyError struct {
	Status int
	Reason string
}

func (e *BodyError) Error() string { return e.Reason }

// Read reads r's body whole. On success the caller must call release once
// it no longer holds the body (or anything as large derived from it), to
// give its share of the budget back. On failure Read has already marked
// the response as the last on its connection (see DropBody); the caller
// answers with the error's Status.
func (b *Bodies) Read(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	l := b.limits
	n := r.ContentLength
	if n > l.Max {
		DropBody(w)
		return nil, nil, &BodyError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes, more than %d", n, l.Max)}
	}
	charge := n
	if n < 0 {
		charge = l.Max
	}
	ctx, cancel := context.WithTimeout(r.Context(), l.Wait)
	release, err = b.acquire(ctx, charge)
	cancel()
	if err != nil {
		DropBody(w)
		w.Header().Set("Retry-After", "1")
		return nil, nil, &BodyError{http.StatusServiceUnavailable, "too many request bodies in flight"}
	}
	// Unsupported only where there is no connection (tests with a
	// recorder); the server's ReadTimeout still applies. net/http clears
	// the deadline as the body ends, so it does not outlive the body and
	// cancel the request under a handler that runs past it.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(l.Timeout))
	body, err = readBody(r.Body, n, l.Max)
	if err != nil {
		release()
		DropBody(w)
		var be *BodyError
		switch {
		case errors.As(err, &be):
			return nil, nil, be
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, nil, &BodyError{http.StatusRequestTimeout, fmt.Sprintf("request body not read within %v", l.Timeout)}
		}
		return nil, nil, &BodyError{http.StatusBadRequest, "reading request body: " + err.Error()}
	}
	return body, release, nil
}

// readBody reads a body of declared length n (negative if undeclared) into
// a buffer allocated once at its final size, so that a slow body costs
// what it will hold and nothing grows or is copied on the way.
func readBody(src io.Reader, n, limit int64) ([]byte, error) {
	if n >= 0 {
		buf := make([]byte, n)
		if _, err := io.ReadFull(src, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	// Undeclared (chunked): charged and allocated at the limit, plus a
	// byte to tell a body of exactly limit bytes from a longer one.
	buf := make([]byte, limit+1)
	got, err := io.ReadFull(src, buf)
	switch {
	case err == nil:
		return nil, &BodyError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body longer than %d bytes", limit)}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return buf[:got:got], nil
	}
	return nil, err
}

func (b *Bodies) acquire(ctx context.Context, n int64) (release func(), err error) {
	if n == 0 {
		// Nothing to hold: no reason to queue behind those who do.
		return func() {}, nil
	}
	if b.large != nil && n > b.limits.Large {
		if err := b.large.acquire(ctx, n); err != nil {
			return nil, err
		}
		if err := b.all.acquire(ctx, n); err != nil {
			b.large.release(n)
			return nil, err
		}
		var once sync.Once
		return func() { once.Do(func() { b.all.release(n); b.large.release(n) }) }, nil
	}
	if err := b.all.acquire(ctx, n); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { b.all.release(n) }) }, nil
}

// DropBody marks the response as the last on its connection, for a
// handler that answers without reading the body: net/http would otherwise
// read and discard up to 256 KiB of it to keep the connection, waiting on
// a stalled sender until the read timeout. What is already on its way still
// gets a second to drain, so that a client that sent its whole request
// reads the answer rather than a reset.
func DropBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Second))
}

// budget is a weighted semaphore over bytes. Waiters are served in order,
// so that a large request is not starved by a stream of small ones.
type budget struct {
	mu      sync.Mutex
	free    int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{} // closed when the bytes are granted
}

func newBudget(n int64) *budget { return &budget{free: n} }

// acquire takes n bytes, waiting until they are free or ctx ends. n must
// not exceed the budget's size.
func (b *budget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.free >= n {
		b.free -= n
		b.mu.Unlock()
		return nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted as the wait ended: keep it.
		return nil
	default:
	}
	i := slices.Index(b.waiters, w)
	b.waiters = slices.Delete(b.waiters, i, i+1)
	if i == 0 {
		// It may have been all that held back those behind it.
		b.grantLocked()
	}
	return ctx.Err()
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.free += n
	b.grantLocked()
	b.mu.Unlock()
}

func (b *budget) grantLocked() {
	for len(b.waiters) > 0 && b.waiters[0].n <= b.free {
		w := b.waiters[0]
		b.free -= w.n
		close(w.ready)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
	}
}
