package sqlite

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/storetest"
)

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawDB opens the database file directly, as the host can.
func rawDB(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, t.TempDir())
	})
}

func TestDurableSettings(t *testing.T) {
	s := open(t, t.TempDir())
	var mode string
	var syncMode int
	if err := s.write.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	if err := s.write.QueryRow("PRAGMA synchronous").Scan(&syncMode); err != nil || syncMode != 2 {
		t.Errorf("synchronous = %d, %v; want 2 (FULL)", syncMode, err)
	}
	var timeout int
	if err := s.read.QueryRow("PRAGMA busy_timeout").Scan(&timeout); err != nil || timeout != busyTimeoutMS {
		t.Errorf("busy_timeout = %d, %v; want %d", timeout, err, busyTimeoutMS)
	}
	// Readers are read-only: a bug that wrote through them would bypass
	// Apply's transactions.
	if _, err := s.read.Exec(`DELETE FROM records`); err == nil {
		t.Error("a read connection could write")
	}
}

// TestReopen checks that what Apply acknowledged is there after the store
// is closed and opened again, as after a restart.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var b store.Batch
	b.Put("tuples", []byte{0, 1}, 18362, []byte("sealed 1"))
	b.Put("tuples", []byte{0, 2}, 18363, []byte("sealed 2"))
	b.Put("kek", []byte("kek"), store.NoDay, []byte("wrapped"))
	b.Put("auth", []byte("token"), 18362, []byte("sealed auth"))
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	var consume store.Batch
	consume.MustExist("auth", []byte("token"))
	consume.Delete("auth", []byte("token"))
	if err := s.Apply(t.Context(), &consume); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
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

// TestStoresBytesUnchanged reads the file as the host would and finds
// exactly the bytes the caller gave: no encoding, no transformation.
func TestStoresBytesUnchanged(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
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

	var gotTable string
	var gotKey, gotValue []byte
	var gotDay int64
	var keyType, valueType string
	err := rawDB(t, dir).QueryRow(`SELECT tbl, key, day, value, typeof(key), typeof(value) FROM records`).
		Scan(&gotTable, &gotKey, &gotDay, &gotValue, &keyType, &valueType)
	if err != nil {
		t.Fatal(err)
	}
	if gotTable != "tuples" || !bytes.Equal(gotKey, key) || gotDay != 18362 || !bytes.Equal(gotValue, value) {
		t.Errorf("the file holds %q %x day %d and a value equal: %v", gotTable, gotKey, gotDay, bytes.Equal(gotValue, value))
	}
	if keyType != "blob" || valueType != "blob" {
		t.Errorf("stored as %s and %s, want blobs", keyType, valueType)
	}
}

func TestSchemaTooNew(t *testing.T) {
	dir := t.TempDir()
	open(t, dir).Close()
	if _, err := rawDB(t, dir).Exec(`UPDATE schema_version SET version = ?`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), dir)
	if !errors.Is(err, ErrSchemaTooNew) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := t.TempDir()
	open(t, dir).Close()
	open(t, dir).Close() // reopening does not migrate again
	var n, version int
	db := rawDB(t, dir)
	if err := db.QueryRow(`SELECT count(*), max(version) FROM schema_version`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != 1 || version != len(migrations) {
		t.Errorf("schema_version has %d rows, version %d; want 1 row, %d", n, version, len(migrations))
	}
}

func TestNotADatabase(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), bytes.Repeat([]byte("not sqlite "), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(t.Context(), dir); err == nil {
		s.Close()
		t.Fatal("Open of a file that is not a database succeeded")
	}
}

// TestHostTampering: whatever the host writes into the file, the store
// returns errors or bytes, never panics.
func TestHostTampering(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var b store.Batch
	b.Put("t", []byte("a"), 1, []byte("v"))
	b.Put("t", []byte("b"), 1, []byte("v"))
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, dir)
	for _, q := range []string{
		`UPDATE records SET day = -1 WHERE key = x'61'`,
		`UPDATE records SET day = 'not a day' WHERE key = x'62'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(t.Context(), "t", []byte("a")); err == nil {
		t.Error("Get of a record with day -1 succeeded")
	}
	if _, err := s.Get(t.Context(), "t", []byte("b")); err == nil {
		t.Error("Get of a record with a text day succeeded")
	}
	if err := s.Scan(t.Context(), "t", func(store.Record) error { return nil }); err == nil {
		t.Error("Scan over corrupt days succeeded")
	}
	if _, err := s.Days(t.Context()); err == nil {
		t.Error("Days over corrupt days succeeded")
	}
}

func TestAwkwardDirectoryName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with=odd&chars#%20", "nested")
	s := open(t, dir)
	var b store.Batch
	b.Put("t", []byte("k"), 1, []byte("v"))
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Errorf("database file not where promised: %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory has mode %v, want 0700", fi.Mode().Perm())
	}
}

// FuzzRoundTrip checks that any record within the limits comes back
// exactly, and anything else is refused with ErrInvalid, never a panic.
func FuzzRoundTrip(f *testing.F) {
	s := open(f, f.TempDir())
	f.Add("t", []byte("k"), uint32(1), []byte("v"))
	f.Add("", []byte{}, uint32(0), []byte{})
	f.Add("t\x00", []byte{0}, uint32(1<<32-1), []byte{0xff})
	f.Fuzz(func(t *testing.T, table string, key []byte, day uint32, value []byte) {
		var b store.Batch
		b.Put(table, key, calendar.Day(day), value)
		err := s.Apply(t.Context(), &b)
		if store.ValidateKey(table, key) != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("invalid record: Apply = %v, want ErrInvalid", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(t.Context(), table, key)
		if err != nil {
			t.Fatal(err)
		}
		if got.Table != table || !bytes.Equal(got.Key, key) || got.Day != calendar.Day(day) || !bytes.Equal(got.Value, value) {
			t.Fatalf("Get = %+v, want %q %x %d %x", got, table, key, day, value)
		}
	})
}

// uploadBatch is one upload-sized write: 1,000 records of 64 bytes.
func uploadBatch(n int) *store.Batch {
	var b store.Batch
	value := bytes.Repeat([]byte{0xa5}, 64)
	for i := range 1000 {
		b.Put("tuples", fmt.Appendf(nil, "%08d-%04d", n, i), 18362, value)
	}
	return &b
}

// BenchmarkBaselineFsync writes and fsyncs 64 KiB to a plain file in the
// same directory: the floor for any durable write there.
func BenchmarkBaselineFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "baseline"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyUpload(b *testing.B) {
	s := open(b, b.TempDir())
	n := 0
	for b.Loop() {
		if err := s.Apply(b.Context(), uploadBatch(n)); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*1000), "ns/record")
}

// BenchmarkBaselineQuery is the cheapest round trip through database/sql
// and the driver, to compare Get against.
func BenchmarkBaselineQuery(b *testing.B) {
	s := open(b, b.TempDir())
	for b.Loop() {
		var one int
		if err := s.read.QueryRowContext(b.Context(), "SELECT 1").Scan(&one); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s := open(b, b.TempDir())
	for n := range 20 { // 20,000 records
		if err := s.Apply(b.Context(), uploadBatch(n)); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		key := fmt.Appendf(nil, "%08d-%04d", i%20, i*7%1000)
		if _, err := s.Get(b.Context(), "tuples", key); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkScan streams a table of 20,000 records of 64 bytes, as the
// backend does at start.
func BenchmarkScan(b *testing.B) {
	s := open(b, b.TempDir())
	for n := range 20 {
		if err := s.Apply(b.Context(), uploadBatch(n)); err != nil {
			b.Fatal(err)
		}
	}
	records := 0
	for b.Loop() {
		if err := s.Scan(b.Context(), "tuples", func(store.Record) error { records++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(records), "ns/record")
}
