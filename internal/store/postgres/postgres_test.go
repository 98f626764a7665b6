package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
	"github.com/conftrace/conftrace/internal/store/storetest"
)

func open(t testing.TB, connURL string) *Store {
	t.Helper()
	s, err := Open(t.Context(), connURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawDB connects to the database directly, as the host can.
func rawDB(t testing.TB, connURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), connURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, pgtest.URL(t))
	})
}

// TestConformanceSmallPages runs the suite with pages of three records and
// 64 bytes, so that every scan of more than a few records crosses pages.
func TestConformanceSmallPages(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, pgtest.URL(t))
		s.pageRows, s.pageBytes = 3, 64
		return s
	})
}

func TestDurableSettings(t *testing.T) {
	base := pgtest.URL(t)
	// A URL asking for asynchronous commits does not get them.
	weak, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := weak.Query()
	q.Set("synchronous_commit", "off")
	weak.RawQuery = q.Encode()
	for _, u := range []string{base, weak.String()} {
		s := open(t, u)
		var syncCommit, fsync string
		if err := s.pool.QueryRow(t.Context(), `SELECT current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&syncCommit, &fsync); err != nil {
			t.Fatal(err)
		}
		if syncCommit != "on" || fsync != "on" {
			t.Errorf("synchronous_commit = %s, fsync = %s; want on, on", syncCommit, fsync)
		}
	}
}

// TestSerializable checks that batches run SERIALIZABLE, which the
// concurrency guarantees rest on.
func TestSerializable(t *testing.T) {
	s := open(t, pgtest.URL(t))
	var level string
	err := s.serializable(t.Context(), func(tx pgx.Tx) error {
		return tx.QueryRow(t.Context(), `SHOW transaction_isolation`).Scan(&level)
	})
	if err != nil || level != "serializable" {
		t.Errorf("transaction_isolation = %q, %v; want serializable", level, err)
	}
}

// TestReopen checks that what Apply acknowledged is there after the store
// is closed and opened again, as after a restart.
func TestReopen(t *testing.T) {
	u := pgtest.URL(t)
	s := open(t, u)
	var b store.Batch
	b.Put("tuples", []byte{0, 1}, 18362, []byte("sealed 1"))
	b.Put("tuples", []byte{0, 2}, 18363, []byte("sealed 2"))
	b.Put("kek", []byte("kek"), store.NoDay, []byte("wrapped"))
	b.Put("auth", []byte("token"), 18362, []byte("sealed auth"))
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	if ok, err := store.DeleteIfPresent(t.Context(), s, "auth", []byte("token")); !ok || err != nil {
		t.Fatalf("consuming the token: %t, %v", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, u)
	for _, r := range []store.Record{
		{Table: "tuples", Key: []byte{0, 1}, Day: 18362, Value: []byte("sealed 1")},
		{Table: "tuples", Key: []byte{0, 2}, Day: 18363, Value: []byte("sealed 2")},
		{Table: "kek", Key: []byte("kek"), Day: store.NoDay, Value: []byte("wrapped")},
	} {
		got, err := s.Get(t.Context(), r.Table, r.Key)
		if err != nil || got.Day != r.Day || !bytes.Equal(got.Value, r.Value) {
			t.Errorf("after reopen, %s %x = %+v, %v", r.Table, r.Key, got, err)
		}
	}
	if _, err := s.Get(t.Context(), "auth", []byte("token")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a consumed token is back after reopen: %v", err)
	}
	if days, err := s.Days(t.Context()); err != nil || !slices.Equal(days, []calendar.Day{18362, 18363}) {
		t.Errorf("Days after reopen = %v, %v", days, err)
	}
}

// TestStoresBytesUnchanged reads the database as the host would and finds
// exactly the bytes the caller gave, as bytea: no encoding, no
// transformation.
func TestStoresBytesUnchanged(t *testing.T) {
	u := pgtest.URL(t)
	s := open(t, u)
	key := []byte{0xff, 0x00, 0xfe, 'k'}
	value := make([]byte, 4096)
	for i := range value {
		value[i] = byte(i*7 + 3)
	}
	var b store.Batch
	b.Put("tuples", key, 18362, value)
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	var gotTable, keyType, valueType string
	var gotKey, gotValue []byte
	var gotDay int64
	err := rawDB(t, u).QueryRow(t.Context(), `SELECT tbl, key, day, value, pg_typeof(key)::text, pg_typeof(value)::text FROM conftrace_records`).
		Scan(&gotTable, &gotKey, &gotDay, &gotValue, &keyType, &valueType)
	if err != nil {
		t.Fatal(err)
	}
	if gotTable != "tuples" || !bytes.Equal(gotKey, key) || gotDay != 18362 || !bytes.Equal(gotValue, value) {
		t.Errorf("the database holds %q %x day %d and a value equal: %v", gotTable, gotKey, gotDay, bytes.Equal(gotValue, value))
	}
	if keyType != "bytea" || valueType != "bytea" {
		t.Errorf("stored as %s and %s, want bytea", keyType, valueType)
	}
}

// TestByteaOrder checks the claim Scan's order rests on: PostgreSQL
// orders bytea as bytes.Compare does, whatever the server's locale.
func TestByteaOrder(t *testing.T) {
	conn := rawDB(t, pgtest.URL(t))
	keys := [][]byte{{0xff}, {0x00, 0x00}, {0x80}, {0x00}, {0x7f, 0xff}, {0x7f}, {0x00, 0x01}, []byte("a"), []byte("B"), []byte("ab"), {0xc3, 0xa9}}
	rows, err := conn.Query(t.Context(), `SELECT k FROM unnest($1::bytea[]) AS k ORDER BY k`, keys)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys)
	slices.SortFunc(want, bytes.Compare)
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("PostgreSQL orders bytea as %x, bytes.Compare as %x", got, want)
	}
}

func TestSchemaTooNew(t *testing.T) {
	u := pgtest.URL(t)
	open(t, u).Close()
	if _, err := rawDB(t, u).Exec(t.Context(), `UPDATE conftrace_schema_version SET version = $1`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), u)
	if !errors.Is(err, ErrSchemaTooNew) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

// TestConcurrentOpen opens one new database from several processes' worth
// of stores at once, as replicas starting together do: each succeeds, and
// the schema is made once.
func TestConcurrentOpen(t *testing.T) {
	u := pgtest.URL(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(t.Context(), u)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	open(t, u).Close() // reopening does not migrate again
	var n, version int
	if err := rawDB(t, u).QueryRow(t.Context(), `SELECT count(*), max(version) FROM conftrace_schema_version`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != 1 || version != len(migrations) {
		t.Errorf("conftrace_schema_version has %d rows, version %d; want 1 row, %d", n, version, len(migrations))
	}
}

func TestNoSchemaToCreateIn(t *testing.T) {
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", "no_such_schema")
	u.RawQuery = q.Encode()
	if s, err := Open(t.Context(), u.String()); err == nil || !strings.Contains(err.Error(), "search_path") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with a search_path of no schema = %v, want an error naming search_path", err)
	}
}

// TestReplicas runs two stores over one database, as two replicas would,
// racing batches with the same check: of each race exactly one batch
// applies, whichever store it went through.
func TestReplicas(t *testing.T) {
	u := pgtest.URL(t)
	replicas := []*Store{open(t, u), open(t, u)}
	const rounds, callers = 20, 6
	for round := range rounds {
		key := fmt.Appendf(nil, "day-%d", round)
		token := fmt.Appendf(nil, "token-%d", round)
		if ok, err := store.PutIfAbsent(t.Context(), replicas[0], store.Record{Table: "auth", Key: token, Day: 1, Value: []byte("authorization")}); !ok || err != nil {
			t.Fatalf("storing a token: %t, %v", ok, err)
		}
		var dayKeys, tokens atomic.Int32
		var wg sync.WaitGroup
		for c := range callers {
			s := replicas[c%len(replicas)]
			wg.Go(func() {
				// Creating a day key, once.
				var create store.Batch
				create.MustNotExist("daykeys", key)
				create.Put("daykeys", key, 1, fmt.Appendf(nil, "made by %d", c))
				switch err := s.Apply(t.Context(), &create); {
				case err == nil:
					dayKeys.Add(1)
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("creating a day key: %v", err)
				}
				// Consuming an upload authorization, once.
				var consume store.Batch
				consume.MustExist("auth", token)
				consume.Delete("auth", token)
				consume.Put("tuples", fmt.Appendf(nil, "%d-%d", round, c), 1, []byte("tuples"))
				switch err := s.Apply(t.Context(), &consume); {
				case err == nil:
					tokens.Add(1)
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("consuming a token: %v", err)
				}
			})
		}
		wg.Wait()
		if n, m := dayKeys.Load(), tokens.Load(); n != 1 || m != 1 {
			t.Fatalf("round %d: %d day keys made and %d tokens consumed, want exactly 1 each", round, n, m)
		}
	}
	for _, s := range replicas {
		var n int
		if err := s.Scan(t.Context(), "tuples", func(store.Record) error { n++; return nil }); err != nil || n != rounds {
			t.Errorf("a replica sees %d uploads, %v; want %d", n, err, rounds)
		}
	}
}

// TestScanPages crosses pages by count and by bytes, with values larger
// than a page's budget, and checks that a callback that keeps and changes
// the records it is given does not derail the scan.
func TestScanPages(t *testing.T) {
	s := open(t, pgtest.URL(t))
	s.pageRows, s.pageBytes = 4, 1000
	var want []store.Record
	var b store.Batch
	for i := range 23 {
		r := store.Record{Table: "t", Key: fmt.Appendf(nil, "k%02d", i), Day: 1, Value: bytes.Repeat([]byte{byte(i)}, i*i*10)}
		b.Put(r.Table, r.Key, r.Day, r.Value)
		want = append(want, r)
	}
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	var got []store.Record
	err := s.Scan(t.Context(), "t", func(r store.Record) error {
		got = append(got, store.Record{Table: r.Table, Key: bytes.Clone(r.Key), Day: r.Day, Value: r.Value})
		r.Key[0] = 0 // the caller's now
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, func(a, b store.Record) bool {
		return a.Table == b.Table && bytes.Equal(a.Key, b.Key) && a.Day == b.Day && bytes.Equal(a.Value, b.Value)
	}) {
		t.Fatalf("Scan over pages returned %d records, want the %d in order", len(got), len(want))
	}
}

// TestScanReadsWithOneConnection: a scan's callback reads the store while
// the pool has a single connection, which a scan holding its connection
// through the callback would deadlock on.
func TestScanReadsWithOneConnection(t *testing.T) {
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "1")
	u.RawQuery = q.Encode()
	s := open(t, u.String())
	var b store.Batch
	for i := range 10 {
		b.Put("t", []byte{byte(i)}, 1, []byte{byte(i)})
	}
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = s.Scan(t.Context(), "t", func(r store.Record) error {
		n++
		got, err := s.Get(t.Context(), "t", r.Key)
		if err == nil && !bytes.Equal(got.Value, r.Value) {
			err = fmt.Errorf("Get(%x) = %x, want %x", r.Key, got.Value, r.Value)
		}
		return err
	})
	if err != nil || n != 10 {
		t.Fatalf("Scan reading in its callback: %d records, %v", n, err)
	}
}

// TestHostTampering: whatever the host writes into the database, the store
// returns errors or bytes, never panics.
func TestHostTampering(t *testing.T) {
	u := pgtest.URL(t)
	s := open(t, u)
	var b store.Batch
	b.Put("t", []byte("a"), 1, []byte("v"))
	b.Put("t", []byte("b"), 1, []byte("v"))
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, u)
	for _, q := range []string{
		`ALTER TABLE conftrace_records DROP CONSTRAINT conftrace_records_day_check`,
		`UPDATE conftrace_records SET day = -1 WHERE key = '\x61'`,
		`UPDATE conftrace_records SET day = 1::bigint << 40 WHERE key = '\x62'`,
	} {
		if _, err := db.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := s.Get(t.Context(), "t", []byte("a")); err == nil {
		t.Error("Get of a record with day -1 succeeded")
	}
	if _, err := s.Get(t.Context(), "t", []byte("b")); err == nil {
		t.Error("Get of a record with day 2^40 succeeded")
	}
	if err := s.Scan(t.Context(), "t", func(store.Record) error { return nil }); err == nil {
		t.Error("Scan over corrupt days succeeded")
	}
	if _, err := s.Days(t.Context()); err == nil {
		t.Error("Days over corrupt days succeeded")
	}
}

// TestPasswordNeverShown: errors of Open, whatever goes wrong, and
// Redacted never show the password, from the URL or its query.
func TestPasswordNeverShown(t *testing.T) {
	const secret = "S3cr3t-Pw"
	for _, u := range []string{
		"postgres://user:" + secret + "@127.0.0.1:1/db?connect_timeout=5",
		"postgresql://user:" + secret + "@127.0.0.1:1/db?sslmode=disable",
		"postgres://user@127.0.0.1:1/db?password=" + secret + "&sslmode=disable",
		"postgres://user:" + secret + "@127.0.0.1:1/db?connect_timeout=nonsense",
		"postgres://user:" + secret + "@[::1/db",
		"postgres://user:" + secret + "@host%zz/db",
		"postgres://user:" + secret + "@127.0.0.1:99999/db",
	} {
		s, err := Open(t.Context(), u)
		if err == nil {
			s.Close()
			t.Errorf("Open of a server that is not there succeeded")
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open's error shows the password: %v", err)
		}
		if r := Redacted(u); strings.Contains(r, secret) {
			t.Errorf("Redacted(...) = %s, shows the password", r)
		}
	}
	if got, want := Redacted("postgres://user:"+secret+"@db.example:5432/conftrace?sslmode=verify-full&password=x"), "postgres://user@db.example:5432/conftrace"; got != want {
		t.Errorf("Redacted = %s, want %s", got, want)
	}
}

func TestOpenRefusesOtherStrings(t *testing.T) {
	for _, u := range []string{"", "host=localhost dbname=conftrace", "mysql://localhost/db", "/var/lib/conftrace"} {
		if s, err := Open(t.Context(), u); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", u)
		}
	}
}

// TestRetryable pins which errors make Apply run a transaction again.
func TestRetryable(t *testing.T) {
	if !retryable(fmt.Errorf("commit: %w", &pgconn.PgError{Code: "40001"})) {
		t.Error("a serialization failure is not retried")
	}
	if !retryable(&pgconn.PgError{Code: "40P01"}) {
		t.Error("a deadlock is not retried")
	}
	if retryable(&pgconn.PgError{Code: "23505"}) || retryable(&store.ConflictError{}) || retryable(context.Canceled) {
		t.Error("an error that running again would not fix is retried")
	}
}
