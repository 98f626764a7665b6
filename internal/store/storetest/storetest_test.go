package storetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/memstore"
)

// TestRunOnMemStore runs the suite on memstore, a second implementation
// that shares nothing with SQLite's, so that the suite is checked against
// more than one store and does not encode one store's quirks.
func TestRunOnMemStore(t *testing.T) {
	Run(t, func(t *testing.T) store.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// brokenStore breaks the contract in one way, to check that the suite
// notices.
type brokenStore struct {
	*memstore.Store
	apply func(m *memstore.Store, ctx context.Context, b *store.Batch) error
	scan  func(m *memstore.Store, ctx context.Context, table string, fn func(store.Record) error) error
}

func (s brokenStore) Apply(ctx context.Context, b *store.Batch) error {
	if s.apply != nil && b != nil {
		return s.apply(s.Store, ctx, b)
	}
	return s.Store.Apply(ctx, b)
}

func (s brokenStore) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if s.scan != nil {
		return s.scan(s.Store, ctx, table, fn)
	}
	return s.Store.Scan(ctx, table, fn)
}

// brokenStores maps a defect to the store that has it and the subtest of
// the suite that must catch it.
var brokenStores = map[string]struct {
	store  brokenStore
	caught string
}{
	"checks-ignored": {brokenStore{apply: func(m *memstore.Store, ctx context.Context, b *store.Batch) error {
		return m.Apply(ctx, &store.Batch{Ops: b.Ops})
	}}, "BatchChecks"},
	"not-atomic": {brokenStore{apply: func(m *memstore.Store, ctx context.Context, b *store.Batch) error {
		if err := m.Apply(ctx, &store.Batch{Ops: b.Ops}); err != nil {
			return err
		}
		return m.Apply(ctx, &store.Batch{Checks: b.Checks})
	}}, "BatchAtomicity"},
	"check-then-act-race": {brokenStore{apply: func(m *memstore.Store, ctx context.Context, b *store.Batch) error {
		// Checks and writes under separate locks: two consumers of one
		// token can both pass the check.
		if err := m.Apply(ctx, &store.Batch{Checks: b.Checks}); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
		return m.Apply(ctx, &store.Batch{Ops: b.Ops})
	}}, "ConcurrentTokenConsumption"},
	"scan-unordered": {brokenStore{scan: func(m *memstore.Store, ctx context.Context, table string, fn func(store.Record) error) error {
		var rs []store.Record
		if err := m.Scan(ctx, table, func(r store.Record) error { rs = append(rs, r); return nil }); err != nil {
			return err
		}
		slices.Reverse(rs)
		for _, r := range rs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}}, "ScanOrder"},
	"scan-error-wrapped": {brokenStore{scan: func(m *memstore.Store, ctx context.Context, table string, fn func(store.Record) error) error {
		if err := m.Scan(ctx, table, fn); err != nil {
			return fmt.Errorf("wrapped: %w", err)
		}
		return nil
	}}, "ScanStop"},
}

const brokenEnv = "STORETEST_BROKEN"

// TestBrokenStoreHelper runs the suite on one broken store when
// TestSuiteCatchesBrokenStores starts this test binary again.
func TestBrokenStoreHelper(t *testing.T) {
	mode := os.Getenv(brokenEnv)
	if mode == "" {
		t.Skip("run by TestSuiteCatchesBrokenStores")
	}
	Run(t, func(t *testing.T) store.Store {
		b := brokenStores[mode].store
		b.Store = memstore.New()
		return b
	})
}

// TestSuiteCatchesBrokenStores checks that the suite fails stores with
// the defects that would hurt the backend most.
func TestSuiteCatchesBrokenStores(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("inside the helper")
	}
	for mode, tc := range brokenStores {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenStoreHelper$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store whose defect is %s", mode)
			}
			if want := "--- FAIL: TestBrokenStoreHelper/" + tc.caught + " "; !strings.Contains(string(out), want) {
				t.Errorf("subtest %s did not fail; output:\n%s", tc.caught, out)
			}
		})
	}
}
