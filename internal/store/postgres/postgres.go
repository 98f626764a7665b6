// Package postgres is a store.Store in a PostgreSQL database, for a
// deployment that keeps its sealed records on a database server rather
// than in the SQLite file that is the zero-configuration default
// (store/sqlite). Several processes may open one database: the store's
// guarantees hold across them, which is what replicas of the backend need.
// It uses github.com/jackc/pgx/v5 and a pool of connections.
//
// [Open] takes a postgres:// or postgresql:// URL. Everything libpq-style
// URLs say works (host, port, database, sslmode, connect_timeout, a
// socket directory as ?host=/run/postgresql, pool_max_conns for the pool),
// and so do the PG* environment variables and the password file: a
// password there, rather than in the URL, stays out of the process list.
// The store never logs or returns the password (see [Redacted]).
//
// # Consistency
//
// Every batch runs in one SERIALIZABLE transaction: its checks read, its
// operations write, and PostgreSQL guarantees that the outcome is that of
// some serial order of the committed batches, whichever process sent them.
// So of two batches that check the same key (two replicas consuming one
// upload authorization, or creating one day key) exactly one applies and
// the other fails with store.ErrConflict. A transaction that PostgreSQL
// aborts to keep that promise (a serialization failure or a deadlock) has
// written nothing, so Apply runs it again, up to maxAttempts times with a
// random, growing pause. A batch whose check fails is committed all the
// same (it wrote nothing) before Apply reports the conflict, because
// PostgreSQL vouches for what a serializable transaction read only once it
// commits. DeleteDay runs the same way; Get, Since, Head and Days are
// single statements, each a consistent snapshot.
//
// # Sequence numbers
//
// Each put takes the next number of a sequence (store.Record.Seq), so that
// replicas follow each other's writes with Since. A sequence hands out
// numbers as transactions ask, not as they commit, so a follower could see
// number 11 committed while 10, taken earlier, is not yet, and then never
// read 10. So a batch that puts takes an advisory lock, per database,
// before its first write and holds it until its commit: batches that write
// commit one at a time, in the order of their numbers. Their checks and
// the reads of other batches still run concurrently. Head is the highest
// number of a committed record, and Scan reads, page after page, only
// records numbered at most the head when it began: it sees what was
// committed then, as the store's contract requires.
//
// # Durability
//
// Every connection runs with synchronous_commit=on, so a COMMIT returns
// once the transaction's write-ahead log is flushed to disk (and to the
// synchronous standbys, if the server has any); Open checks it, and
// refuses a server that runs with fsync=off. One ambiguity comes with any
// network database: if the connection breaks while COMMIT is in flight,
// Apply cannot know whether the batch committed and returns an error
// though it may have. The batches that matter carry checks, so a batch
// sent again then fails with ErrConflict instead of applying twice.
//
// # Schema
//
// One SQL table, conftrace_records (tbl, key, day, value), holds the
// records of every store table: store table names are data in a column,
// never SQL identifiers, so a new store table needs no DDL and DeleteDay is
// one statement. Its primary key (tbl, key) serves Get, Scan and the
// checks: PostgreSQL compares bytea bytewise, shorter first on a common
// prefix, which is the order of bytes.Compare that Scan promises. An index
// on day serves DeleteDay and Days. Values are stored uncompressed: they
// are sealed, so compression would only cost time.
//
// The schema is versioned in conftrace_schema_version. Open applies the
// migrations this code knows, under an advisory lock so that replicas that
// start together migrate once, and refuses a database that a newer version
// has migrated further ([ErrSchemaTooNew]). The tables are made in the
// first schema of the connection's search_path: give conftrace a database
// of its own, or a schema (?search_path=NAME in the URL).
//
// # Trust
//
// Like every store, the database is outside the TEE and holds only what
// the backend sealed; the host (and the database's administrator) can
// read, change, roll back or delete it, and the backend detects changes
// when it opens the records. Which database to use is the host's
// configuration, not part of the measured image.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

const (
	// maxAttempts bounds how often Apply and DeleteDay run a transaction
	// that PostgreSQL aborted as a serialization failure or deadlock.
	maxAttempts = 30
	// maxBackoff caps the random pause between two attempts.
	maxBackoff = 100 * time.Millisecond

	// scanPageRows and scanPageBytes bound one page of a Scan: at most
	// that many records, and values of at most that many bytes in all
	// (but always one record).
	scanPageRows  = 1024
	scanPageBytes = 4 << 20

	// putRows and putBytes bound one upsert statement of a batch, well
	// below PostgreSQL's 1 GB limit on a parameter.
	putRows  = 4096
	putBytes = 64 << 20
)

// Statements. Table and column names are constants; everything a caller
// gives is a parameter.
const (
	getSQL = `SELECT day, value, seq FROM conftrace_records WHERE tbl = $1 AND key = $2`

	// scanSQL returns the page of records of table $1 after key $2 and
	// numbered at most $5, at most $3 of them and no more once the values
	// before a record add up to $4 bytes. octet_length does not fetch
	// out-of-line values.
	scanSQL = `SELECT key, day, value, seq FROM (
		SELECT key, day, value, seq,
			sum(octet_length(value)) OVER (ORDER BY key ROWS UNBOUNDED PRECEDING) - octet_length(value) AS before
		FROM conftrace_records WHERE tbl = $1 AND key > $2 AND seq <= $5 ORDER BY key LIMIT $3
	) page WHERE before < $4 ORDER BY key`

	// sinceSQL is scanSQL for Since: the page of records of the tables $1
	// numbered above $2, in order of their numbers.
	sinceSQL = `SELECT tbl, key, day, value, seq FROM (
		SELECT tbl, key, day, value, seq,
			sum(octet_length(value)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) - octet_length(value) AS before
		FROM conftrace_records WHERE seq > $2 AND tbl = ANY($1) ORDER BY seq LIMIT $3
	) page WHERE before < $4 ORDER BY seq`

	// headSQL is the highest number of a committed record: under seqLock,
	// a batch numbered below it has committed or never will.
	headSQL = `SELECT coalesce(max(seq), 0) FROM conftrace_records`

	lockSQL = `SELECT pg_advisory_xact_lock($1)`

	checkSQL  = `SELECT key, value FROM conftrace_records WHERE tbl = $1 AND key = ANY($2)`
	deleteSQL = `DELETE FROM conftrace_records WHERE tbl = $1 AND key = ANY($2)`
	// putSQL upserts rows given as arrays. A batch has at most one
	// operation per key by then, as ON CONFLICT DO UPDATE requires.
	// The rows take their numbers in the order of the arrays.
	putSQL = `INSERT INTO conftrace_records (tbl, key, day, value, seq)
		SELECT tbl, key, day, value, nextval('conftrace_seq') FROM (
			SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bytea[]) WITH ORDINALITY AS u (tbl, key, day, value, n)
			ORDER BY n
		) rows
		ON CONFLICT (tbl, key) DO UPDATE SET day = excluded.day, value = excluded.value, seq = excluded.seq`
	deleteDaySQL = `DELETE FROM conftrace_records WHERE day = $1`

	// daysSQL walks the day index from one distinct day to the next,
	// one index probe per day rather than a read of every record.
	daysSQL = `WITH RECURSIVE days (day) AS (
			SELECT min(day) FROM conftrace_records WHERE day <> 0
		UNION ALL
			SELECT (SELECT min(r.day) FROM conftrace_records r WHERE r.day > days.day AND r.day <> 0)
			FROM days WHERE days.day IS NOT NULL
	) SELECT day FROM days WHERE day IS NOT NULL`
)

// Store is a store.Store in a PostgreSQL database. It is safe for
// concurrent use, by several goroutines and by several processes over one
// database.
type Store struct {
	pool *pgxpool.Pool

	// pageRows and pageBytes are scanPageRows and scanPageBytes, which
	// tests lower to cross pages with few records.
	pageRows, pageBytes int

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at connURL (postgres:// or
// postgresql://), checks that commits are durable and migrates the schema
// to the current version, creating it in an empty database.
func Open(ctx context.Context, connURL string) (*Store, error) {
	cfg, err := parseConfig(connURL)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("store/postgres: %w", err), connURL)
	}
	s := &Store{pool: pool, pageRows: scanPageRows, pageBytes: scanPageBytes}
	if err := s.setup(ctx); err != nil {
		pool.Close()
		return nil, redact(err, connURL)
	}
	return s, nil
}

// parseConfig parses connURL into a pool configuration whose connections
// commit durably.
func parseConfig(connURL string) (*pgxpool.Config, error) {
	if !IsURL(connURL) {
		return nil, errors.New("store/postgres: the connection string is not a postgres:// or postgresql:// URL")
	}
	if _, err := url.Parse(connURL); err != nil {
		// url.Parse quotes the whole URL in its errors, password and all.
		return nil, errors.New("store/postgres: the connection URL does not parse (not shown: it may hold a password)")
	}
	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		return nil, redact(fmt.Errorf("store/postgres: %w", err), connURL)
	}
	params := cfg.ConnConfig.RuntimeParams
	// remote_apply is stronger than on (the standbys have applied the
	// commit too); anything else is weaker.
	if params["synchronous_commit"] != "remote_apply" {
		params["synchronous_commit"] = "on"
	}
	if params["application_name"] == "" {
		params["application_name"] = "conftrace"
	}
	return cfg, nil
}

// IsURL reports whether s is a URL that Open takes: one that starts with
// postgres:// or postgresql://.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Redacted returns connURL without its password and query parameters
// (which may hold one, or a key file's passphrase), for logs: scheme,
// user, host and database.
func Redacted(connURL string) string {
	u, err := url.Parse(connURL)
	if err != nil || !IsURL(connURL) {
		return "(a connection string that does not parse)"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	if u.User != nil {
		r.User = url.User(u.User.Username())
	}
	return r.String()
}

// redact returns err with every secret of connURL in its message replaced.
// pgx redacts the connection strings it quotes already, on a best-effort
// basis; this makes sure.
func redact(err error, connURL string) error {
	if err == nil {
		return nil
	}
	u, perr := url.Parse(connURL)
	if perr != nil {
		return err
	}
	var secrets []string
	if pw, ok := u.User.Password(); ok {
		secrets = append(secrets, pw, url.PathEscape(pw), url.QueryEscape(pw))
	}
	for _, name := range []string{"password", "sslpassword"} {
		if v := u.Query().Get(name); v != "" {
			secrets = append(secrets, v, url.QueryEscape(v))
		}
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// redactedError is an error whose message has had secrets removed. It
// unwraps to the original, for errors.Is (a context's deadline, say), so
// print it, not what it wraps.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// setup checks that commits are durable and migrates the schema.
func (s *Store) setup(ctx context.Context) error {
	var syncCommit, fsync string
	err := s.pool.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&syncCommit, &fsync)
	if err != nil {
		return fmt.Errorf("store/postgres: open: %w", err)
	}
	if syncCommit != "on" && syncCommit != "remote_apply" {
		return fmt.Errorf("store/postgres: synchronous_commit is %q, want on: a commit would not wait for the disk", syncCommit)
	}
	if fsync != "on" {
		return fmt.Errorf("store/postgres: the server runs with fsync=%s: a crash could lose acknowledged batches", fsync)
	}
	return s.migrate(ctx)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, table string, key []byte) (store.Record, error) {
	if err := store.ValidateKey(table, key); err != nil {
		return store.Record{}, err
	}
	var day, seq int64
	var value []byte
	err := s.pool.QueryRow(ctx, getSQL, table, key).Scan(&day, &value, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Record{}, fmt.Errorf("store/postgres: %s record %x: %w", table, key, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("store/postgres: get %s record: %w", table, err)
	}
	d, err := checkDay(day)
	if err != nil {
		return store.Record{}, err
	}
	return store.Record{Table: table, Key: append([]byte(nil), key...), Day: d, Value: nonNil(value), Seq: uint64(seq)}, nil
}

// Scan implements store.Store. It reads the table a page at a time, each
// page a query of its own that starts after the last key of the page
// before, and calls fn once a page is read. So no connection or
// transaction stays open while fn runs (fn may read the store however
// small the pool), a scan that stops early has read one page too many at
// most, and no key is visited twice.
func (s *Store) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if err := store.ValidateTable(table); err != nil {
		return err
	}
	// Only what was committed when the scan began (see the package
	// documentation).
	head, err := s.Head(ctx)
	if err != nil {
		return fmt.Errorf("store/postgres: scan %s: %w", table, err)
	}
	after := []byte{} // before every key: keys are not empty
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store/postgres: scan %s: %w", table, err)
		}
		page, more, err := s.scanPage(ctx, table, after, head)
		if err != nil {
			return err
		}
		if more {
			// fn may keep the records, and change them.
			after = bytes.Clone(page[len(page)-1].Key)
		}
		for _, r := range page {
			// A context canceled by fn, or meanwhile, stops the scan here.
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("store/postgres: scan %s: %w", table, err)
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

// scanPage reads the page of table after key after, of records numbered
// at most head, and reports whether records may follow it.
func (s *Store) scanPage(ctx context.Context, table string, after []byte, head uint64) ([]store.Record, bool, error) {
	rows, err := s.pool.Query(ctx, scanSQL, table, after, s.pageRows, s.pageBytes, int64(min(head, math.MaxInt64)))
	if err != nil {
		return nil, false, fmt.Errorf("store/postgres: scan %s: %w", table, err)
	}
	defer rows.Close()
	var page []store.Record
	valueBytes := 0
	for rows.Next() {
		var r store.Record
		var day, seq int64
		if err := rows.Scan(&r.Key, &day, &r.Value, &seq); err != nil {
			return nil, false, fmt.Errorf("store/postgres: scan %s: %w", table, err)
		}
		if r.Day, err = checkDay(day); err != nil {
			return nil, false, err
		}
		r.Table, r.Value, r.Seq = table, nonNil(r.Value), uint64(seq)
		valueBytes += len(r.Value)
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("store/postgres: scan %s: %w", table, err)
	}
	// The byte limit dropped a record only if the values before it, all
	// in this page, reached it; short of both limits, the table is done.
	more := len(page) == s.pageRows || (len(page) > 0 && valueBytes >= s.pageBytes)
	return page, more, nil
}

// Since implements store.Store. Like Scan, it reads a page at a time,
// each page a query of its own that starts after the last number of the
// page before, and calls fn once a page is read.
func (s *Store) Since(ctx context.Context, after uint64, tables []string, fn func(store.Record) error) error {
	for _, table := range tables {
		if err := store.ValidateTable(table); err != nil {
			return err
		}
	}
	if len(tables) == 0 {
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store/postgres: since: %w", err)
		}
		page, more, err := s.sincePage(ctx, tables, after)
		if err != nil {
			return err
		}
		if more {
			after = page[len(page)-1].Seq
		}
		for _, r := range page {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("store/postgres: since: %w", err)
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

// sincePage reads the page of records of tables numbered above after, and
// reports whether records may follow it.
func (s *Store) sincePage(ctx context.Context, tables []string, after uint64) ([]store.Record, bool, error) {
	rows, err := s.pool.Query(ctx, sinceSQL, tables, int64(min(after, math.MaxInt64)), s.pageRows, s.pageBytes)
	if err != nil {
		return nil, false, fmt.Errorf("store/postgres: since: %w", err)
	}
	defer rows.Close()
	var page []store.Record
	valueBytes := 0
	for rows.Next() {
		var r store.Record
		var day, seq int64
		if err := rows.Scan(&r.Table, &r.Key, &day, &r.Value, &seq); err != nil {
			return nil, false, fmt.Errorf("store/postgres: since: %w", err)
		}
		if r.Day, err = checkDay(day); err != nil {
			return nil, false, err
		}
		r.Value, r.Seq = nonNil(r.Value), uint64(seq)
		valueBytes += len(r.Value)
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("store/postgres: since: %w", err)
	}
	more := len(page) == s.pageRows || (len(page) > 0 && valueBytes >= s.pageBytes)
	return page, more, nil
}

// Head implements store.Store.
func (s *Store) Head(ctx context.Context) (uint64, error) {
	var head int64
	if err := s.pool.QueryRow(ctx, headSQL).Scan(&head); err != nil {
		return 0, fmt.Errorf("store/postgres: head: %w", err)
	}
	return uint64(max(head, 0)), nil
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, b *store.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if b == nil || len(b.Checks)+len(b.Ops) == 0 {
		return nil
	}
	w := planWrites(b)
	err := s.serializable(ctx, func(tx pgx.Tx) error {
		if err := checkBatch(ctx, tx, b.Checks); err != nil {
			return err
		}
		return w.send(ctx, tx)
	})
	var conflict *store.ConflictError
	if err != nil && !errors.As(err, &conflict) {
		return fmt.Errorf("store/postgres: apply: %w", err)
	}
	return err
}

// checkBatch evaluates checks, one query per table they name, and returns
// a *store.ConflictError for the first that fails.
func checkBatch(ctx context.Context, tx pgx.Tx, checks []store.Check) error {
	if len(checks) == 0 {
		return nil
	}
	byTable := map[string][][]byte{}
	var tables []string
	for _, c := range checks {
		if _, ok := byTable[c.Table]; !ok {
			tables = append(tables, c.Table)
		}
		byTable[c.Table] = append(byTable[c.Table], c.Key)
	}
	found := map[string][]byte{} // table NUL key: table names have no NUL
	for _, table := range tables {
		rows, err := tx.Query(ctx, checkSQL, table, byTable[table])
		if err != nil {
			return fmt.Errorf("check %s records: %w", table, err)
		}
		var key, value []byte
		_, err = pgx.ForEachRow(rows, []any{&key, &value}, func() error {
			found[table+"\x00"+string(key)] = bytes.Clone(value)
			return nil
		})
		if err != nil {
			return fmt.Errorf("check %s records: %w", table, err)
		}
	}
	for _, c := range checks {
		value, ok := found[c.Table+"\x00"+string(c.Key)]
		if !c.Holds(ok, value) {
			c.Key = append([]byte(nil), c.Key...)
			return &store.ConflictError{Check: c}
		}
	}
	return nil
}

// writes is what a batch leaves behind: for each record it writes, its
// last operation, since a later one overrides an earlier one.
type writes struct {
	deletes map[string][][]byte // by table
	tables  []string            // of deletes, in order of appearance
	puts    []store.Op
}

func planWrites(b *store.Batch) *writes {
	last := make(map[string]int, len(b.Ops))
	for i, op := range b.Ops {
		last[op.Table+"\x00"+string(op.Key)] = i
	}
	w := &writes{deletes: map[string][][]byte{}}
	for i, op := range b.Ops {
		if last[op.Table+"\x00"+string(op.Key)] != i {
			continue
		}
		if !op.Delete {
			w.puts = append(w.puts, op)
			continue
		}
		if _, ok := w.deletes[op.Table]; !ok {
			w.tables = append(w.tables, op.Table)
		}
		w.deletes[op.Table] = append(w.deletes[op.Table], op.Key)
	}
	return w
}

// send sends the writes in one round trip: a delete per table, and upserts
// of as many rows as fit in a statement.
func (w *writes) send(ctx context.Context, tx pgx.Tx) error {
	var batch pgx.Batch
	if len(w.puts) > 0 {
		// Held to the commit, so that the puts' numbers follow the order
		// of commits (see the package documentation). Taken before the
		// batch's first write, so that it never waits for the lock while
		// holding row locks.
		batch.Queue(lockSQL, seqLock)
	}
	for _, table := range w.tables {
		batch.Queue(deleteSQL, table, w.deletes[table])
	}
	for puts := w.puts; len(puts) > 0; {
		n, size := 0, 0
		for n < len(puts) && n < putRows && (n == 0 || size+len(puts[n].Value) <= putBytes) {
			size += len(puts[n].Value)
			n++
		}
		tbls, keys, days, values := make([]string, n), make([][]byte, n), make([]int64, n), make([][]byte, n)
		for i, op := range puts[:n] {
			tbls[i], keys[i], days[i], values[i] = op.Table, op.Key, int64(op.Day), nonNil(op.Value)
		}
		batch.Queue(putSQL, tbls, keys, days, values)
		puts = puts[n:]
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// DeleteDay implements store.Store. The whole day goes in one transaction.
func (s *Store) DeleteDay(ctx context.Context, day calendar.Day) (int64, error) {
	if day == store.NoDay {
		return 0, fmt.Errorf("store/postgres: DeleteDay(NoDay): %w", store.ErrInvalid)
	}
	var n int64
	err := s.serializable(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, deleteDaySQL, int64(day))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store/postgres: delete day %d: %w", day, err)
	}
	return n, nil
}

// Days implements store.Store.
func (s *Store) Days(ctx context.Context) ([]calendar.Day, error) {
	rows, err := s.pool.Query(ctx, daysSQL)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: days: %w", err)
	}
	raw, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("store/postgres: days: %w", err)
	}
	days := make([]calendar.Day, 0, len(raw))
	for _, day := range raw {
		d, err := checkDay(day)
		if err != nil {
			return nil, err
		}
		days = append(days, d)
	}
	return days, nil
}

// Close closes the connections, waiting for those in use to be released.
// Calling it again does nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// serializable runs fn in a SERIALIZABLE transaction and commits it. If
// PostgreSQL aborts the transaction to keep batches serializable, or it
// failed before anything reached the server, nothing was written, so it
// runs fn again in a new transaction. A *store.ConflictError from fn
// commits the (read-only) transaction before it is returned.
func (s *Store) serializable(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.attempt(ctx, fn)
		if err == nil || !retryable(err) {
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		// Full jitter: racing transactions spread out rather than collide
		// again in step.
		pause := rand.N(min(time.Millisecond<<attempt, maxBackoff))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (s *Store) attempt(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return err
	}
	// After a commit this does nothing. It must not depend on ctx: a
	// transaction left open would go back to the pool with the connection.
	defer tx.Rollback(context.WithoutCancel(ctx))
	ferr := fn(tx)
	var conflict *store.ConflictError
	if ferr != nil && !errors.As(ferr, &conflict) {
		return ferr
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return ferr
}

// retryable reports whether err leaves a transaction that wrote nothing
// and may succeed if run again.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return pgconn.SafeToRetry(err)
}

// checkDay refuses day numbers that no calendar.Day can hold: the host can
// write anything into the database, constraints included.
func checkDay(day int64) (calendar.Day, error) {
	if day < 0 || day > math.MaxUint32 {
		return 0, fmt.Errorf("store/postgres: record has day %d, out of range", day)
	}
	return calendar.Day(day), nil
}

// nonNil makes empty values empty slices: pgx sends a nil []byte as NULL,
// which the NOT NULL constraint refuses.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
