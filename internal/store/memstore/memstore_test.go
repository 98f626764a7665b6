package memstore_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/memstore"
	"github.com/conftrace/conftrace/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestScanCallbackMayWrite: the suite only asks that a scan's callback may
// read; memstore holds no lock during the callback, so a write there must
// not deadlock, and the scan visits what the table held when it began.
func TestScanCallbackMayWrite(t *testing.T) {
	s := memstore.New()
	var b store.Batch
	b.Put("t", []byte("a"), 1, []byte("1"))
	b.Put("t", []byte("b"), 1, []byte("2"))
	if err := s.Apply(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	var seen []string
	err := s.Scan(t.Context(), "t", func(r store.Record) error {
		seen = append(seen, string(r.Key))
		var w store.Batch
		w.Put("t", append(r.Key, 'x'), 2, nil)
		return s.Apply(t.Context(), &w)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != "a" || seen[1] != "b" {
		t.Fatalf("scan visited %q, want [a b]", seen)
	}
	days, err := s.Days(t.Context())
	if err != nil || len(days) != 2 {
		t.Fatalf("Days = %v, %v; want [1 2]", days, err)
	}
}

// TestDaysFollowsOverwrites: a record that a put moves to another day, or
// a delete removes, no longer counts for its old day.
func TestDaysFollowsOverwrites(t *testing.T) {
	s := memstore.New()
	apply := func(b *store.Batch) {
		t.Helper()
		if err := s.Apply(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	wantDays := func(want ...calendar.Day) {
		t.Helper()
		got, err := s.Days(t.Context())
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Days = %v, %v; want %v", got, err, want)
		}
	}
	var b store.Batch
	b.Put("t", []byte("k"), 1, nil)
	b.Put("u", []byte("k"), 1, nil)
	apply(&b)
	b = store.Batch{}
	b.Put("t", []byte("k"), 2, nil)
	apply(&b)
	wantDays(1, 2)
	b = store.Batch{}
	b.Delete("u", []byte("k"))
	apply(&b)
	wantDays(2)
	if n, err := s.DeleteDay(t.Context(), 2); n != 1 || err != nil {
		t.Fatalf("DeleteDay = %d, %v; want 1", n, err)
	}
	wantDays()
}

func TestClosed(t *testing.T) {
	s := memstore.New()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "t", []byte("k")); !errors.Is(err, memstore.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := s.Scan(t.Context(), "t", func(store.Record) error { return nil }); !errors.Is(err, memstore.ErrClosed) {
		t.Errorf("Scan after Close = %v, want ErrClosed", err)
	}
	if _, err := s.DeleteDay(t.Context(), 1); !errors.Is(err, memstore.ErrClosed) {
		t.Errorf("DeleteDay after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Days(t.Context()); !errors.Is(err, memstore.ErrClosed) {
		t.Errorf("Days after Close = %v, want ErrClosed", err)
	}
}
