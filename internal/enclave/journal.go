package enclave

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// What a phone causes to be stored (its upload, and that its result was
// used) does not reach the store when the phone asks: it waits in the
// journal, in enclave memory, and is written by the next flush. Flushes
// happen on the clock, every policy.StoreFlushSeconds, and every flush
// writes the same number of rows of the same size to the same table, filled
// with filler when there is less to write, so that the host, which sees
// every byte written and when, learns nothing from the writes about who
// uploaded or when. A row's value is
//
//	header: the data day, sealed under a key derived from the key-encryption key (journalHeaderSize)
//	body:   sealed under the data day's key (seal.Keyring):
//	        kind (1) || record id (16) || sequence (8) || chunk index (2) || chunk count (2) ||
//	        length (2) || data || zeros
//
// The data day is the day a record's content belongs to (an upload part's
// sightings), so that retention forgets it on time: the day's key goes, and
// the row no longer opens, even while the row itself, stored under the day
// after its flush, waits for that day to be deleted. Rows are keyed by random
// bytes, and a record longer than a row is split into chunks.
//
// A record written by no flush yet is lost if the enclave stops: an upload
// is acknowledged as received, and the phone learns from its next exchange
// whether it is durable (its result then says uploaded) or must be sent
// again (its result then hands out an authorization again).

// Kinds of journal records.
const (
	journalFiller   byte = 0
	journalUpload   byte = 1 // one day's part of an upload: a contactlog report
	journalUploaded byte = 2 // a result's upload was made; id is the result key
)

// Sizes of journal rows.
const (
	journalRowSize    = policy.StoreRowBytes
	journalHeaderSize = 12 + 4 + 16 // nonce, data day, tag
	journalBodyFixed  = 1 + 16 + 8 + 2 + 2 + 2
	// journalChunk is how many bytes of a record one row carries.
	journalChunk = journalRowSize - journalHeaderSize - seal.Overhead - journalBodyFixed
)

// maxCatchUp bounds the flushes one FlushDue makes when the clock jumped
// (the simulated clock of the demo moves a day at a time).
const maxCatchUp = 24 * 60

// journalRecord is a record waiting for a flush.
type journalRecord struct {
	kind byte
	day  calendar.Day
	id   [16]byte
	seq  uint64
	data []byte
	// durable is called, under e.mu, once the flush that wrote the
	// record's last chunk is durable.
	durable func()
}

// journal holds the records waiting for a flush. It is guarded by the
// enclave's mutex.
type journal struct {
	pending []journalRecord
	// sent is how many chunks of pending[0] earlier flushes wrote.
	sent      int
	seq       uint64
	nextFlush time.Time
	header    cipher.AEAD
}

// newJournal returns a journal whose headers are sealed under key. Its
// first flush is due when the caller sets nextFlush.
func newJournal(key []byte) (*journal, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &journal{header: g}, nil
}

// add queues a record for the next flushes. The caller holds e.mu.
func (j *journal) add(kind byte, day calendar.Day, id []byte, data []byte, durable func()) {
	j.seq++
	r := journalRecord{kind: kind, day: day, seq: j.seq, data: data, durable: durable}
	copy(r.id[:], id)
	j.pending = append(j.pending, r)
}

// forget drops the pending records of days before first, whose day keys
// Expire destroys: they could no longer be sealed, and every flush would
// fail on them. The caller holds e.mu.
func (j *journal) forget(first calendar.Day) {
	if len(j.pending) > 0 && j.pending[0].day < first {
		j.sent = 0
	}
	j.pending = slices.DeleteFunc(j.pending, func(r journalRecord) bool {
		if r.day < first {
			clear(r.data)
			return true
		}
		return false
	})
}

// durableBy returns when the last pending record should be written, if
// every flush until then is full.
func (j *journal) durableBy(p policy.Policy) int64 {
	rows := 0
	for _, r := range j.pending {
		rows += chunks(r)
	}
	rows -= j.sent
	flushes := (rows + p.StoreFlushRows - 1) / p.StoreFlushRows
	at := j.nextFlush.Add(time.Duration(max(flushes-1, 0)*p.StoreFlushSeconds) * time.Second)
	// Rounded up: at the second said, the flush has been due.
	return at.Add(time.Second - 1).Unix()
}

// chunks returns how many rows a record takes.
func chunks(r journalRecord) int { return max(1, (len(r.data)+journalChunk-1)/journalChunk) }

// FlushDue makes every flush the clock says is due: one a period, each of
// policy.StoreFlushRows rows, real or filler, and the time mark. The
// service calls it often (every second); the demo calls it when it moves
// the clock. It also logs, at most once a flush, that the host's clock is
// behind the enclave's (clock.go).
func (e *Enclave) FlushDue(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reportLag()
	every := time.Duration(e.policy.StoreFlushSeconds) * time.Second
	now := e.now()
	first, _ := e.window(now)
	for n := 0; !e.journal.nextFlush.After(now); n++ {
		if n == maxCatchUp {
			// Far behind (a clock that jumped): resume the schedule from
			// now rather than write a backlog of filler.
			e.journal.nextFlush = now.Add(every)
			break
		}
		// A missed flush of a day past the window is skipped: its rows
		// would be deleted at once, and its day key may be gone already.
		if day := calendar.DayOf(e.journal.nextFlush); day >= first {
			if err := e.flushLocked(ctx, day, now); err != nil {
				return err
			}
		}
		e.journal.nextFlush = e.journal.nextFlush.Add(every)
	}
	return nil
}

// FlushNow makes one flush now, off the schedule: the backend calls it when
// it stops, so that what arrived since the last flush is not lost with its
// memory. It writes one flush whatever is pending, so that stopping tells
// the host nothing about what was.
func (e *Enclave) FlushNow(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	return e.flushLocked(ctx, calendar.DayOf(now), now)
}

// flushLocked writes one flush of day: the next rows of pending records,
// then filler, and the time mark of now. The caller holds e.mu.
func (e *Enclave) flushLocked(ctx context.Context, day calendar.Day, now time.Time) error {
	j := e.journal
	rows := e.policy.StoreFlushRows
	var b store.Batch
	var done []journalRecord
	i, sent := 0, j.sent
	for written := 0; written < rows && i < len(j.pending); written++ {
		r := j.pending[i]
		if err := e.putJournalRow(&b, day, r, sent); err != nil {
			return e.internal("sealing journal row", err)
		}
		sent++
		if sent == chunks(r) {
			done = append(done, r)
			i, sent = i+1, 0
		}
	}
	for n := len(b.Ops); n < rows; n++ {
		if err := e.putJournalRow(&b, day, journalRecord{kind: journalFiller, day: day}, 0); err != nil {
			return e.internal("sealing journal filler", err)
		}
	}
	if err := e.putMark(&b, now); err != nil {
		return e.internal("sealing time mark", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		return e.internal("flushing journal", err)
	}
	e.lagReported = false
	for _, r := range done {
		clear(r.data)
		if r.durable != nil {
			r.durable()
		}
	}
	j.pending = slices.Delete(j.pending, 0, i)
	j.sent = sent
	return nil
}

// putJournalRow seals chunk c of r into a row of b, for a flush of day.
func (e *Enclave) putJournalRow(b *store.Batch, day calendar.Day, r journalRecord, c int) error {
	body := make([]byte, journalBodyFixed, journalRowSize)
	body[0] = r.kind
	copy(body[1:17], r.id[:])
	binary.BigEndian.PutUint64(body[17:25], r.seq)
	binary.BigEndian.PutUint16(body[25:27], uint16(c))
	binary.BigEndian.PutUint16(body[27:29], uint16(chunks(r)))
	part := r.data[min(c*journalChunk, len(r.data)):min((c+1)*journalChunk, len(r.data))]
	binary.BigEndian.PutUint16(body[29:31], uint16(len(part)))
	body = append(body, part...)
	if r.kind == journalFiller {
		// Filler says nothing, but must be as long as a real row.
		body = body[:journalBodyFixed+journalChunk]
		rand.Read(body[journalBodyFixed:])
	}
	body = append(body, make([]byte, journalBodyFixed+journalChunk-len(body))...)
	key := make([]byte, 16)
	rand.Read(key)
	sealedBody, err := e.keys.Seal(r.day, tableJournal, key, body)
	clear(body)
	if err != nil {
		return err
	}
	value := make([]byte, 12, journalRowSize)
	rand.Read(value[:12])
	value = e.journal.header.Seal(value, value[:12], binary.BigEndian.AppendUint32(nil, uint32(r.day)), key)
	// Stored under the day after the flush: a flush may carry the start of
	// tomorrow (a key that runs past midnight, a sighting of tomorrow's
	// first interval), which must not be deleted a day before it expires.
	// Every row is stored so, filler too, so the rule tells nothing.
	b.Put(tableJournal, key, day+1, append(value, sealedBody...))
	return nil
}

// journalRow is one opened row.
type journalRow struct {
	kind         byte
	day          calendar.Day
	id           [16]byte
	seq          uint64
	index, count int
	data         []byte
}

// openJournalRow opens a row; filler opens like any row, with its kind.
func (e *Enclave) openJournalRow(r store.Record) (journalRow, error) {
	if len(r.Value) != journalRowSize {
		return journalRow{}, fmt.Errorf("row of %d bytes, want %d", len(r.Value), journalRowSize)
	}
	hdr, err := e.journal.header.Open(nil, r.Value[:12], r.Value[12:journalHeaderSize], r.Key)
	if err != nil || len(hdr) != 4 {
		return journalRow{}, errors.New("header does not open")
	}
	row := journalRow{day: calendar.Day(binary.BigEndian.Uint32(hdr))}
	body, err := e.keys.Open(row.day, tableJournal, r.Key, r.Value[journalHeaderSize:])
	if err != nil {
		return row, err
	}
	defer clear(body)
	row.kind = body[0]
	copy(row.id[:], body[1:17])
	row.seq = binary.BigEndian.Uint64(body[17:25])
	row.index = int(binary.BigEndian.Uint16(body[25:27]))
	row.count = int(binary.BigEndian.Uint16(body[27:29]))
	n := int(binary.BigEndian.Uint16(body[29:31]))
	if n > journalChunk || row.index >= row.count {
		return row, errors.New("body out of range")
	}
	row.data = slices.Clone(body[journalBodyFixed : journalBodyFixed+n])
	return row, nil
}

// replayJournal reads every journal row when the enclave starts and applies
// the records whose chunks are all there, in the order they were made.
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
