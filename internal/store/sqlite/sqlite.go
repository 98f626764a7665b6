// Package sqlite is the default store.Store: one SQLite database file in a
// directory of the host's disk, embedded in the process, in pure Go
// (modernc.org/sqlite, no cgo).
//
// Open creates or opens <dir>/conftrace.db. The database runs in WAL mode
// with synchronous=FULL, so a batch that Apply has committed has been
// fsync'd and survives a crash or power loss. One connection writes, in
// transactions that take the write lock up front (BEGIN IMMEDIATE) so that
// concurrent batches queue instead of failing; reads use their own
// read-only connections and proceed while a batch commits.
//
// The schema is versioned: Open applies the migrations this code knows and
// refuses a database that a newer version of conftrace has migrated
// further ([ErrSchemaTooNew]), rather than misreading it.
//
// Everything in the file is sealed by the backend before it gets here; the
// store keeps the bytes exactly as given. Like every store, it is outside
// the TEE: the host can read, change, roll back or delete the file, and the
// backend detects changes when it opens the records.
package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// FileName is the name of the database file inside the directory given to
// Open.
const FileName = "conftrace.db"

// ErrSchemaTooNew means the database was migrated by a newer version of
// conftrace than this one; this version refuses it rather than misread it.
var ErrSchemaTooNew = errors.New("store/sqlite: database schema is newer than this program")

// busyTimeoutMS is how long a connection waits for a lock held by another
// (a checkpoint, or another process) before it gives up.
const busyTimeoutMS = 10000

// migrations[i] brings the schema from version i to version i+1. Never
// edit a released migration; append a new one.
var migrations = [][]string{
	{
		// Records of every table in one SQL table, so that DeleteDay is a
		// single statement and tables need no DDL. WITHOUT ROWID stores the
		// rows in primary key order, which is the order Scan returns.
		`CREATE TABLE records (
			tbl   TEXT    NOT NULL,
			key   BLOB    NOT NULL,
			day   INTEGER NOT NULL,
			value BLOB    NOT NULL,
			PRIMARY KEY (tbl, key)
		) WITHOUT ROWID`,
		`CREATE INDEX records_by_day ON records (day)`,
	},
	{
		// Sequence numbers (store.Record.Seq): each put takes the next
		// of head's counter, in the transaction that commits it, which
		// SQLite's one writer at a time orders. The counter never goes
		// back, though the records that had the highest numbers may be
		// deleted. Records from before have 0.
		`ALTER TABLE records ADD COLUMN seq INTEGER NOT NULL DEFAULT 0`,
		`CREATE INDEX records_by_seq ON records (seq)`,
		`CREATE TABLE head (seq INTEGER NOT NULL)`,
		`INSERT INTO head (seq) VALUES (0)`,
	},
}

// putRows are the numbers of rows that the prepared put statements insert
// at once, largest first. A statement per row would make a batch of 1,000
// records cost 1,000 round trips through database/sql.
var putRows = [...]int{128, 16, 1}

// putSQL returns an upsert of n rows. Within one statement a later row for
// the same key updates the earlier one, as Apply's ordering requires.
func putSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO records (tbl, key, day, value, seq) VALUES (?, ?, ?, ?, ?)")
	for range n - 1 {
		b.WriteString(", (?, ?, ?, ?, ?)")
	}
	b.WriteString(" ON CONFLICT (tbl, key) DO UPDATE SET day = excluded.day, value = excluded.value, seq = excluded.seq")
	return b.String()
}

// Store is a store.Store in one SQLite file. It is safe for concurrent use.
type Store struct {
	write *sql.DB // one connection: SQLite has one writer at a time anyway
	read  *sql.DB // read-only connections

	get, scan, days, head  *sql.Stmt // on read
	exists, del, deleteDay *sql.Stmt // on write
	take                   *sql.Stmt // on write: takes sequence numbers
	puts                   [len(putRows)]*sql.Stmt

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens the store in dir, creating the directory (mode 0700) and the
// database file if they do not exist and migrating the schema to the
// current version.
func Open(ctx context.Context, dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(dir, FileName))
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	// A file: URI, with the path escaped, so that no character of the
	// directory name can be taken for a parameter.
	uri := "file:" + (&url.URL{Path: filepath.ToSlash(path)}).EscapedPath()

	s := &Store{}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMS))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	if s.write, err = sql.Open("sqlite", uri+"?"+q.Encode()); err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxLifetime(0)
	s.write.SetConnMaxIdleTime(0)
	if err := s.setup(ctx); err != nil {
		s.write.Close()
		return nil, err
	}

	// Readers open after the writer has put the file in WAL mode. Their
	// number is not capped, so a Scan callback that reads cannot starve.
	q = url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMS))
	q.Set("_query_only", "1")
	if s.read, err = sql.Open("sqlite", uri+"?"+q.Encode()); err != nil {
		s.write.Close()
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	s.read.SetMaxIdleConns(4)
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// setup checks the durability settings and migrates the schema.
func (s *Store) setup(ctx context.Context) error {
	var mode string
	if err := s.write.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store/sqlite: open: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("store/sqlite: journal mode is %q, not WAL (does the file system support it?)", mode)
	}
	var syncMode int
	if err := s.write.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
		return fmt.Errorf("store/sqlite: open: %w", err)
	}
	if syncMode != 2 { // FULL
		return fmt.Errorf("store/sqlite: synchronous is %d, want 2 (FULL)", syncMode)
	}
	return s.migrate(ctx)
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store/sqlite: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("store/sqlite: migrate: %w", err)
	}
	var version int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("store/sqlite: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("store/sqlite: migrate: reading schema version: %w", err)
	}
	if version < 0 || version > len(migrations) {
		return fmt.Errorf("store/sqlite: schema version %d, this program knows up to %d: %w", version, len(migrations), ErrSchemaTooNew)
	}
	if version == len(migrations) {
		return nil
	}
	for v := version; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("store/sqlite: migration to version %d: %w", v+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
		return fmt.Errorf("store/sqlite: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store/sqlite: migrate: %w", err)
	}
	return nil
}

func (s *Store) prepare(ctx context.Context) error {
	type statement struct {
		db   *sql.DB
		stmt **sql.Stmt
		sql  string
	}
	statements := []statement{
		{s.read, &s.get, `SELECT day, value, seq FROM records WHERE tbl = ? AND key = ?`},
		{s.read, &s.scan, `SELECT key, day, value, seq FROM records WHERE tbl = ? ORDER BY key`},
		{s.read, &s.days, `SELECT DISTINCT day FROM records WHERE day <> ? ORDER BY day`},
		{s.read, &s.head, `SELECT seq FROM head`},
		{s.write, &s.exists, `SELECT value FROM records WHERE tbl = ? AND key = ?`},
		{s.write, &s.take, `UPDATE head SET seq = seq + ? RETURNING seq`},
		{s.write, &s.del, `DELETE FROM records WHERE tbl = ? AND key = ?`},
		{s.write, &s.deleteDay, `DELETE FROM records WHERE day = ?`},
	}
	for i, n := range putRows {
		statements = append(statements, statement{s.write, &s.puts[i], putSQL(n)})
	}
	for _, p := range statements {
		st, err := p.db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("store/sqlite: preparing %q: %w", p.sql, err)
		}
		*p.stmt = st
	}
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, table string, key []byte) (store.Record, error) {
	if err := store.ValidateKey(table, key); err != nil {
		return store.Record{}, err
	}
	var day, seq int64
	var value []byte
	err := s.get.QueryRowContext(ctx, table, key).Scan(&day, &value, &seq)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Record{}, fmt.Errorf("store/sqlite: %s record %x: %w", table, key, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("store/sqlite: get %s record: %w", table, err)
	}
	d, err := checkDay(day)
	if err != nil {
		return store.Record{}, err
	}
	return store.Record{Table: table, Key: bytes.Clone(key), Day: d, Value: nonNil(value), Seq: uint64(seq)}, nil
}

// Scan implements store.Store. It reads the table in one query, so it sees
// the table as it was when the scan began.
func (s *Store) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if err := store.ValidateTable(table); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/sqlite: scan %s: %w", table, err)
	}
	rows, err := s.scan.QueryContext(ctx, table)
	if err != nil {
		return fmt.Errorf("store/sqlite: scan %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r store.Record
		var day, seq int64
		if err := rows.Scan(&r.Key, &day, &r.Value, &seq); err != nil {
			return fmt.Errorf("store/sqlite: scan %s: %w", table, err)
		}
		if r.Day, err = checkDay(day); err != nil {
			return err
		}
		r.Table, r.Value, r.Seq = table, nonNil(r.Value), uint64(seq)
		// database/sql notices cancellation asynchronously; check it here
		// so that a canceled scan stops at once.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store/sqlite: scan %s: %w", table, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store/sqlite: scan %s: %w", table, err)
	}
	return nil
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, b *store.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if b == nil || len(b.Checks)+len(b.Ops) == 0 {
		return nil
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store/sqlite: apply: %w", err)
	}
	defer tx.Rollback()

	exists := tx.StmtContext(ctx, s.exists)
	for _, c := range b.Checks {
		var value []byte
		err := exists.QueryRowContext(ctx, c.Table, c.Key).Scan(&value)
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store/sqlite: apply: check %s record: %w", c.Table, err)
		}
		if !c.Holds(found, value) {
			c.Key = append([]byte(nil), c.Key...)
			return &store.ConflictError{Check: c}
		}
	}
	seq, err := s.takeSeq(ctx, tx, b.Ops)
	if err != nil {
		return err
	}
	del := tx.StmtContext(ctx, s.del)
	var puts [len(putRows)]*sql.Stmt
	for i, st := range s.puts {
		puts[i] = tx.StmtContext(ctx, st)
	}
	ops := b.Ops
	for len(ops) > 0 {
		if ops[0].Delete {
			if _, err := del.ExecContext(ctx, ops[0].Table, ops[0].Key); err != nil {
				return fmt.Errorf("store/sqlite: apply: delete %s record: %w", ops[0].Table, err)
			}
			ops = ops[1:]
			continue
		}
		// Insert the run of puts that starts here, as many rows per
		// statement as fit.
		run := 0
		for run < len(ops) && !ops[run].Delete {
			run++
		}
		for i, n := range putRows {
			for ; run >= n; run -= n {
				args := make([]any, 0, 4*n)
				for _, op := range ops[:n] {
					seq++
					args = append(args, op.Table, op.Key, int64(op.Day), nonNil(op.Value), int64(seq))
				}
				if _, err := puts[i].ExecContext(ctx, args...); err != nil {
					return fmt.Errorf("store/sqlite: apply: write %s record: %w", ops[0].Table, err)
				}
				ops = ops[n:]
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store/sqlite: apply: commit: %w", err)
	}
	return nil
}

// takeSeq takes a sequence number for each put of ops, in tx, and returns
// the one before the first: the puts get the next ones, in order.
func (s *Store) takeSeq(ctx context.Context, tx *sql.Tx, ops []store.Op) (uint64, error) {
	n := 0
	for _, op := range ops {
		if !op.Delete {
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	var last int64
	if err := tx.StmtContext(ctx, s.take).QueryRowContext(ctx, n).Scan(&last); err != nil {
		return 0, fmt.Errorf("store/sqlite: apply: taking sequence numbers: %w", err)
	}
	return uint64(last) - uint64(n), nil
}

// Since implements store.Store. It reads in one query, so it sees the
// store as it was when it began.
func (s *Store) Since(ctx context.Context, after uint64, tables []string, fn func(store.Record) error) error {
	if len(tables) == 0 {
		return nil
	}
	args := []any{int64(min(after, math.MaxInt64))}
	for _, table := range tables {
		if err := store.ValidateTable(table); err != nil {
			return err
		}
		args = append(args, table)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/sqlite: since: %w", err)
	}
	q := `SELECT tbl, key, day, value, seq FROM records WHERE seq > ? AND tbl IN (?` +
		strings.Repeat(", ?", len(tables)-1) + `) ORDER BY seq`
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store/sqlite: since: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r store.Record
		var day, seq int64
		if err := rows.Scan(&r.Table, &r.Key, &day, &r.Value, &seq); err != nil {
			return fmt.Errorf("store/sqlite: since: %w", err)
		}
		if r.Day, err = checkDay(day); err != nil {
			return err
		}
		r.Value, r.Seq = nonNil(r.Value), uint64(seq)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store/sqlite: since: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store/sqlite: since: %w", err)
	}
	return nil
}

// Head implements store.Store: the counter, which only committed puts
// have moved as far as a reader sees.
func (s *Store) Head(ctx context.Context) (uint64, error) {
	var seq int64
	if err := s.head.QueryRowContext(ctx).Scan(&seq); err != nil {
		return 0, fmt.Errorf("store/sqlite: head: %w", err)
	}
	return uint64(seq), nil
}

// DeleteDay implements store.Store. The whole day goes in one transaction.
func (s *Store) DeleteDay(ctx context.Context, day calendar.Day) (int64, error) {
	if day == store.NoDay {
		return 0, fmt.Errorf("store/sqlite: DeleteDay(NoDay): %w", store.ErrInvalid)
	}
	res, err := s.deleteDay.ExecContext(ctx, int64(day))
	if err != nil {
		return 0, fmt.Errorf("store/sqlite: delete day %d: %w", day, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store/sqlite: delete day %d: %w", day, err)
	}
	return n, nil
}

// Days implements store.Store.
func (s *Store) Days(ctx context.Context) ([]calendar.Day, error) {
	rows, err := s.days.QueryContext(ctx, int64(store.NoDay))
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: days: %w", err)
	}
	defer rows.Close()
	var days []calendar.Day
	for rows.Next() {
		var day int64
		if err := rows.Scan(&day); err != nil {
			return nil, fmt.Errorf("store/sqlite: days: %w", err)
		}
		d, err := checkDay(day)
		if err != nil {
			return nil, err
		}
		days = append(days, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store/sqlite: days: %w", err)
	}
	return days, nil
}

// Close closes the database. SQLite checkpoints the write-ahead log into
// the database file when the last connection closes.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, st := range append([]*sql.Stmt{s.get, s.scan, s.days, s.head, s.exists, s.del, s.deleteDay, s.take}, s.puts[:]...) {
			if st != nil {
				errs = append(errs, st.Close())
			}
		}
		if s.read != nil {
			errs = append(errs, s.read.Close())
		}
		errs = append(errs, s.write.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("store/sqlite: close: %w", err)
		}
	})
	return s.closeErr
}

// checkDay refuses day numbers that no calendar.Day can hold: the host can
// write anything into the file.
func checkDay(day int64) (calendar.Day, error) {
	if day < 0 || day > math.MaxUint32 {
		return 0, fmt.Errorf("store/sqlite: record has day %d, out of range", day)
	}
	return calendar.Day(day), nil
}

// nonNil makes empty values empty slices: SQLite's NOT NULL constraint
// refuses a nil []byte, and callers get the same value back either way.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
