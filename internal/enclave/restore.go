package enclave

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/store"
)

// A restart reads every journal row, and at national scale that is 10^8
// sightings and more: the rows are opened and their uploads decoded on
// GOMAXPROCS goroutines while the store is scanned, and the entries go to
// bulk loaders that sort each index shard once at the end, rather than
// merging upload by upload (matchindex.Loader). What the indexes hold after
// a restore does not depend on the order the rows come in, so it is the
// same as after applying the records one by one in the order they were
// made (applyJournal).

// restoreBatch is how many rows the scan hands a worker at once: enough to
// make the channel's cost negligible beside opening them.
const restoreBatch = 64

// restore is a journal restore in progress.
type restore struct {
	e               *Enclave
	first           calendar.Day // rows of days before it no longer open
	recip, oneSided *bulkLoader

	mu sync.Mutex
	// recs are the records whose rows were read, by sequence number; a
	// complete record keeps its entry, without data, so that a row that
	// comes again is refused rather than applied twice.
	recs  map[uint64]*restoreRecord
	marks [][16]byte // result keys of the upload marks read
	seq   uint64     // the highest sequence number read

	bad, expired, filler, records atomic.Int64
}

// restoreRecord is a record whose rows are being gathered.
type restoreRecord struct {
	kind byte
	day  calendar.Day
	id   [16]byte
	have int
	done bool
	data [][]byte
}

// restoreJournal reads the journal when the enclave starts, indexes every
// complete upload record and applies every upload mark, as replaying the
// records one by one with applyJournal would. Rows of days past the
// window no longer open and are skipped; rows that do not open otherwise,
// and records that do not decode, are reported and skipped.
func (e *Enclave) restoreJournal(ctx context.Context) error {
	first, _ := e.window(e.now())
	r := &restore{e: e, first: first, recip: newBulkLoader(e.index), oneSided: newBulkLoader(e.oneSided), recs: map[uint64]*restoreRecord{}}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	batches := make(chan []store.Record, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			// After a failure the batches are drained, not read, so that
			// the scan never blocks.
			for batch := range batches {
				for i := 0; i < len(batch) && ctx.Err() == nil; i++ {
					if err := r.row(batch[i]); err != nil {
						cancel(err)
					}
				}
			}
		})
	}
	batch := make([]store.Record, 0, restoreBatch)
	err := e.store.Scan(ctx, tableJournal, func(rec store.Record) error {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if batch = append(batch, rec); len(batch) == restoreBatch {
			batches <- batch
			batch = make([]store.Record, 0, restoreBatch)
		}
		return nil
	})
	batches <- batch
	close(batches)
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		return fmt.Errorf("enclave: reading the journal: %w", err)
	}
	return r.finish()
}

// row opens one journal row and files it under its record; the row that
// completes a record applies it.
func (r *restore) row(rec store.Record) error {
	e := r.e
	row, err := e.openJournalRow(rec)
	switch {
	case err != nil && row.day != 0 && row.day < r.first:
		r.expired.Add(1)
		return nil
	case err != nil:
		r.bad.Add(1)
		e.log.Error("journal row does not open; ignored (tampered, swapped or replayed)", "day", rec.Day, "err", err)
		return nil
	case row.kind == journalFiller:
		r.filler.Add(1)
		return nil
	}
	data, x, ok := r.file(row)
	if !ok {
		r.bad.Add(1)
		e.log.Error("journal row does not fit its record; ignored", "day", rec.Day)
		return nil
	}
	if x == nil {
		return nil
	}
	r.records.Add(1)
	defer clear(data)
	return r.apply(x.kind, x.day, x.id, data)
}

// file files row under its record. When the row completes the record, it
// returns the record and its data, which no other row then refers to; ok
// is false if the row does not fit its record.
func (r *restore) file(row journalRow) (data []byte, complete *restoreRecord, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Past every record in the store, complete or not: a new record
	// numbered like an incomplete one would be mixed with its rows.
	r.seq = max(r.seq, row.seq)
	x := r.recs[row.seq]
	if x == nil {
		x = &restoreRecord{kind: row.kind, day: row.day, id: row.id, data: make([][]byte, row.count)}
		r.recs[row.seq] = x
	}
	if x.done || row.count != len(x.data) || x.data[row.index] != nil {
		return nil, nil, false
	}
	x.data[row.index] = row.data
	x.have++
	if x.have < len(x.data) {
		return nil, nil, true
	}
	x.done = true
	if len(x.data) == 1 {
		data = x.data[0]
	} else {
		data = slices.Concat(x.data...)
		for _, d := range x.data {
			clear(d)
		}
	}
	x.data = nil
	return data, x, true
}

// apply applies a complete record: it gives an upload's entries to the
// loaders and keeps a mark for finish, which alone touches the results.
func (r *restore) apply(kind byte, day calendar.Day, id [16]byte, data []byte) error {
	switch kind {
	case journalUploaded:
		r.mu.Lock()
		r.marks = append(r.marks, id)
		r.mu.Unlock()
		return nil
	case journalUpload:
	default:
		r.e.log.Error("journal record of an unknown kind; ignored", "kind", kind)
		return nil
	}
	recip, oneSided, ok := r.e.decodeUpload(day, data)
	if !ok {
		return nil
	}
	defer clear(recip)
	defer clear(oneSided)
	if err := r.recip.add(recip); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	if err := r.oneSided.add(oneSided); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	return nil
}

// finish loads the indexes and applies the marks, once every row is read.
func (r *restore) finish() error {
	e := r.e
	if err := r.recip.load(); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	if err := r.oneSided.load(); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	for _, id := range r.marks {
		if res, ok := e.results[string(id[:])]; ok {
			res.uploaded, res.durable = true, true
		}
	}
	e.journal.seq = max(e.journal.seq, r.seq)
	incomplete := 0
	for seq, x := range r.recs {
		if !x.done {
			incomplete++
			// Another replica may still be writing the rest (follow.go).
			e.adoptPartial(seq, x.kind, x.day, x.id, x.data)
		}
	}
	e.log.Info("journal replayed", "records", r.records.Load(), "incomplete_records", incomplete,
		"refused_rows", r.bad.Load(), "expired_rows", r.expired.Load(), "filler_rows", r.filler.Load())
	return nil
}

// bulkLoader adds a restore's entries to an index: through a
// matchindex.Loader, one sort per shard at the end, when the index is a
// Compact; one Add at a time otherwise.
type bulkLoader struct {
	loader *matchindex.Loader
	mu     sync.Mutex
	idx    matchindex.Index
}

func newBulkLoader(idx matchindex.Index) *bulkLoader {
	if c, ok := idx.(*matchindex.Compact); ok {
		return &bulkLoader{loader: c.NewLoader()}
	}
	return &bulkLoader{idx: idx}
}

// add is safe for concurrent use.
func (b *bulkLoader) add(entries []matchindex.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if b.loader != nil {
		b.loader.Add(entries)
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.idx.Add(entries)
}

func (b *bulkLoader) load() error {
	if b.loader == nil {
		return nil
	}
	return b.loader.Load()
}
