package ingestbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/conftrace/conftrace/internal/store"

	_ "modernc.org/sqlite" // the driver package store/sqlite uses
)

// row is what the floor needs of a row a flush wrote: where, under which
// key, and how many bytes; not the bytes.
type row struct {
	table    string
	key      []byte
	day      int64
	valueLen int
}

// flush is the rows of one transaction.
type flush []row

// journalRows returns how many of f's rows are the journal's.
func (f flush) journalRows() int {
	n := 0
	for _, r := range f {
		if r.table == "journal" {
			n++
		}
	}
	return n
}

// recordingStore is the measured store, which notes the rows of every
// batch while recording and how long the commits take.
type recordingStore struct {
	store.Store
	mu        sync.Mutex
	recording bool
	flushes   []flush
	commits   time.Duration
}

func (s *recordingStore) record(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recording = on
}

// taken returns what was recorded.
func (s *recordingStore) taken() ([]flush, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushes, s.commits
}

// Apply implements store.Store.
func (s *recordingStore) Apply(ctx context.Context, b *store.Batch) error {
	s.mu.Lock()
	on := s.recording
	s.mu.Unlock()
	if !on {
		return s.Store.Apply(ctx, b)
	}
	f := make(flush, 0, len(b.Ops))
	for _, o := range b.Ops {
		f = append(f, row{table: o.Table, key: bytes.Clone(o.Key), day: int64(o.Day), valueLen: len(o.Value)})
	}
	t := time.Now()
	err := s.Store.Apply(ctx, b)
	d := time.Since(t)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes = append(s.flushes, f)
	s.commits += d
	return nil
}

// The floor's database is laid out as package store/sqlite lays out its
// own: the same pragmas, the same table and indexes, the same sequence
// numbers (one update of the counter a transaction, a number a row), the
// same multi-row upserts (at most floorSizes[0] rows a statement), so
// that it differs from the store only by what the store does besides
// SQLite.
var floorSchema = []string{
	`CREATE TABLE records (
		tbl   TEXT    NOT NULL,
		key   BLOB    NOT NULL,
		day   INTEGER NOT NULL,
		value BLOB    NOT NULL,
		seq   INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (tbl, key)
	) WITHOUT ROWID`,
	`CREATE INDEX records_by_day ON records (day)`,
	`CREATE INDEX records_by_seq ON records (seq)`,
	`CREATE TABLE head (seq INTEGER NOT NULL)`,
	`INSERT INTO head (seq) VALUES (0)`,
}

// floorTakeSeq takes a transaction's sequence numbers, as store/sqlite.
const floorTakeSeq = `UPDATE head SET seq = seq + ? RETURNING seq`

// floorSizes are the rows of the upserts, largest first, as store/sqlite's.
var floorSizes = [...]int{128, 16, 1}

// floorRows returns the upsert of n rows that store/sqlite uses.
func floorRows(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO records (tbl, key, day, value, seq) VALUES (?, ?, ?, ?, ?)")
	for range n - 1 {
		b.WriteString(", (?, ?, ?, ?, ?)")
	}
	b.WriteString(" ON CONFLICT (tbl, key) DO UPDATE SET day = excluded.day, value = excluded.value, seq = excluded.seq")
	return b.String()
}

// writeFloor writes flushes, each in one transaction, to a new database
// in dir, and returns how long that took.
func writeFloor(ctx context.Context, dir string, flushes []flush) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("ingestbench: floor: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(dir, "floor.db"))
	if err != nil {
		return 0, fmt.Errorf("ingestbench: floor: %w", err)
	}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Set("_busy_timeout", "10000")
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: filepath.ToSlash(path)}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return 0, fmt.Errorf("ingestbench: floor: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, s := range floorSchema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return 0, fmt.Errorf("ingestbench: floor: %w", err)
		}
	}
	var mode string
	var syncMode int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		return 0, fmt.Errorf("ingestbench: floor: journal mode %q, %v; want wal", mode, err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil || syncMode != 2 {
		return 0, fmt.Errorf("ingestbench: floor: synchronous %d, %v; want 2 (FULL)", syncMode, err)
	}
	stmts := map[int]*sql.Stmt{}
	for _, n := range floorSizes {
		if stmts[n], err = db.PrepareContext(ctx, floorRows(n)); err != nil {
			return 0, fmt.Errorf("ingestbench: floor: %w", err)
		}
		defer stmts[n].Close()
	}
	// Under key 0: the counter's statement.
	if stmts[0], err = db.PrepareContext(ctx, floorTakeSeq); err != nil {
		return 0, fmt.Errorf("ingestbench: floor: %w", err)
	}
	defer stmts[0].Close()
	values := randomValues(flushes)
	began := time.Now()
	for _, f := range flushes {
		if err := floorFlush(ctx, db, stmts, f, values); err != nil {
			return 0, err
		}
	}
	return time.Since(began), nil
}

// randomValues returns, for each value length of flushes, random bytes of
// that length: SQLite neither compresses nor looks into them.
func randomValues(flushes []flush) map[int][]byte {
	values := map[int][]byte{}
	for _, f := range flushes {
		for _, r := range f {
			if values[r.valueLen] == nil {
				values[r.valueLen] = make([]byte, r.valueLen)
				rand.Read(values[r.valueLen])
			}
		}
	}
	return values
}

// floorFlush writes f in one transaction, as many rows a statement as
// store/sqlite puts in one.
func floorFlush(ctx context.Context, db *sql.DB, stmts map[int]*sql.Stmt, f flush, values map[int][]byte) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ingestbench: floor: %w", err)
	}
	defer tx.Rollback()
	var seq int64
	if err := tx.StmtContext(ctx, stmts[0]).QueryRowContext(ctx, len(f)).Scan(&seq); err != nil {
		return fmt.Errorf("ingestbench: floor: %w", err)
	}
	seq -= int64(len(f))
	for _, n := range floorSizes {
		st := tx.StmtContext(ctx, stmts[n])
		for ; len(f) >= n; f = f[n:] {
			args := make([]any, 0, 5*n)
			for _, r := range f[:n] {
				seq++
				args = append(args, r.table, r.key, r.day, values[r.valueLen], seq)
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("ingestbench: floor: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ingestbench: floor: %w", err)
	}
	return nil
}
