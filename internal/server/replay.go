package server

import (
	"crypto/sha256"
	"net/http"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
)

// Oblivious HTTP lets anyone on the path replay an encapsulated request,
// and the gateway cannot tell a replay from the original (RFC 9458,
// section 6.5). A replayed exchange tells the replayer nothing it can read,
// but it is answered and counted again, and its timing can be played with.
// So every inner request carries the client's time in its Date header
// (RFC 9110's HTTP-date, as section 6.5 suggests), the gateway answers only
// requests of the
// last DateWindow (and none older than its own start, since a restart
// empties its memory), and it remembers the requests of that window and
// refuses any it has seen.
//
// Its clock is the enclave's (Config.Now), not the host's: a host that put
// its clock back, while the backend runs or for a restart, would reopen
// the window of requests it could replay. The enclave's clock never goes
// back, and starts after a restart from the time it sealed last.

// DateWindow is how far a request's date may be from the gateway's clock,
// either way.
const DateWindow = 2 * time.Minute

// maxSeen bounds the requests remembered. At the design's peak of a few
// thousand requests a second, two windows of them fit; beyond, requests are
// refused as if replayed until the window moves on, rather than let a
// flood grow the enclave's memory.
const maxSeen = 2_000_000

// replayGuard remembers the requests of the date window.
type replayGuard struct {
	now   func() time.Time
	start time.Time

	mu sync.Mutex
	// seen holds the digests of the requests answered, each with its
	// date, in two generations: cur fills, prev is what it was one window
	// ago; both are checked, and prev is dropped when cur turns over.
	cur, prev map[[16]byte]struct{}
	turned    time.Time
}

// newReplayGuard returns a guard on the clock now; nil means time.Now.
func newReplayGuard(now func() time.Time) *replayGuard {
	if now == nil {
		now = time.Now
	}
	t := now()
	return &replayGuard{now: now, start: t, turned: t, cur: map[[16]byte]struct{}{}, prev: map[[16]byte]struct{}{}}
}

// requestID identifies an encapsulated request by a digest of its header
// and the start of its HPKE encapsulated key, which is fresh for every
// request a client makes: two requests share it only if one is a copy of
// the other.
func requestID(encapsulated []byte) [16]byte {
	sum := sha256.Sum256(encapsulated[:min(len(encapsulated), requestIDPrefix)])
	return [16]byte(sum[:16])
}

// requestIDPrefix covers the request header (7 bytes) and the first 32
// bytes of the encapsulated key, fresh randomness for every request under
// either KEM conftrace offers.
const requestIDPrefix = 7 + 32

// check admits a decapsulated request once: its date must be within the
// window and not before the gateway started, and its id must not have been
// seen.
func (g *replayGuard) check(d [16]byte, req *bhttp.Request) error {
	var date string
	for _, f := range req.Header {
		if f.Name == "date" {
			date = f.Value
		}
	}
	if date == "" {
		return api.Errorf(api.CodeMalformed, "inner request without a date header")
	}
	at, err := http.ParseTime(date)
	if err != nil {
		return api.Errorf(api.CodeMalformed, "date header %q: want an HTTP-date", date)
	}
	now := g.now()
	if at.Before(now.Add(-DateWindow)) || at.After(now.Add(DateWindow)) || at.Before(g.start.Truncate(time.Second)) {
		return api.Errorf(api.CodeStale, "request dated %s; the gateway answers requests of the %s around its time, %s",
			at.UTC().Format(http.TimeFormat), DateWindow, now.UTC().Format(http.TimeFormat))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch since := now.Sub(g.turned); {
	case since >= 4*DateWindow:
		// Both generations are older than any admissible date.
		g.prev, g.cur, g.turned = map[[16]byte]struct{}{}, map[[16]byte]struct{}{}, now
	case since >= 2*DateWindow:
		g.prev, g.cur, g.turned = g.cur, map[[16]byte]struct{}{}, now
	}
	if _, ok := g.cur[d]; ok {
		return api.Errorf(api.CodeReplayed, "this request was already answered")
	}
	if _, ok := g.prev[d]; ok {
		return api.Errorf(api.CodeReplayed, "this request was already answered")
	}
	if len(g.cur)+len(g.prev) >= maxSeen {
		return api.Errorf(api.CodeTooLarge, "too many requests in the last %s; try again", 2*DateWindow)
	}
	g.cur[d] = struct{}{}
	return nil
}
