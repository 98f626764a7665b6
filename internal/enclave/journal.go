package enclave

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// What a phone causes to be stored (its upload, and that its result was
// used) does not reach the store when the phone asks: it waits in the
// journal, in enclave memory, and is written by the next flushes. Flushes
// happen on the clock, every policy.StoreFlushSeconds, and each writes rows
// of one size (policy.StoreRowBytes), real or filler, to the same table,
// under random keys, with the time mark (clock.go); the host, which sees
// every byte written and when, sees only how many rows each flush wrote,
// and their number follows this rule (flush.go):
//
//   - a flush needs F = store_flush_rows rows while fewer than 2F rows
//     wait, and otherwise F·2^k rows for the largest k whose flush the rows
//     waiting fill, up to store_flush_max_rows: above the floor a flush
//     carries no filler of its own, and what it leaves (less than it
//     wrote, but at the largest size) waits for the next one;
//   - it writes the largest size that it or any of the last
//     store_flush_hold - 1 flushes needed, filling with filler, so that
//     the size steps down only after that many flushes needed less rather
//     than flap on one upload.
//
// So fewer than 2F rows waiting, one upload or none, change nothing the
// host sees (rows beyond F wait a period); above that, the host learns per
// flush the class, a power of two times F, of the volume of uploads that
// waited in the last store_flush_hold flushes: an aggregate of every phone
// that exchanged meanwhile, which the attested policy states. A policy
// without store_flush_max_rows has one size, F rows (store_flush_hold is
// then 0), and its uploads wait as long as that takes. The rule is
// deterministic, without noise: noise that hid one upload at a class
// boundary would have to double the writes at random, and averaged over
// the many flushes of a level that lasts it would hide nothing of it.
//
// A row's value is
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
// bytes, and a record longer than a row is split into chunks, written in
// order.
//
// A record's sequence number names it among every record of the journal,
// whichever replica wrote it: its high 32 bits are the writer, random to
// each run of an enclave (journal.writer), its low 32 bits count that
// run's records. So replicas sharing one store never number two records
// alike (but with odds of 2^-32 per pair of runs that a writer repeats),
// and a replica following the others (follow.go) knows its own rows.
//
// A record is acknowledged durable only once the commit that wrote its last
// chunk returned. A record written by no commit yet is lost if the enclave
// stops: an upload is acknowledged as received, and the phone learns from
// its next exchange whether it is durable (its result then says uploaded)
// or must be sent again (its result then hands out an authorization again).

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

// journalRecord is a record waiting for a flush. Its fields do not change
// once it is queued, so that a flush seals it without e.mu.
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

// journal holds the records waiting for a flush. Its fields are guarded by
// the enclave's mutex, but for flushing.
type journal struct {
	pending []journalRecord
	// sent is how many chunks of pending[0] earlier flushes wrote.
	sent int
	// rows is how many rows the pending records still need.
	rows int
	// committing is how many of those rows, from the first, the flush
	// being committed writes (0 when none is).
	committing int
	// seq is the highest sequence number a restore read. The records
	// this journal makes are numbered by writer and count instead.
	seq uint64
	// writer is this run's writer number, the high half of its records'
	// sequence numbers; count is how many records it has made.
	writer, count uint32
	// restored is the highest store sequence number (store.Record.Seq)
	// of a row openJournalRow has been given: at start, that of the
	// journal's scan, where a follower starts (follow.go).
	restored  atomic.Uint64
	nextFlush time.Time
	header    cipher.AEAD
	// history is what the flush rule remembers (flush.go).
	history flushHistory

	// flushing is held by the flush being made, from its planning to its
	// end, and by Expire: flushes commit one at a time, in order, and
	// retention never forgets a record or a day key that a flush, which
	// seals without e.mu, is writing. Take it before e.mu, never after.
	flushing sync.Mutex
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
	var w [4]byte
	rand.Read(w[:])
	// Not 0, the writer of the records numbered before writers were.
	return &journal{header: g, writer: max(binary.BigEndian.Uint32(w[:]), 1)}, nil
}

// own reports whether the record numbered seq is one this run made.
func (j *journal) own(seq uint64) bool { return uint32(seq>>32) == j.writer }

// add queues a record for the next flushes. The caller holds e.mu.
func (j *journal) add(kind byte, day calendar.Day, id []byte, data []byte, durable func()) {
	j.count++
	r := journalRecord{kind: kind, day: day, seq: uint64(j.writer)<<32 | uint64(j.count), data: data, durable: durable}
	copy(r.id[:], id)
	j.pending = append(j.pending, r)
	j.rows += chunks(r)
}

// forget drops the pending records of days before first, whose day keys
// Expire destroys: they could no longer be sealed, and every flush would
// fail on them. The caller holds j.flushing (no flush is writing them)
// and e.mu.
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
	j.rows = -j.sent
	for _, r := range j.pending {
		j.rows += chunks(r)
	}
}

// durableBy returns when the last pending record should be written, if no
// flush fails. The rows of a flush being committed are not counted: the
// flush that comes next writes what follows them (and, not knowing that
// flush's class yet, the answer may be a flush late). The caller holds
// e.mu.
func (j *journal) durableBy(p policy.Policy) int64 {
	flushes := ruleOf(p).flushesFor(j.history, j.rows-j.committing)
	at := j.nextFlush.Add(time.Duration(max(flushes-1, 0)*p.StoreFlushSeconds) * time.Second)
	// Rounded up: at the second said, the flush has been due.
	return at.Add(time.Second - 1).Unix()
}

// chunks returns how many rows a record takes.
func chunks(r journalRecord) int { return max(1, (len(r.data)+journalChunk-1)/journalChunk) }

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

// openJournalRow opens a row; filler opens like any row, with its kind. It
// notes the highest store sequence number it is given (journal.restored).
func (e *Enclave) openJournalRow(r store.Record) (journalRow, error) {
	for seen := e.journal.restored.Load(); r.Seq > seen && !e.journal.restored.CompareAndSwap(seen, r.Seq); {
		seen = e.journal.restored.Load()
	}
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
