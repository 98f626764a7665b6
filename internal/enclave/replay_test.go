package enclave

import (
	"context"
	"fmt"
	"slices"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// replayJournal is the restore done the simple way, the reference the
// tests hold restoreJournal (restore.go) to: it reads every journal row and
// applies the records whose chunks are all there, one by one, in the order
// they were made.
// Rows of days past the window no longer open (their day's key is gone) and
// are skipped; rows that do not open otherwise are reported.
func (e *Enclave) replayJournal(ctx context.Context, apply func(kind byte, day calendar.Day, id [16]byte, data []byte) error) error {
	type rec struct {
		kind byte
		day  calendar.Day
		id   [16]byte
		seq  uint64
		have int
		data [][]byte
	}
	recs := map[uint64]*rec{}
	var bad, expired, filler int
	first, _ := e.window(e.now())
	err := e.store.Scan(ctx, tableJournal, func(r store.Record) error {
		row, err := e.openJournalRow(r)
		switch {
		case err != nil && row.day != 0 && row.day < first:
			expired++
			return nil
		case err != nil:
			bad++
			e.log.Error("journal row does not open; ignored (tampered, swapped or replayed)", "day", r.Day, "err", err)
			return nil
		case row.kind == journalFiller:
			filler++
			return nil
		}
		// Past every record in the store, complete or not: a new record
		// numbered like an incomplete one would be mixed with its rows.
		e.journal.seq = max(e.journal.seq, row.seq)
		x := recs[row.seq]
		if x == nil {
			x = &rec{kind: row.kind, day: row.day, id: row.id, seq: row.seq, data: make([][]byte, row.count)}
			recs[row.seq] = x
		}
		if row.count != len(x.data) || x.data[row.index] != nil {
			bad++
			e.log.Error("journal row does not fit its record; ignored", "day", r.Day)
			return nil
		}
		x.data[row.index] = row.data
		x.have++
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: reading the journal: %w", err)
	}
	var incomplete int
	for _, seq := range slices.Sorted(func(yield func(uint64) bool) {
		for s := range recs {
			if !yield(s) {
				return
			}
		}
	}) {
		x := recs[seq]
		if x.have < len(x.data) {
			incomplete++
			continue
		}
		data := slices.Concat(x.data...)
		err := apply(x.kind, x.day, x.id, data)
		clear(data)
		if err != nil {
			return err
		}
		e.journal.seq = max(e.journal.seq, seq)
	}
	e.log.Info("journal replayed", "records", len(recs)-incomplete, "incomplete_records", incomplete,
		"refused_rows", bad, "expired_rows", expired, "filler_rows", filler)
	return nil
}
