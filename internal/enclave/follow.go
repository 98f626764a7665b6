package enclave

// Replicas. Any number of enclaves may share one store (PostgreSQL, in a
// deployment of several replicas); docs/replicas.md gives the design. Each
// keeps in memory what answers need (results, match indexes, day keys), so
// each follows what the others write: the store numbers every put in the
// order puts commit (store.Record.Seq), and Follow reads, every
// followEvery, the records of followTables numbered above the last it
// read (store.Store.Since), and applies those another replica wrote:
//
//   - a day key is loaded, replacing any this enclave made for the day but
//     did not store (there is one key per day in the store, whichever
//     replica made it: sealPutBytes and ensureDayKeysLocked never
//     overwrite a stored key);
//   - a result joins the results, if it is not there yet;
//   - a time mark raises the clock (clock.go), so that the replicas'
//     clocks keep to the newest of them;
//   - a journal row is opened; rows this run wrote, filler, and rows the
//     start's restore read are skipped; the rows of a record are gathered,
//     and the row that completes one applies it (applyJournal), once.
//
// Where the follower starts: loadDayKeys, the first read of Open, notes
// the store's head, and every table is followed from there, so nothing
// committed after that is missed. Day keys, results and time marks are
// idempotent to apply again, but an upload is not (its sightings would
// count twice), so journal rows are applied only above the highest
// number the restore's scan read (journal.restored): a scan visits every
// record committed when it began and none put later (store.Store.Scan).
//
// What the host sees: a read of the store every followEvery, whatever the
// requests, and, when a journal row or a result arrives sealed under a day
// key this enclave has not loaded yet, a read of that key. Both follow
// from what the host wrote or saw written, not from a phone's request.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
)

// followEvery is how often Follow reads what other replicas wrote: an
// upload one of them made durable matches on this one within it, and the
// time the read takes.
const followEvery = 250 * time.Millisecond

// followTables are the tables Follow reads, in the order of the store's
// sequence numbers: a day key before what is sealed under it, a result
// before its upload's mark. (Imported GAEN keys and GPS traces are read
// at start only; see docs/replicas.md.)
var followTables = []string{tableDayKeys, tableResults, tableClock, tableJournal}

// replica is what an enclave keeps to share its store with other replicas.
type replica struct {
	// stored holds the days whose key in the keyring is the one in the
	// store: the key this enclave loaded, or stored itself, or found
	// stored. Guarded by e.mu.
	stored map[calendar.Day]bool

	// mu is held by a catch-up (one at a time) and guards what follows.
	mu sync.Mutex
	// after is the highest sequence number read.
	after   uint64
	started bool
	// journalFrom is the highest sequence number of a journal row the
	// start's restore read: rows at or below it are applied already.
	journalFrom uint64
	// partial are the records of which some rows were read, by sequence
	// number; done is the count (journal.go) of the last record completed
	// of each writer.
	partial map[uint64]*partialRecord
	done    map[uint32]uint32
	// failing is set while catch-ups fail, so that Follow logs a failure
	// once rather than every followEvery.
	failing bool
}

// partialRecord is a journal record whose rows are being gathered.
type partialRecord struct {
	kind byte
	day  calendar.Day
	id   [16]byte
	have int
	data [][]byte
}

// startFollowing makes the follower start at the store's head, before the
// enclave reads the store at start. Open calls it, through loadDayKeys.
func (e *Enclave) startFollowing(ctx context.Context) error {
	head, err := e.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("enclave: reading the store's head: %w", err)
	}
	r := &e.replica
	r.after = head
	r.stored = map[calendar.Day]bool{}
	r.partial = map[uint64]*partialRecord{}
	r.done = map[uint32]uint32{}
	return nil
}

// Follow applies what other replicas sharing the store write, every
// followEvery until ctx ends (see CatchUp). The service runs it beside
// the flushes; with one replica it reads its own writes and skips them.
func (e *Enclave) Follow(ctx context.Context) {
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		err := e.CatchUp(ctx)
		switch r := &e.replica; {
		case err != nil && ctx.Err() == nil:
			r.mu.Lock()
			if !r.failing {
				e.log.Error("following the other replicas failed; retrying", "err", err)
			}
			r.failing = true
			r.mu.Unlock()
		case err == nil:
			r.mu.Lock()
			if r.failing {
				e.log.Info("following the other replicas again")
			}
			r.failing = false
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CatchUp reads what was written to the store since the last catch-up (or
// since the enclave started) and applies what other replicas wrote: their
// day keys, results, time marks and journal records. A record that does
// not open is logged and skipped; a failure of the store is returned, and
// the next catch-up reads again from the first record not applied.
func (e *Enclave) CatchUp(ctx context.Context) error {
	r := &e.replica
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stored == nil {
		return errors.New("enclave: following: not started (Open starts it)")
	}
	if !r.started {
		r.journalFrom = e.journal.restored.Load()
		r.started = true
	}
	first, _ := e.window(e.now())
	r.forget(first)
	err := e.store.Since(ctx, r.after, followTables, func(rec store.Record) error {
		if err := e.follow(ctx, rec, first); err != nil {
			return err
		}
		r.after = rec.Seq
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: following: %w", err)
	}
	return nil
}

// follow applies one record another replica may have written. The caller
// holds e.replica.mu.
func (e *Enclave) follow(ctx context.Context, rec store.Record, first calendar.Day) error {
	switch rec.Table {
	case tableDayKeys:
		e.followDayKey(rec, first)
	case tableResults:
		return e.followResult(ctx, rec, first)
	case tableClock:
		mark, _, _, err := e.openMark(rec.Key, rec.Value)
		if err != nil {
			e.log.Error("a time mark written does not open; ignored (tampered, swapped or from another key-encryption key)", "err", err)
			return nil
		}
		e.clock.raise(mark)
	case tableJournal:
		return e.followRow(ctx, rec, first)
	}
	return nil
}

// dayKeyKey is the key of day's record in tableDayKeys.
func dayKeyKey(day calendar.Day) []byte { return binary.BigEndian.AppendUint32(nil, uint32(day)) }

// followDayKey loads a day key a replica stored.
func (e *Enclave) followDayKey(rec store.Record, first calendar.Day) {
	if len(rec.Key) != 4 || binary.BigEndian.Uint32(rec.Key) != uint32(rec.Day) {
		e.log.Error("day key record misplaced; ignored", "table", tableDayKeys, "day", rec.Day)
		return
	}
	if rec.Day < first {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.loadDayKeyLocked(rec)
}

// loadDayKeyLocked loads a stored day key and notes it stored. The caller
// holds e.mu.
func (e *Enclave) loadDayKeyLocked(rec store.Record) {
	err := e.keys.Load(rec.Day, rec.Value)
	switch {
	case errors.Is(err, seal.ErrDayDeleted):
		// Expired here meanwhile.
	case err != nil:
		e.log.Error("day key does not unwrap; that day's records are unreadable", "day", rec.Day, "err", err)
	default:
		e.replica.stored[rec.Day] = true
	}
}

// openSealed opens what open opens, loading the day's key from the store
// first if the keyring has none: a replica stored it, and its record may
// come later in the store's order, or not at all to this follower (it was
// put again).
func (e *Enclave) openSealed(ctx context.Context, day calendar.Day, open func() error) error {
	err := open()
	if !errors.Is(err, seal.ErrNoDayKey) {
		return err
	}
	rec, gerr := e.store.Get(ctx, tableDayKeys, dayKeyKey(day))
	switch {
	case errors.Is(gerr, store.ErrNotFound):
		return err
	case gerr != nil:
		return &storeError{gerr}
	}
	e.mu.Lock()
	e.loadDayKeyLocked(rec)
	e.mu.Unlock()
	return open()
}

// storeError is a failure of the store while following, which stops a
// catch-up rather than skip a record.
type storeError struct{ err error }

func (s *storeError) Error() string { return "reading a day key: " + s.err.Error() }
func (s *storeError) Unwrap() error { return s.err }

// followResult adds a result a replica stored, unless it is known.
func (e *Enclave) followResult(ctx context.Context, rec store.Record, first calendar.Day) error {
	if rec.Day < first {
		return nil
	}
	var plain []byte
	err := e.openSealed(ctx, rec.Day, func() (err error) {
		plain, err = e.keys.Open(rec.Day, tableResults, rec.Key, rec.Value)
		return err
	})
	var se *storeError
	if errors.As(err, &se) {
		return se
	}
	if err != nil {
		e.log.Error("stored result does not open; ignored (tampered, swapped or replayed)", "day", rec.Day, "err", err)
		return nil
	}
	var rr resultRecord
	err = unmarshalPadded(plain, &rr)
	clear(plain)
	if err != nil || len(rec.Key) != authKeyLen {
		e.log.Error("stored result does not decode; ignored", "day", rec.Day, "err", err)
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if first, _ := e.window(e.now()); rec.Day < first {
		return nil // expired meanwhile
	}
	if _, ok := e.results[string(rec.Key)]; !ok {
		e.results[string(rec.Key)] = &result{resultRecord: rr, day: rec.Day}
	}
	return nil
}

// followRow gathers a journal row another replica wrote into its record,
// and applies the record once its last row is read. The caller holds
// e.replica.mu.
func (e *Enclave) followRow(ctx context.Context, rec store.Record, first calendar.Day) error {
	r := &e.replica
	row, err := e.openJournalRow(rec)
	if errors.Is(err, seal.ErrNoDayKey) && row.day != 0 {
		// The day is in the header, which opened: read its key.
		err = e.openSealed(ctx, row.day, func() (err error) {
			row, err = e.openJournalRow(rec)
			return err
		})
	}
	var se *storeError
	switch {
	case errors.As(err, &se):
		return se
	case err != nil && row.day != 0 && row.day < first:
		return nil
	case err != nil:
		e.log.Error("journal row does not open; ignored (tampered, swapped or replayed)", "day", rec.Day, "err", err)
		return nil
	case row.kind == journalFiller, e.journal.own(row.seq), rec.Seq <= r.journalFrom, row.day < first:
		return nil
	}
	writer, count := uint32(row.seq>>32), uint32(row.seq)
	x := r.partial[row.seq]
	if x == nil {
		if done, ok := r.done[writer]; ok && count <= done {
			e.log.Error("journal row of a record already applied; ignored (replayed)", "day", rec.Day)
			return nil
		}
		x = &partialRecord{kind: row.kind, day: row.day, id: row.id, data: make([][]byte, row.count)}
		r.partial[row.seq] = x
	}
	if row.count != len(x.data) || x.data[row.index] != nil {
		e.log.Error("journal row does not fit its record; ignored", "day", rec.Day)
		return nil
	}
	x.data[row.index] = row.data
	if x.have++; x.have < len(x.data) {
		return nil
	}
	delete(r.partial, row.seq)
	r.done[writer] = max(r.done[writer], count)
	data := x.data[0]
	if len(x.data) > 1 {
		data = slices.Concat(x.data...)
		for _, d := range x.data {
			clear(d)
		}
	}
	defer clear(data)
	e.mu.Lock()
	defer e.mu.Unlock()
	if first, _ := e.window(e.now()); x.day < first {
		return nil // expired meanwhile: Expire dropped its day
	}
	if err := e.applyJournal(x.kind, x.day, x.id, data); err != nil {
		e.log.Error("a journal record another replica wrote does not apply; ignored", "day", x.day, "err", err)
	}
	return nil
}

// adoptPartial takes over a journal record that the start's restore read
// only some rows of: another replica may be writing the rest, which the
// follower reads. data has the rows read, nil for the others. Open calls
// it, from the restore, before following starts.
func (e *Enclave) adoptPartial(seq uint64, kind byte, day calendar.Day, id [16]byte, data [][]byte) {
	r := &e.replica
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.partial == nil || len(data) == 0 {
		return
	}
	x := &partialRecord{kind: kind, day: day, id: id, data: data}
	for _, d := range data {
		if d != nil {
			x.have++
		}
	}
	r.partial[seq] = x
}

// forget drops the records being gathered of days before first. The
// caller holds r.mu.
func (r *replica) forget(first calendar.Day) {
	for seq, x := range r.partial {
		if x.day < first {
			for _, d := range x.data {
				clear(d)
			}
			delete(r.partial, seq)
		}
	}
}
