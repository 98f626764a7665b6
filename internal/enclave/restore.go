package enclave

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/store"
)

// A restart reads every journal row, and at national scale that is 10^8
// sightings and more: the rows are opened and their uploads decoded on
// GOMAXPROCS goroutines while the store is scanned, and the entries go, in
// batches of many uploads, to bulk loaders that sort each index shard once
// at the end, rather than merging upload by upload (matchindex.Loader).
// What the indexes hold after a restore does not depend on the order the
// rows come in, so it is the same as after applying the records one by one
// in the order they were made (applyJournal). `conftrace bench restart`
// measures it.

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
	// read is how long reading and decoding the rows took, for the log.
	read time.Duration
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
	began := time.Now()
	r := &restore{e: e, first: first, recip: newBulkLoader(e.index), oneSided: newBulkLoader(e.oneSided), recs: map[uint64]*restoreRecord{}}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	batches := make(chan []store.Record, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var sc restoreScratch
			defer sc.clear()
			// After a failure the batches are drained, not read, so that
			// the scan never blocks.
			for batch := range batches {
				for i := 0; i < len(batch) && ctx.Err() == nil; i++ {
					if err := r.row(batch[i], &sc); err != nil {
						cancel(err)
					}
				}
			}
			if err := r.add(&sc, 0); err != nil {
				cancel(err)
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
	r.read = time.Since(began)
	return r.finish()
}

// row opens one journal row and files it under its record; the row that
// completes a record applies it, with the worker's scratch memory sc.
func (r *restore) row(rec store.Record, sc *restoreScratch) error {
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
	return r.apply(x.kind, x.day, x.id, data, sc)
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
func (r *restore) apply(kind byte, day calendar.Day, id [16]byte, data []byte, sc *restoreScratch) error {
	switch kind {
	case journalUploaded:
		r.mu.Lock()
		r.marks = append(r.marks, id)
		r.mu.Unlock()
		return nil
	case journalOrderUpload, journalOrderUsed:
		return r.e.applyOrderRecord(kind, day, id, data)
	case journalUpload:
	default:
		r.e.log.Error("journal record of an unknown kind; ignored", "kind", kind)
		return nil
	}
	e := r.e
	// As decodeUpload, but for the reciprocal entries (sc.reciprocal), and
	// into the worker's batch.
	part, err := contactlog.ParseReport(data, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: math.MaxInt32})
	if err != nil {
		e.log.Error("stored upload does not decode; ignored", "day", day, "err", err)
		return nil
	}
	defer part.Clear()
	nr, no := len(sc.recip), len(sc.oneSided)
	if e.policy.Reciprocal() && len(part.Sightings) > 0 {
		err = sc.reciprocal(part, day)
	}
	if err == nil && e.policy.OneSided() {
		var es []matchindex.Entry
		es, err = oneSidedEntries(part.Keys, day)
		sc.oneSided = append(sc.oneSided, es...)
		clear(es)
	}
	if err != nil {
		clear(sc.recip[nr:])
		clear(sc.oneSided[no:])
		sc.recip, sc.oneSided = sc.recip[:nr], sc.oneSided[:no]
		e.log.Error("stored upload does not derive; ignored", "day", day, "err", err)
		return nil
	}
	return r.add(sc, restoreAddBatch)
}

// restoreAddBatch is how many entries a restore worker gathers, from
// record to record, before it gives them to a loader: a matchindex.Loader
// groups what it is given by shard, and wants thousands at a time.
const restoreAddBatch = 1 << 15

// add gives the loaders the entries of sc's batches that hold at least
// least entries, and empties them.
func (r *restore) add(sc *restoreScratch, least int) error {
	for _, b := range []struct {
		es *[]matchindex.Entry
		to *bulkLoader
	}{{&sc.recip, r.recip}, {&sc.oneSided, r.oneSided}} {
		if len(*b.es) == 0 || len(*b.es) < least {
			continue
		}
		err := b.to.add(*b.es)
		clear(*b.es)
		*b.es = (*b.es)[:0]
		if err != nil {
			return fmt.Errorf("enclave: rebuilding index: %w", err)
		}
	}
	return nil
}

// restoreScratch is the memory a restore worker reuses from record to
// record: the batches of entries it gives the loaders (which copy them)
// and the RPIs of the daily key it derives them with.
type restoreScratch struct {
	recip, oneSided []matchindex.Entry
	// rpis[o] is the RPI of the key being used at its interval o, if
	// have[o] == gen; a new key takes a new gen.
	rpis [enid.RollingPeriod]enid.RPI
	have [enid.RollingPeriod]uint32
	gen  uint32
}

// reciprocal appends to sc.recip the reciprocal entries of a stored
// upload's part of day: those of reciprocalEntries(part.Sightings,
// ownRPIs(part), day). It derives each own RPI once per key and interval,
// where ownRPIs derives one per sighting, and finds a sighting's key
// without a search while the sightings come grouped by key, as ParseReport
// leaves them. If it fails, sc.recip is as it was.
func (sc *restoreScratch) reciprocal(part contactlog.Report, day calendar.Day) error {
	es := sc.recip
	n := len(es)
	k := -1
	var key *enid.Key
	for i, s := range part.Sightings {
		if k < 0 || !part.Keys[k].Contains(s.Interval) {
			var err error
			if k = part.Covering(s.Interval); k < 0 {
				err = fmt.Errorf("sighting %d is covered by no daily key", i)
			} else if key, err = part.Keys[k].Key(); err != nil {
				err = fmt.Errorf("daily key %d: %w", k, err)
			}
			if err != nil {
				clear(es[n:])
				return err
			}
			if sc.gen++; sc.gen == 0 {
				clear(sc.have[:])
				sc.gen = 1
			}
		}
		o := s.Interval - part.Keys[k].Start
		if sc.have[o] != sc.gen {
			key.PutRPI(&sc.rpis[o], s.Interval)
			sc.have[o] = sc.gen
		}
		es = append(es, matchindex.Entry{
			Key:     reciprocalKey(sc.rpis[o], s.Heard),
			Contact: matchindex.Contact{Interval: uint32(s.Interval), Minutes: uint16(s.Minutes), Attenuation: s.Attenuation, Day: day},
		})
	}
	sc.recip = es
	return nil
}

// clear wipes the scratch memory: the entries and RPIs of uploads.
func (sc *restoreScratch) clear() {
	clear(sc.recip[:cap(sc.recip)])
	clear(sc.oneSided[:cap(sc.oneSided)])
	clear(sc.rpis[:])
}

// finish loads the indexes and applies the marks, once every row is read.
func (r *restore) finish() error {
	e := r.e
	began := time.Now()
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
		"refused_rows", r.bad.Load(), "expired_rows", r.expired.Load(), "filler_rows", r.filler.Load(),
		"read_seconds", r.read.Seconds(), "load_seconds", time.Since(began).Seconds())
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
