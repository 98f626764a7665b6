package enclave

// Rollback detection: replica heads.
//
// The host can replace the store with an older copy of itself: expired
// days come back, and so do upload authorizations that were used since.
// Every record of the copy is sealed and opens, so nothing in it looks
// wrong. What an older copy cannot hold is a write made after it was
// taken. So each running enclave (each replica, and each start of one)
// keeps a head of its own: a counter in its own time mark (clock.go),
// sealed under its own name, that goes up by one with every write the
// clock makes (journal flushes and maintenance: no write that requests
// cause, so the counter tells the host nothing). The writes of a run's
// mark are made one at a time, each with the last committed value plus
// one, and each applies only if the store still holds the mark written
// last (store.Batch.MustHold). So an older copy put in place of the store
// under a running enclave is found at its next clock write, before a new
// head could be written over the copy, and maintenance reads the mark
// back too (CheckOwnHead); the enclave then refuses to write anything
// more (ErrRolledBack) and says so.
//
// A replica that starts asks a live one (package keyrelease, --peer) for
// the heads it has confirmed, in the same attested answer that carries the
// key-encryption key, and refuses a store whose head of that replica is
// lower (CheckHeads): the copy is older than what the live replica knows
// it wrote.
//
// What is not detected: a lone replica that restarts on an older copy
// (nobody alive remembers a newer head; a TEE's monotonic counter would,
// and none is used); a rollback under a running replica until its next
// clock write; a copy whose only missing writes are those of replicas no
// longer alive; and a host that runs an old copy beside the real store
// and points a new replica at a peer of that copy.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/conftrace/conftrace/internal/store"
)

// ErrRolledBack means the store is older than writes a replica made to it:
// the host restored an older copy, or deleted a time mark.
var ErrRolledBack = errors.New("enclave: the store was rolled back: it lacks writes a replica made")

// HeadID names one enclave run: its time mark and head.
type HeadID [16]byte

// String returns the hexadecimal form of id.
func (id HeadID) String() string { return hex.EncodeToString(id[:]) }

// markKeyOf is the key of run id's time mark in tableClock.
func markKeyOf(id HeadID) []byte { return []byte(string(markKey) + "/" + id.String()) }

// markNameOf is the sealing name of run id's time mark.
func markNameOf(id HeadID) string { return markName + "/" + id.String() }

// parseMarkKey returns the run whose mark key is key.
func parseMarkKey(key []byte) (HeadID, error) {
	var id HeadID
	hexID, ok := bytes.CutPrefix(key, append(markKey, '/'))
	if !ok || hex.DecodedLen(len(hexID)) != len(id) {
		return id, fmt.Errorf("enclave: %q is not a time mark's key", key)
	}
	if _, err := hex.Decode(id[:], hexID); err != nil {
		return id, fmt.Errorf("enclave: %q is not a time mark's key", key)
	}
	return id, nil
}

// heads is an enclave run's head.
type heads struct {
	id HeadID

	mu sync.Mutex
	// pending are the batches that carry this run's mark, not yet
	// applied: the time of the mark and the index of its op.
	pending map[*store.Batch]pendingMark

	// applying serialises the writes of the mark, and guards what follows.
	applying sync.Mutex
	// confirmed is the last head the store acknowledged, and last the
	// sealed mark that carried it; rolledBack is set once the store was
	// found to hold something else.
	confirmed  uint64
	last       []byte
	rolledBack bool
}

type pendingMark struct {
	at time.Time
	op int
}

func newHeads() *heads {
	h := &heads{pending: make(map[*store.Batch]pendingMark)}
	rand.Read(h.id[:])
	return h
}

// add notes that b's last op is this run's mark of at, to be sealed with
// its head when b is applied (headStore).
func (h *heads) add(b *store.Batch, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) > 64 {
		// Batches built but never applied (a failure before Apply).
		clear(h.pending)
	}
	h.pending[b] = pendingMark{at: at, op: len(b.Ops) - 1}
}

func (h *heads) take(b *store.Batch) (pendingMark, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pm, ok := h.pending[b]
	delete(h.pending, b)
	return pm, ok
}

// headStore is the enclave's store: every batch that carries this run's
// mark is sealed, at the moment it is applied, with the last committed
// head plus one, one batch at a time, and applies only if the store still
// holds the mark this run wrote last (store.Batch.MustHold). So an older
// copy put in place of the store is found at the next write the clock
// makes, before that write could cover it up with a newer head.
type headStore struct {
	store.Store
	e *Enclave
}

// Apply implements store.Store.
func (s headStore) Apply(ctx context.Context, b *store.Batch) error {
	h := s.e.heads
	pm, ok := h.take(b)
	if !ok {
		return s.Store.Apply(ctx, b)
	}
	h.applying.Lock()
	defer h.applying.Unlock()
	key := markKeyOf(h.id)
	checks := len(b.Checks)
	defer func() { b.Checks = b.Checks[:checks] }()
	for adopted := false; ; adopted = true {
		if h.rolledBack {
			return ErrRolledBack
		}
		n := h.confirmed + 1
		sealed, err := s.e.sealMark(pm.at, n)
		if err != nil {
			return err
		}
		b.Ops[pm.op].Value = sealed
		b.Checks = b.Checks[:checks]
		if h.last == nil {
			b.MustNotExist(tableClock, key)
		} else {
			b.MustHold(tableClock, key, h.last)
		}
		err = s.Store.Apply(ctx, b)
		var ce *store.ConflictError
		switch {
		case err == nil:
			h.confirmed, h.last = n, sealed
			return nil
		case !errors.As(err, &ce) || ce.Check.Table != tableClock || !bytes.Equal(ce.Check.Key, key):
			return err
		case !adopted && s.e.adoptHead(ctx):
			continue
		}
		h.rolledBack = true
		s.e.log.Error("the store was rolled back under this replica: it refuses to write", "run", h.id.String(), "written", h.confirmed)
		return fmt.Errorf("%w (run %s: its time mark is not the one it wrote last, head %d)", ErrRolledBack, h.id, h.confirmed)
	}
}

// adoptHead takes the run's stored mark as written last if it holds the
// next head: a write whose outcome was an error committed all the same.
// The caller holds h.applying.
func (e *Enclave) adoptHead(ctx context.Context) bool {
	h := e.heads
	rec, err := e.store.Get(ctx, tableClock, markKeyOf(h.id))
	if err != nil {
		return false
	}
	if _, _, n, err := e.openMark(rec.Key, rec.Value); err != nil || n != h.confirmed+1 {
		return false
	}
	h.confirmed, h.last = h.confirmed+1, rec.Value
	return true
}

// readHead returns the head in run id's stored mark, 0 if it has none.
func (e *Enclave) readHead(ctx context.Context, id HeadID) (uint64, error) {
	rec, err := e.store.Get(ctx, tableClock, markKeyOf(id))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("enclave: reading a time mark: %w", err)
	}
	_, _, n, err := e.openMark(rec.Key, rec.Value)
	if err != nil {
		return 0, fmt.Errorf("enclave: time mark of run %s: %w", id, err)
	}
	return n, nil
}

// CheckOwnHead reads this run's head back from the store and, if the
// store holds less than it acknowledged, refuses every write from then on
// and returns ErrRolledBack. Maintenance calls it, on the clock.
func (e *Enclave) CheckOwnHead(ctx context.Context) error {
	h := e.heads
	h.applying.Lock()
	defer h.applying.Unlock()
	if h.rolledBack {
		return ErrRolledBack
	}
	got, err := e.readHead(ctx, h.id)
	if err != nil {
		return err
	}
	if got < h.confirmed {
		h.rolledBack = true
		e.log.Error("the store was rolled back under this replica: it refuses to write", "run", h.id.String(), "stored", got, "written", h.confirmed)
		return fmt.Errorf("%w (run %s: the store holds head %d, %d was written)", ErrRolledBack, h.id, got, h.confirmed)
	}
	// A write whose outcome was an error may have committed all the same.
	h.confirmed = got
	return nil
}

// Heads returns the heads this enclave knows the store holds: its own
// run's, as last committed. A replica hands them to one that starts.
func (e *Enclave) Heads() map[HeadID]uint64 {
	h := e.heads
	h.applying.Lock()
	defer h.applying.Unlock()
	if h.confirmed == 0 {
		return map[HeadID]uint64{}
	}
	return map[HeadID]uint64{h.id: h.confirmed}
}

// CheckHeads refuses a store that holds any of want's heads at a lower
// value: a live replica wrote what this store lacks.
func (e *Enclave) CheckHeads(ctx context.Context, want map[HeadID]uint64) error {
	for id, n := range want {
		got, err := e.readHead(ctx, id)
		if err != nil {
			return err
		}
		if got < n {
			return fmt.Errorf("%w: a live replica wrote head %d of run %s, the store holds %d", ErrRolledBack, n, id, got)
		}
	}
	return nil
}
