package enclave

// The enclave's clock.
//
// The only clock inside the TEE is the host's, and the host is not trusted:
// stopped, nothing would expire and retention would delete nothing; put
// back, expired upload authorizations and signed statements would be
// accepted again, and deleted days could be filled again. So the enclave
// reads time as the latest of
//
//   - the host's clock,
//   - the newest time it has used, which never goes back while it runs and
//     which it seals into the store (the time mark) with every journal flush
//     and every maintenance, writes the clock makes anyway, of one shape,
//     whatever the requests: it starts from that mark after a restart,
//   - the newest time in a statement it verified: a health authority's
//     signed result or trace (issued_at) and a GAEN export (its signed end
//     timestamp), so that time moves even if the host stops its clock.
//
// A statement dated more than maxAhead after this time is refused
// (api.CodeFutureDated) rather than believed: one misused authority key
// must not have retention delete the whole window at once.
//
// What the host can still do is slow time down between statements (and
// between restarts, down to the mark), and roll the whole store back with
// an older mark (see the README's threat model).

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/store"
)

// maxAhead is how far after the enclave's clock a signed statement may be
// dated: the skew between an authority's clock and the backend's.
const maxAhead = 5 * time.Minute

// lagLogged is how far behind the enclave's clock the host's must be for
// the enclave to log it: less is an authority's clock a little ahead.
const lagLogged = time.Second

// The time marks in the store: one record of no day for each run of the
// enclave (so that retention never deletes it, and replicas do not write
// over each other's), sealed like the service's secrets (secrets.go) under
// a name of its own, holding the time and the run's head (head.go).
const (
	tableClock = "clock"
	markName   = tableClock + "/mark"
	// markSize is the size of a mark's plaintext: Unix seconds and the
	// head.
	markSize = 16
	// legacyMarkSize is the size of the one shared mark's plaintext that
	// stores written before runs had their own hold: Unix seconds.
	legacyMarkSize = 8
)

// markKey is the key of the shared mark of older stores.
var markKey = []byte("mark")

// trustedClock is the enclave's clock: the host's, never behind the
// newest time it was given or has returned. It is safe for concurrent use.
type trustedClock struct {
	host func() time.Time

	mu sync.Mutex
	// floor is the newest time returned or witnessed.
	floor time.Time
}

// newTrustedClock returns a clock that follows host (nil: time.Now).
func newTrustedClock(host func() time.Time) *trustedClock {
	if host == nil {
		host = time.Now
	}
	return &trustedClock{host: host}
}

// hostNow reads the host's clock without its monotonic reading: the
// enclave compares wall clocks, which is what the host can set.
func (c *trustedClock) hostNow() time.Time { return c.host().Round(0) }

// read returns the time, and how far the host's clock is behind it.
func (c *trustedClock) read() (now time.Time, behind time.Duration) {
	h := c.hostNow()
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.After(c.floor) {
		c.floor = h
		return h, 0
	}
	return c.floor, c.floor.Sub(h)
}

// now returns the time.
func (c *trustedClock) now() time.Time {
	t, _ := c.read()
	return t
}

// raise makes the clock read at least t from now on.
func (c *trustedClock) raise(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.floor) {
		c.floor = t.Round(0)
	}
}

// witness takes t, the time a verified statement was signed, as a time
// that has come, unless it is more than maxAhead after the clock; it
// returns the time then, and whether it took t.
func (c *trustedClock) witness(t time.Time) (time.Time, bool) {
	h := c.hostNow()
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.After(c.floor) {
		c.floor = h
	}
	if t.After(c.floor.Add(maxAhead)) {
		return c.floor, false
	}
	if t.After(c.floor) {
		c.floor = t.Round(0)
	}
	return c.floor, true
}

// Now returns the enclave's time: the host's clock, but never before the
// sealed time mark, the newest time the enclave used, or the newest
// signing time of a statement it verified (see clock.go). The service
// gives it to the code around the enclave whose time matters: the
// gateway's replay guard and the OHTTP key schedule.
func (e *Enclave) Now() time.Time { return e.clock.now() }

// now is Now, for the enclave's own use.
func (e *Enclave) now() time.Time { return e.clock.now() }

// witness takes the signing time of a statement whose signature verified,
// or refuses the statement as future-dated.
func (e *Enclave) witness(what string, signed time.Time) error {
	if now, ok := e.clock.witness(signed); !ok {
		return api.Errorf(api.CodeFutureDated, "%s is dated %s after the backend's time (%s), more than the %s allowed",
			what, signed.Sub(now).Round(time.Second), now.UTC().Format(time.RFC3339), maxAhead)
	}
	return nil
}

// sealMark returns the time mark of t with head n, sealed under this
// run's name.
func (e *Enclave) sealMark(t time.Time, n uint64) ([]byte, error) {
	plain := binary.BigEndian.AppendUint64(nil, uint64(t.Unix()))
	return e.SealSecret(markNameOf(e.heads.id), binary.BigEndian.AppendUint64(plain, n))
}

// openMark opens the time mark stored under key: a run's (with its head)
// or, in a store written before runs had marks of their own, the one
// shared mark (head 0). Bytes changed, sealed under another name or under
// another key-encryption key fail with seal.ErrTampered.
func (e *Enclave) openMark(key, sealed []byte) (t time.Time, id HeadID, n uint64, err error) {
	name, size := markName, legacyMarkSize
	if string(key) != string(markKey) {
		if id, err = parseMarkKey(key); err != nil {
			return t, id, 0, err
		}
		name, size = markNameOf(id), markSize
	}
	plain, err := e.OpenSecret(name, sealed)
	if err != nil {
		return t, id, 0, err
	}
	if len(plain) != size {
		return t, id, 0, fmt.Errorf("enclave: time mark of %d bytes, want %d", len(plain), size)
	}
	if size == markSize {
		n = binary.BigEndian.Uint64(plain[8:])
	}
	return time.Unix(int64(binary.BigEndian.Uint64(plain)), 0).UTC(), id, n, nil
}

// putMark adds this run's time mark of now, with its next head (head.go),
// to b: the caller's write is one the clock makes, so that the mark's
// writes tell the host nothing new.
func (e *Enclave) putMark(ctx context.Context, b *store.Batch, now time.Time) error {
	// Sealed with its head when applied (headStore, head.go); sealed now
	// too, so that a batch applied around headStore is still well formed.
	sealed, err := e.sealMark(now, 0)
	if err != nil {
		return err
	}
	b.Put(tableClock, markKeyOf(e.heads.id), store.NoDay, sealed)
	e.heads.add(b, now)
	return nil
}

// loadMark raises the clock to the newest time mark stored, when the
// enclave starts. A mark that does not open is logged and ignored: the
// host could as well have deleted it, and the enclave then starts, as on
// its first start, from the host's clock; it must not take a time the
// host made up.
func (e *Enclave) loadMark(ctx context.Context) error {
	found := false
	err := e.store.Scan(ctx, tableClock, func(r store.Record) error {
		mark, _, _, err := e.openMark(r.Key, r.Value)
		if err != nil {
			e.log.Error("a stored time mark does not open; ignored (tampered, swapped or from another key-encryption key)", "err", err)
			return nil
		}
		found = true
		e.clock.raise(mark)
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: reading the time marks: %w", err)
	}
	if !found {
		e.log.Info("no time mark stored: the enclave's clock starts at the host's")
	}
	e.reportLag()
	return nil
}

// reportLag logs, at most once between two flushes, that the host's clock
// is behind the enclave's: stopped, put back, or slower than authorities'
// clocks. The line says by how much and nothing else; it is written at
// start and by FlushDue, on the clock, never by a request. The caller holds
// e.mu or has the enclave to itself.
func (e *Enclave) reportLag() {
	_, behind := e.clock.read()
	if behind < lagLogged || e.lagReported {
		return
	}
	e.lagReported = true
	e.log.Warn("the host's clock is behind the enclave's time; the enclave keeps its own", "behind_seconds", int64(behind/time.Second))
}
