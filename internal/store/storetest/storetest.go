// Package storetest is the conformance suite for implementations of
// store.Store. An implementation's tests call [Run] with a function that
// opens a fresh, empty store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := Open(t.Context(), t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite checks the behaviour the backend relies on: every method, the
// atomicity of batches and their checks, retention by day, key order,
// binary keys, large values, the limits, and concurrent use, including that
// of many callers consuming one single-use token, or creating one record
// if it is absent, exactly one succeeds; and the sequence numbers by which
// replicas follow each other's writes (Since, Head): a follower that
// writers race never misses a record.
// Durability across a restart depends on how a store is reopened, so each
// implementation tests that itself.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// Run runs the conformance suite as subtests of t. open must return a new,
// empty store each time it is called and arrange for it to be closed when
// the test ends; the suite may have closed it already, so Close must be
// safe to call twice.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"TablesAreSeparate", testTablesAreSeparate},
		{"BinaryKeys", testBinaryKeys},
		{"ScanOrder", testScanOrder},
		{"ScanStop", testScanStop},
		{"ScanReadsStore", testScanReadsStore},
		{"LargeValue", testLargeValue},
		{"EmptyValue", testEmptyValue},
		{"ReturnedBytesAreCopies", testReturnedBytesAreCopies},
		{"BatchOrder", testBatchOrder},
		{"BatchChecks", testBatchChecks},
		{"MustHold", testMustHold},
		{"BatchAtomicity", testBatchAtomicity},
		{"ChecksSeeStateBeforeBatch", testChecksSeeStateBeforeBatch},
		{"EmptyBatch", testEmptyBatch},
		{"ConditionalHelpers", testConditionalHelpers},
		{"DeleteDay", testDeleteDay},
		{"Days", testDays},
		{"Invalid", testInvalid},
		{"CanceledContext", testCanceledContext},
		{"ConcurrentTokenConsumption", testConcurrentTokenConsumption},
		{"ConcurrentPutIfAbsent", testConcurrentPutIfAbsent},
		{"ConcurrentReadWrite", testConcurrentReadWrite},
		{"SeqOrder", testSeqOrder},
		{"Since", testSince},
		{"Head", testHead},
		{"ScanSnapshot", testScanSnapshot},
		{"ConcurrentFollow", testConcurrentFollow},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

func apply(t *testing.T, s store.Store, b *store.Batch) {
	t.Helper()
	if err := s.Apply(t.Context(), b); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func put(t *testing.T, s store.Store, table string, key []byte, day calendar.Day, value []byte) {
	t.Helper()
	var b store.Batch
	b.Put(table, key, day, value)
	apply(t, s, &b)
}

// wantRecord fails unless the store holds exactly r.
func wantRecord(t *testing.T, s store.Store, r store.Record) {
	t.Helper()
	got, err := s.Get(t.Context(), r.Table, r.Key)
	if err != nil {
		t.Fatalf("Get(%s, %x): %v", r.Table, r.Key, err)
	}
	if !equal(got, r) {
		t.Fatalf("Get(%s, %x) = %s, want %s", r.Table, r.Key, show(got), show(r))
	}
}

func wantMissing(t *testing.T, s store.Store, table string, key []byte) {
	t.Helper()
	got, err := s.Get(t.Context(), table, key)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%s, %x) = %s, %v; want ErrNotFound", table, key, show(got), err)
	}
}

func equal(a, b store.Record) bool {
	return a.Table == b.Table && bytes.Equal(a.Key, b.Key) && a.Day == b.Day && bytes.Equal(a.Value, b.Value)
}

func show(r store.Record) string {
	v := r.Value
	if len(v) > 16 {
		v = v[:16]
	}
	return fmt.Sprintf("{%s %x day %d value %x (%d bytes)}", r.Table, r.Key, r.Day, v, len(r.Value))
}

func scan(t *testing.T, s store.Store, table string) []store.Record {
	t.Helper()
	var got []store.Record
	if err := s.Scan(t.Context(), table, func(r store.Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatalf("Scan(%s): %v", table, err)
	}
	return got
}

func testGetMissing(t *testing.T, s store.Store) {
	wantMissing(t, s, "t", []byte("nothing"))
}

func testPutGet(t *testing.T, s store.Store) {
	r := store.Record{Table: "tuples", Key: []byte("upload-1"), Day: 18362, Value: []byte("sealed bytes")}
	put(t, s, r.Table, r.Key, r.Day, r.Value)
	wantRecord(t, s, r)
}

func testOverwrite(t *testing.T, s store.Store) {
	put(t, s, "t", []byte("k"), 1, []byte("first"))
	put(t, s, "t", []byte("k"), 2, []byte("second"))
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("k"), Day: 2, Value: []byte("second")})
	if got := scan(t, s, "t"); len(got) != 1 {
		t.Errorf("overwrite left %d records, want 1", len(got))
	}
	// The overwritten record moved to day 2: deleting day 1 leaves it.
	if _, err := s.DeleteDay(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("k"), Day: 2, Value: []byte("second")})
}

func testDelete(t *testing.T, s store.Store) {
	put(t, s, "t", []byte("a"), 1, []byte("1"))
	put(t, s, "t", []byte("b"), 1, []byte("2"))
	var b store.Batch
	b.Delete("t", []byte("a"))
	b.Delete("t", []byte("never stored")) // not an error
	apply(t, s, &b)
	wantMissing(t, s, "t", []byte("a"))
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("b"), Day: 1, Value: []byte("2")})
}

func testTablesAreSeparate(t *testing.T, s store.Store) {
	key := []byte("same key")
	put(t, s, "a", key, 1, []byte("in a"))
	put(t, s, "b", key, 2, []byte("in b"))
	put(t, s, "ab", []byte("x"), 3, []byte("in ab"))
	wantRecord(t, s, store.Record{Table: "a", Key: key, Day: 1, Value: []byte("in a")})
	wantRecord(t, s, store.Record{Table: "b", Key: key, Day: 2, Value: []byte("in b")})
	if got := scan(t, s, "a"); len(got) != 1 || got[0].Table != "a" {
		t.Errorf("Scan(a) = %d records, want only a's", len(got))
	}
	var b store.Batch
	b.Delete("a", key)
	apply(t, s, &b)
	wantRecord(t, s, store.Record{Table: "b", Key: key, Day: 2, Value: []byte("in b")})
	if got := scan(t, s, "missing"); len(got) != 0 {
		t.Errorf("Scan of an unknown table gave %d records", len(got))
	}
}

// binaryKeys are keys a text-minded store would mangle or confuse.
var binaryKeys = [][]byte{
	{0x00},
	{0x00, 0x00},
	{0x00, 0x01},
	{0x01},
	{0x7f},
	{0x80},
	{0xc3, 0x28}, // invalid UTF-8
	{0xff},
	{0xff, 0x00},
	{0xff, 0xff},
	[]byte("%_*'\";--"),
	bytes.Repeat([]byte{0xfe}, store.MaxKeyLen),
}

func testBinaryKeys(t *testing.T, s store.Store) {
	var b store.Batch
	for i, k := range binaryKeys {
		b.Put("bin", k, 1, []byte{byte(i)})
	}
	apply(t, s, &b)
	for i, k := range binaryKeys {
		wantRecord(t, s, store.Record{Table: "bin", Key: k, Day: 1, Value: []byte{byte(i)}})
	}
	wantMissing(t, s, "bin", []byte{0x00, 0x00, 0x00})
	wantMissing(t, s, "bin", []byte{0xfe})
}

func testScanOrder(t *testing.T, s store.Store) {
	// Insert in a scrambled order, in several batches, with keys that are
	// prefixes of each other and of varying length.
	var keys [][]byte
	keys = append(keys, binaryKeys...)
	for i := range 1500 {
		keys = append(keys, fmt.Appendf(nil, "k%d", i*7919%1500))
	}
	for start := 0; start < len(keys); start += 500 {
		var b store.Batch
		for i, k := range keys[start:min(start+500, len(keys))] {
			b.Put("t", k, calendar.Day(i%3+1), k)
		}
		apply(t, s, &b)
	}
	put(t, s, "other", []byte("k"), 1, []byte("not in t"))

	got := scan(t, s, "t")
	want := slices.Clone(keys)
	slices.SortFunc(want, bytes.Compare)
	if len(got) != len(want) {
		t.Fatalf("Scan returned %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if !bytes.Equal(r.Key, want[i]) || !bytes.Equal(r.Value, want[i]) || r.Table != "t" {
			t.Fatalf("record %d of the scan: %s, want key %x", i, show(r), want[i])
		}
	}
}

func testScanStop(t *testing.T, s store.Store) {
	var b store.Batch
	for i := range 10 {
		b.Put("t", []byte{byte(i)}, 1, nil)
	}
	apply(t, s, &b)
	stop := errors.New("enough")
	n := 0
	err := s.Scan(t.Context(), "t", func(store.Record) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("Scan = %v, want the callback's error unchanged", err)
	}
	if n != 3 {
		t.Errorf("callback called %d times after it asked to stop at 3", n)
	}
}

// testScanReadsStore checks that a scan's callback can read the store, as
// a backend rebuilding its index needs (for example to load a day key).
func testScanReadsStore(t *testing.T, s store.Store) {
	var b store.Batch
	for i := range 5 {
		b.Put("t", []byte{byte(i)}, 1, []byte{byte(i)})
	}
	b.Put("keys", []byte("day"), 1, []byte("day key"))
	apply(t, s, &b)
	n := 0
	err := s.Scan(t.Context(), "t", func(r store.Record) error {
		n++
		_, err := s.Get(t.Context(), "keys", []byte("day"))
		return err
	})
	if err != nil || n != 5 {
		t.Fatalf("Scan with reads in the callback: %d records, %v", n, err)
	}
}

func testLargeValue(t *testing.T, s store.Store) {
	v := make([]byte, 1<<20)
	for i := range v {
		v[i] = byte(i * 31 >> 3)
	}
	put(t, s, "big", []byte("k"), 1, v)
	wantRecord(t, s, store.Record{Table: "big", Key: []byte("k"), Day: 1, Value: v})
	got := scan(t, s, "big")
	if len(got) != 1 || !bytes.Equal(got[0].Value, v) {
		t.Error("Scan did not return the 1 MiB value intact")
	}
	largest := make([]byte, store.MaxValueLen)
	put(t, s, "big", []byte("max"), 1, largest)
	r, err := s.Get(t.Context(), "big", []byte("max"))
	if err != nil || len(r.Value) != store.MaxValueLen {
		t.Errorf("value of MaxValueLen bytes: got %d bytes, %v", len(r.Value), err)
	}
}

func testEmptyValue(t *testing.T, s store.Store) {
	put(t, s, "t", []byte("nil"), 1, nil)
	put(t, s, "t", []byte("empty"), 1, []byte{})
	for _, k := range []string{"nil", "empty"} {
		r, err := s.Get(t.Context(), "t", []byte(k))
		if err != nil || len(r.Value) != 0 {
			t.Errorf("Get(%s) = %s, %v; want an empty value", k, show(r), err)
		}
	}
	if got := scan(t, s, "t"); len(got) != 2 {
		t.Errorf("Scan returned %d records with empty values, want 2", len(got))
	}
}

func testReturnedBytesAreCopies(t *testing.T, s store.Store) {
	key, value := []byte("key"), []byte("value")
	var b store.Batch
	b.Put("t", key, 1, value)
	apply(t, s, &b)
	key[0], value[0] = 'X', 'X' // the caller reuses its buffers
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("key"), Day: 1, Value: []byte("value")})

	r, _ := s.Get(t.Context(), "t", []byte("key"))
	r.Value[0] = 'X'
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("key"), Day: 1, Value: []byte("value")})

	put(t, s, "t", []byte("key2"), 1, []byte("value2"))
	got := scan(t, s, "t") // records kept past their callback stay intact
	if len(got) != 2 || string(got[0].Value) != "value" || string(got[1].Value) != "value2" {
		t.Errorf("records kept from Scan changed: %s %s", show(got[0]), show(got[1]))
	}
}

func testBatchOrder(t *testing.T, s store.Store) {
	var b store.Batch
	b.Put("t", []byte("a"), 1, []byte("1"))
	b.Put("t", []byte("a"), 2, []byte("2"))
	b.Put("t", []byte("b"), 1, []byte("b"))
	b.Delete("t", []byte("b"))
	b.Delete("t", []byte("c"))
	b.Put("t", []byte("c"), 3, []byte("c"))
	apply(t, s, &b)
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("a"), Day: 2, Value: []byte("2")})
	wantMissing(t, s, "t", []byte("b"))
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("c"), Day: 3, Value: []byte("c")})

	// A long batch that writes a few keys over and over, with deletes in
	// between: the last operation on each key wins, however the store
	// groups the writes.
	var long store.Batch
	final := map[byte]*store.Record{}
	for i := range 700 {
		k := []byte{byte(i % 7)}
		if i%97 == 96 {
			long.Delete("long", k)
			final[k[0]] = nil
			continue
		}
		r := store.Record{Table: "long", Key: k, Day: calendar.Day(i + 1), Value: fmt.Appendf(nil, "%d", i)}
		long.Put(r.Table, r.Key, r.Day, r.Value)
		final[k[0]] = &r
	}
	apply(t, s, &long)
	for k, r := range final {
		if r == nil {
			wantMissing(t, s, "long", []byte{k})
		} else {
			wantRecord(t, s, *r)
		}
	}
}

func testBatchChecks(t *testing.T, s store.Store) {
	put(t, s, "tok", []byte("present"), 1, []byte("auth"))
	tests := []struct {
		name   string
		check  func(*store.Batch)
		failed *store.Check // nil: the batch applies
	}{
		{"MustExist holds", func(b *store.Batch) { b.MustExist("tok", []byte("present")) }, nil},
		{"MustNotExist holds", func(b *store.Batch) { b.MustNotExist("tok", []byte("absent")) }, nil},
		{"MustExist fails", func(b *store.Batch) { b.MustExist("tok", []byte("absent")) },
			&store.Check{Table: "tok", Key: []byte("absent"), Exists: true}},
		{"MustNotExist fails", func(b *store.Batch) { b.MustNotExist("tok", []byte("present")) },
			&store.Check{Table: "tok", Key: []byte("present"), Exists: false}},
		{"other table", func(b *store.Batch) { b.MustExist("other", []byte("present")) },
			&store.Check{Table: "other", Key: []byte("present"), Exists: true}},
		{"second of two fails", func(b *store.Batch) {
			b.MustExist("tok", []byte("present"))
			b.MustNotExist("tok", []byte("present"))
		}, &store.Check{Table: "tok", Key: []byte("present"), Exists: false}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b store.Batch
			tc.check(&b)
			key := []byte{byte(i)}
			b.Put("out", key, 1, []byte("written"))
			err := s.Apply(t.Context(), &b)
			if tc.failed == nil {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				wantRecord(t, s, store.Record{Table: "out", Key: key, Day: 1, Value: []byte("written")})
				return
			}
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Apply = %v, want ErrConflict", err)
			}
			var ce *store.ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("Apply error %v is not a *ConflictError", err)
			}
			if ce.Check.Table != tc.failed.Table || !bytes.Equal(ce.Check.Key, tc.failed.Key) || ce.Check.Exists != tc.failed.Exists {
				t.Errorf("ConflictError names %+v, want %+v", ce.Check, *tc.failed)
			}
			wantMissing(t, s, "out", key)
		})
	}
}

// testBatchAtomicity: a batch whose check fails writes nothing, whatever
// else it holds, and the store is exactly as before.
func testBatchAtomicity(t *testing.T, s store.Store) {
	put(t, s, "t", []byte("keep"), 1, []byte("original"))
	put(t, s, "t", []byte("doomed"), 1, []byte("original"))

	var b store.Batch
	b.MustNotExist("t", []byte("keep")) // fails
	for i := range 200 {
		b.Put("t", fmt.Appendf(nil, "new%03d", i), 2, []byte("new"))
	}
	b.Put("t", []byte("keep"), 2, []byte("overwritten"))
	b.Delete("t", []byte("doomed"))
	if err := s.Apply(t.Context(), &b); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Apply = %v, want ErrConflict", err)
	}
	got := scan(t, s, "t")
	if len(got) != 2 {
		t.Fatalf("a failed batch left %d records, want the 2 from before", len(got))
	}
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("doomed"), Day: 1, Value: []byte("original")})
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("keep"), Day: 1, Value: []byte("original")})
	if days, err := s.Days(t.Context()); err != nil || !slices.Equal(days, []calendar.Day{1}) {
		t.Errorf("Days after a failed batch = %v, %v; want [1]", days, err)
	}

	// An invalid operation anywhere in the batch also writes nothing.
	var bad store.Batch
	bad.Put("t", []byte("valid"), 1, []byte("v"))
	bad.Put("t", nil, 1, []byte("empty key"))
	if err := s.Apply(t.Context(), &bad); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Apply with an empty key = %v, want ErrInvalid", err)
	}
	wantMissing(t, s, "t", []byte("valid"))
}

// testChecksSeeStateBeforeBatch: checks are evaluated before any operation,
// so the put-if-absent and consume-token patterns work, once each.
func testChecksSeeStateBeforeBatch(t *testing.T, s store.Store) {
	var create store.Batch
	create.MustNotExist("daykeys", []byte{1})
	create.Put("daykeys", []byte{1}, 1, []byte("wrapped"))
	apply(t, s, &create)
	if err := s.Apply(t.Context(), &create); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second put-if-absent = %v, want ErrConflict", err)
	}

	put(t, s, "auth", []byte("token"), 1, []byte("sealed authorization"))
	var consume store.Batch
	consume.MustExist("auth", []byte("token"))
	consume.Delete("auth", []byte("token"))
	consume.Put("tuples", []byte("upload"), 1, []byte("sealed tuples"))
	apply(t, s, &consume)
	wantMissing(t, s, "auth", []byte("token"))
	wantRecord(t, s, store.Record{Table: "tuples", Key: []byte("upload"), Day: 1, Value: []byte("sealed tuples")})

	var replay store.Batch
	replay.MustExist("auth", []byte("token"))
	replay.Delete("auth", []byte("token"))
	replay.Put("tuples", []byte("upload2"), 1, []byte("sealed tuples"))
	if err := s.Apply(t.Context(), &replay); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("replayed token = %v, want ErrConflict", err)
	}
	wantMissing(t, s, "tuples", []byte("upload2"))
}

func testEmptyBatch(t *testing.T, s store.Store) {
	if err := s.Apply(t.Context(), nil); err != nil {
		t.Errorf("Apply(nil) = %v", err)
	}
	if err := s.Apply(t.Context(), &store.Batch{}); err != nil {
		t.Errorf("Apply(empty) = %v", err)
	}
	// A batch of checks only is a consistent read: it fails or not, and
	// writes nothing.
	var b store.Batch
	b.MustExist("t", []byte("k"))
	if err := s.Apply(t.Context(), &b); !errors.Is(err, store.ErrConflict) {
		t.Errorf("check-only batch = %v, want ErrConflict", err)
	}
}

func testConditionalHelpers(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := store.Record{Table: "tok", Key: []byte("t1"), Day: 4, Value: []byte("v1")}
	if ok, err := store.PutIfAbsent(ctx, s, r); !ok || err != nil {
		t.Fatalf("first PutIfAbsent = %v, %v; want true", ok, err)
	}
	r2 := r
	r2.Value = []byte("v2")
	if ok, err := store.PutIfAbsent(ctx, s, r2); ok || err != nil {
		t.Fatalf("second PutIfAbsent = %v, %v; want false, nil", ok, err)
	}
	wantRecord(t, s, r)
	if ok, err := store.DeleteIfPresent(ctx, s, "tok", []byte("t1")); !ok || err != nil {
		t.Fatalf("first DeleteIfPresent = %v, %v; want true", ok, err)
	}
	if ok, err := store.DeleteIfPresent(ctx, s, "tok", []byte("t1")); ok || err != nil {
		t.Fatalf("second DeleteIfPresent = %v, %v; want false, nil", ok, err)
	}
	if ok, err := store.PutIfAbsent(ctx, s, store.Record{Table: "tok"}); ok || !errors.Is(err, store.ErrInvalid) {
		t.Errorf("PutIfAbsent with an empty key = %v, %v; want ErrInvalid", ok, err)
	}
}

func testDeleteDay(t *testing.T, s store.Store) {
	var b store.Batch
	for _, table := range []string{"tuples", "gps", "daykeys"} {
		for d := calendar.Day(1); d <= 3; d++ {
			for i := range 3 {
				b.Put(table, fmt.Appendf(nil, "%d-%d", d, i), d, []byte(table))
			}
		}
	}
	b.Put("kek", []byte("kek"), store.NoDay, []byte("wrapped kek"))
	apply(t, s, &b)

	n, err := s.DeleteDay(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if n != 9 {
		t.Errorf("DeleteDay reported %d records, want 9", n)
	}
	for _, table := range []string{"tuples", "gps", "daykeys"} {
		for _, r := range scan(t, s, table) {
			if r.Day == 2 {
				t.Errorf("record %s of the deleted day survived", show(r))
			}
		}
		if got := scan(t, s, table); len(got) != 6 {
			t.Errorf("%s has %d records after deleting one of three days, want 6", table, len(got))
		}
	}
	wantRecord(t, s, store.Record{Table: "kek", Key: []byte("kek"), Day: store.NoDay, Value: []byte("wrapped kek")})

	if n, err := s.DeleteDay(t.Context(), 2); n != 0 || err != nil {
		t.Errorf("deleting the day again = %d, %v; want 0, nil", n, err)
	}
	if _, err := s.DeleteDay(t.Context(), store.NoDay); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("DeleteDay(NoDay) = %v, want ErrInvalid", err)
	}
	wantRecord(t, s, store.Record{Table: "kek", Key: []byte("kek"), Day: store.NoDay, Value: []byte("wrapped kek")})
}

func testDays(t *testing.T, s store.Store) {
	if days, err := s.Days(t.Context()); err != nil || len(days) != 0 {
		t.Fatalf("Days of an empty store = %v, %v", days, err)
	}
	var b store.Batch
	for _, d := range []calendar.Day{30, 7, 18362, 7, 1<<32 - 1} {
		b.Put("a", fmt.Appendf(nil, "%d", d), d, nil)
		b.Put("b", fmt.Appendf(nil, "%d", d), d, nil)
	}
	b.Put("kek", []byte("k"), store.NoDay, nil)
	apply(t, s, &b)
	want := []calendar.Day{7, 30, 18362, 1<<32 - 1}
	if days, err := s.Days(t.Context()); err != nil || !slices.Equal(days, want) {
		t.Fatalf("Days = %v, %v; want %v", days, err, want)
	}
	if _, err := s.DeleteDay(t.Context(), 30); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 1, 2)
	if days, err := s.Days(t.Context()); err != nil || !slices.Equal(days, want) {
		t.Fatalf("Days after DeleteDay(30) = %v, %v; want %v", days, err, want)
	}
	wantRecord(t, s, store.Record{Table: "a", Key: []byte("4294967295"), Day: 1<<32 - 1, Value: nil})
}

func testInvalid(t *testing.T, s store.Store) {
	long := string(bytes.Repeat([]byte("t"), store.MaxTableLen+1))
	for _, tc := range []struct {
		name  string
		batch func(*store.Batch)
	}{
		{"empty table", func(b *store.Batch) { b.Put("", []byte("k"), 1, nil) }},
		{"long table", func(b *store.Batch) { b.Put(long, []byte("k"), 1, nil) }},
		{"table with NUL", func(b *store.Batch) { b.Put("t\x00", []byte("k"), 1, nil) }},
		{"table with space", func(b *store.Batch) { b.Put("my table", []byte("k"), 1, nil) }},
		{"table not ASCII", func(b *store.Batch) { b.Put("t\xc3\xa9", []byte("k"), 1, nil) }},
		{"table invalid UTF-8", func(b *store.Batch) { b.Put("t\xff", []byte("k"), 1, nil) }},
		{"nil key", func(b *store.Batch) { b.Put("t", nil, 1, nil) }},
		{"long key", func(b *store.Batch) { b.Put("t", make([]byte, store.MaxKeyLen+1), 1, nil) }},
		{"large value", func(b *store.Batch) { b.Put("t", []byte("k"), 1, make([]byte, store.MaxValueLen+1)) }},
		{"delete with empty key", func(b *store.Batch) { b.Delete("t", []byte{}) }},
		{"check with empty table", func(b *store.Batch) { b.MustExist("", []byte("k")) }},
		{"check with long key", func(b *store.Batch) { b.MustNotExist("t", make([]byte, store.MaxKeyLen+1)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b store.Batch
			tc.batch(&b)
			if err := s.Apply(t.Context(), &b); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("Apply = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := s.Get(t.Context(), "t", nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Get with an empty key = %v, want ErrInvalid", err)
	}
	if _, err := s.Get(t.Context(), "", []byte("k")); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Get with an empty table = %v, want ErrInvalid", err)
	}
	if err := s.Scan(t.Context(), long, func(store.Record) error { return nil }); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Scan of a long table name = %v, want ErrInvalid", err)
	}
	// The limits themselves are fine.
	put(t, s, string(bytes.Repeat([]byte("t"), store.MaxTableLen)), []byte("k"), 1, nil)
	put(t, s, "Az09_-./", []byte("k"), 1, nil)
	put(t, s, "t", make([]byte, store.MaxKeyLen), 1, nil)
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var b store.Batch
	b.Put("t", []byte("k"), 1, []byte("v"))
	if err := s.Apply(ctx, &b); err == nil {
		t.Error("Apply with a canceled context succeeded")
	}
	wantMissing(t, s, "t", []byte("k"))
	if _, err := s.Get(ctx, "t", []byte("k")); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get with a canceled context = %v, want the context's error", err)
	}
	if err := s.Scan(ctx, "t", func(store.Record) error { return nil }); err == nil {
		t.Error("Scan with a canceled context succeeded")
	}

	// A context canceled during a scan stops it.
	apply(t, s, &b)
	put(t, s, "t", []byte("k2"), 1, nil)
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	n := 0
	err := s.Scan(ctx, "t", func(store.Record) error {
		n++
		cancel()
		return nil
	})
	if err == nil {
		t.Error("Scan whose context was canceled during the scan returned nil")
	}
	if n != 1 {
		t.Errorf("Scan went on for %d records after its context was canceled", n-1)
	}
}

// testConcurrentTokenConsumption: of many callers consuming one token, as
// replicas would, exactly one succeeds and only its upload is stored.
func testConcurrentTokenConsumption(t *testing.T, s store.Store) {
	const callers = 8
	for round := range 5 {
		token := fmt.Appendf(nil, "token-%d", round)
		put(t, s, "auth", token, 1, []byte("authorization"))
		var wins atomic.Int32
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				var b store.Batch
				b.MustExist("auth", token)
				b.Delete("auth", token)
				b.Put("tuples", fmt.Appendf(nil, "%d-%d", round, c), 1, []byte("tuples"))
				switch err := s.Apply(t.Context(), &b); {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("Apply: %v", err)
				}
			})
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("round %d: %d callers consumed the token, want exactly 1", round, n)
		}
	}
	if got := scan(t, s, "tuples"); len(got) != 5 {
		t.Errorf("%d uploads stored, want 5 (one per token)", len(got))
	}
}

// testConcurrentPutIfAbsent: of many callers creating one record if it
// is absent, as replicas creating a day's key would, exactly one succeeds
// and its record is the one stored.
func testConcurrentPutIfAbsent(t *testing.T, s store.Store) {
	const callers = 8
	for round := range 5 {
		key := fmt.Appendf(nil, "day-%d", round)
		var winner atomic.Int32
		var wins atomic.Int32
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				var b store.Batch
				b.MustNotExist("daykeys", key)
				b.Put("daykeys", key, 1, []byte{byte(c)})
				switch err := s.Apply(t.Context(), &b); {
				case err == nil:
					wins.Add(1)
					winner.Store(int32(c))
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("Apply: %v", err)
				}
			})
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("round %d: %d callers created the record, want exactly 1", round, n)
		}
		wantRecord(t, s, store.Record{Table: "daykeys", Key: key, Day: 1, Value: []byte{byte(winner.Load())}})
	}
}

func testConcurrentReadWrite(t *testing.T, s store.Store) {
	const writers, perWriter = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				var b store.Batch
				b.Put("t", fmt.Appendf(nil, "%d-%03d", w, i), calendar.Day(i%2+1), []byte{byte(w), byte(i)})
				if err := s.Apply(t.Context(), &b); err != nil {
					t.Errorf("Apply: %v", err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 20 {
				err := s.Scan(t.Context(), "t", func(r store.Record) error {
					if len(r.Value) != 2 {
						return fmt.Errorf("torn record %s", show(r))
					}
					return nil
				})
				if err != nil {
					t.Errorf("Scan: %v", err)
					return
				}
				if _, err := s.Get(t.Context(), "t", []byte("0-000")); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("Get: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 10 {
			if _, err := s.Days(t.Context()); err != nil {
				t.Errorf("Days: %v", err)
				return
			}
		}
	})
	wg.Wait()
	if got := scan(t, s, "t"); len(got) != writers*perWriter {
		t.Errorf("%d records after concurrent writes, want %d", len(got), writers*perWriter)
	}
}

func testClose(t *testing.T, s store.Store) {
	put(t, s, "t", []byte("k"), 1, nil)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Get(t.Context(), "t", []byte("k")); err == nil {
		t.Error("Get after Close succeeded")
	}
	var b store.Batch
	b.Put("t", []byte("k2"), 1, nil)
	if err := s.Apply(t.Context(), &b); err == nil {
		t.Error("Apply after Close succeeded")
	}
}

// since returns what Since visits of tables after after.
func since(t *testing.T, s store.Store, after uint64, tables ...string) []store.Record {
	t.Helper()
	var got []store.Record
	if err := s.Since(t.Context(), after, tables, func(r store.Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatalf("Since(%d, %v): %v", after, tables, err)
	}
	return got
}

func get(t *testing.T, s store.Store, table string, key []byte) store.Record {
	t.Helper()
	r, err := s.Get(t.Context(), table, key)
	if err != nil {
		t.Fatalf("Get(%s, %x): %v", table, key, err)
	}
	return r
}

// testSeqOrder: every put gets a number above every earlier one's, a
// batch's puts in the order of the batch, and Get, Scan and Since agree.
func testSeqOrder(t *testing.T, s store.Store) {
	put(t, s, "t", []byte("a"), 1, []byte("1"))
	put(t, s, "u", []byte("b"), 1, []byte("2"))
	var b store.Batch
	b.Put("t", []byte("d"), 1, []byte("3"))
	b.Delete("t", []byte("zz"))
	b.Put("t", []byte("c"), 1, []byte("4"))
	apply(t, s, &b)
	put(t, s, "t", []byte("a"), 2, []byte("5")) // put again: a new number

	order := [][2]string{{"t", "a"}, {"u", "b"}, {"t", "d"}, {"t", "c"}}
	var last uint64
	for i, tk := range order[1:] {
		r := get(t, s, tk[0], []byte(tk[1]))
		if r.Seq <= last {
			t.Errorf("put %d (%s %s) has Seq %d, not above the put before's %d", i+2, tk[0], tk[1], r.Seq, last)
		}
		last = r.Seq
	}
	if a := get(t, s, "t", []byte("a")); a.Seq <= last {
		t.Errorf("a record put again has Seq %d, not above the puts before it (%d)", a.Seq, last)
	}
	for _, r := range scan(t, s, "t") {
		if g := get(t, s, "t", r.Key); g.Seq != r.Seq || r.Seq == 0 {
			t.Errorf("Scan gives %s Seq %d, Get %d", r.Key, r.Seq, g.Seq)
		}
	}
}

// testSince: Since visits the records of the tables asked for numbered
// above after, in order of their numbers, the last version of a record
// put again, and no deleted record.
func testSince(t *testing.T, s store.Store) {
	if got := since(t, s, 0, "t"); len(got) != 0 {
		t.Fatalf("Since on an empty store visited %d records", len(got))
	}
	put(t, s, "t", []byte("k1"), 1, []byte("1"))
	put(t, s, "other", []byte("o1"), 1, []byte("2"))
	put(t, s, "t", []byte("k0"), 2, []byte("3"))
	put(t, s, "u", []byte("u1"), 1, []byte("4"))
	var b store.Batch
	b.Put("t", []byte("k2"), 1, []byte("5"))
	b.Delete("t", []byte("k1"))
	apply(t, s, &b)
	put(t, s, "t", []byte("k0"), 2, []byte("6"))

	got := since(t, s, 0, "t", "u")
	var keys []string
	for i, r := range got {
		keys = append(keys, r.Table+"/"+string(r.Key))
		if i > 0 && r.Seq <= got[i-1].Seq {
			t.Errorf("Since visited Seq %d after %d", r.Seq, got[i-1].Seq)
		}
		if g := get(t, s, r.Table, r.Key); !equal(g, r) || g.Seq != r.Seq {
			t.Errorf("Since gave %s (Seq %d), Get %s (Seq %d)", show(r), r.Seq, show(g), g.Seq)
		}
	}
	if want := []string{"u/u1", "t/k2", "t/k0"}; !slices.Equal(keys, want) {
		t.Fatalf("Since(0, t, u) visited %v, want %v", keys, want)
	}
	if later := since(t, s, got[0].Seq, "t", "u"); len(later) != 2 || later[0].Seq != got[1].Seq {
		t.Errorf("Since after the first record visited %d records, want the 2 after it", len(later))
	}
	if rest := since(t, s, got[2].Seq, "t", "u", "other"); len(rest) != 0 {
		t.Errorf("Since after the last record visited %d records", len(rest))
	}
	if none := since(t, s, 0); len(none) != 0 {
		t.Errorf("Since of no table visited %d records", len(none))
	}

	stop := errors.New("stop")
	n := 0
	err := s.Since(t.Context(), 0, []string{"t", "u"}, func(store.Record) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Errorf("Since with fn failing: %v after %d records, want fn's error unchanged after 1", err, n)
	}
	if err := s.Since(t.Context(), 0, []string{"bad table"}, func(store.Record) error { return nil }); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Since of an invalid table name: %v, want ErrInvalid", err)
	}
}

// testHead: Head is 0 on an empty store, at least the number of every
// record held, and below the number of every later put.
func testHead(t *testing.T, s store.Store) {
	head := func() uint64 {
		t.Helper()
		h, err := s.Head(t.Context())
		if err != nil {
			t.Fatalf("Head: %v", err)
		}
		return h
	}
	if h := head(); h != 0 {
		t.Errorf("Head of an empty store = %d, want 0", h)
	}
	for i := range 3 {
		put(t, s, "t", []byte{byte(i)}, 1, nil)
	}
	h := head()
	for _, r := range since(t, s, 0, "t") {
		if r.Seq > h {
			t.Errorf("a record has Seq %d, above Head %d", r.Seq, h)
		}
	}
	put(t, s, "u", []byte("later"), 1, nil)
	if r := get(t, s, "u", []byte("later")); r.Seq <= h {
		t.Errorf("a put after Head returned %d has Seq %d", h, r.Seq)
	}
	if got := since(t, s, h, "t", "u"); len(got) != 1 || string(got[0].Key) != "later" {
		t.Errorf("Since(Head) visited %d records, want the one put after", len(got))
	}
}

// testScanSnapshot: a scan visits no record put after it began, so that
// its highest number is where a follower of the table starts.
func testScanSnapshot(t *testing.T, s store.Store) {
	for i := range 10 {
		put(t, s, "t", []byte{byte(2 * i)}, 1, []byte{1})
	}
	var seen []store.Record
	err := s.Scan(t.Context(), "t", func(r store.Record) error {
		if len(seen) == 0 {
			put(t, s, "t", []byte{99}, 1, []byte{2}) // after every key
			put(t, s, "t", []byte{18}, 1, []byte{2}) // put again, ahead
		}
		seen = append(seen, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	var top uint64
	for _, r := range seen {
		if r.Value[0] != 1 {
			t.Errorf("the scan visited %x as put after it began", r.Key)
		}
		top = max(top, r.Seq)
	}
	var keys []string
	for _, r := range since(t, s, top, "t") {
		keys = append(keys, fmt.Sprintf("%x", r.Key))
	}
	if want := []string{"63", "12"}; !slices.Equal(keys, want) {
		t.Errorf("after the scan's highest Seq, Since visits %v, want the two puts made during the scan %v", keys, want)
	}
}

// testConcurrentFollow: a follower that calls Since from the highest
// number it has read, while writers race each other, reads every record
// once: no record commits with a number below one already read.
func testConcurrentFollow(t *testing.T, s store.Store) {
	const writers, perWriter = 4, 30
	var wg sync.WaitGroup
	var done atomic.Bool
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				var b store.Batch
				for j := range 1 + i%3 {
					b.Put("t", fmt.Appendf(nil, "%d-%03d-%d", w, i, j), 1, []byte{byte(w)})
				}
				if err := s.Apply(t.Context(), &b); err != nil {
					t.Errorf("Apply: %v", err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); done.Store(true) }()
	seen := map[string]bool{}
	var after uint64
	follow := func() {
		err := s.Since(t.Context(), after, []string{"t"}, func(r store.Record) error {
			if r.Seq <= after {
				return fmt.Errorf("Since(%d) visited Seq %d", after, r.Seq)
			}
			if seen[string(r.Key)] {
				return fmt.Errorf("record %s visited twice", r.Key)
			}
			seen[string(r.Key)] = true
			after = r.Seq
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for !done.Load() {
		follow()
	}
	follow()
	want := len(scan(t, s, "t"))
	if len(seen) != want {
		t.Errorf("the follower read %d records of the %d written: it missed some that committed below a number it had read", len(seen), want)
	}
}

// testMustHold: a batch that requires a record's value applies only while
// the record holds exactly that value: not after another write replaced
// it, not once it is deleted.
func testMustHold(t *testing.T, s store.Store) {
	ctx := context.Background()
	put(t, s, "t", []byte("head"), store.NoDay, []byte("v1"))
	var b store.Batch
	b.MustHold("t", []byte("head"), []byte("v1"))
	b.Put("t", []byte("head"), store.NoDay, []byte("v2"))
	apply(t, s, &b)
	wantRecord(t, s, store.Record{Table: "t", Key: []byte("head"), Day: store.NoDay, Value: []byte("v2")})

	for name, value := range map[string][]byte{"a replaced value": []byte("v1"), "a longer value": []byte("v22")} {
		var b store.Batch
		b.MustHold("t", []byte("head"), value)
		b.Put("t", []byte("other"), store.NoDay, []byte("x"))
		if err := s.Apply(ctx, &b); !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", name, err)
		}
		wantMissing(t, s, "t", []byte("other"))
	}
	var del store.Batch
	del.Delete("t", []byte("head"))
	apply(t, s, &del)
	var gone store.Batch
	gone.MustHold("t", []byte("head"), []byte("v2"))
	if err := s.Apply(ctx, &gone); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a deleted record: %v, want ErrConflict", err)
	}
}
