package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// memStore is a minimal in-memory store.Store, written from the interface's
// documentation alone, so that the suite is checked against a second
// implementation and does not encode one store's quirks.
type memStore struct {
	mu     sync.Mutex
	closed bool
	recs   map[string]store.Record // by table + "\x00" + key
}

var errClosed = errors.New("memstore: closed")

func id(table string, key []byte) string { return table + "\x00" + string(key) }

func clone(r store.Record) store.Record {
	r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
	if r.Value == nil {
		r.Value = []byte{}
	}
	return r
}

func (m *memStore) Get(ctx context.Context, table string, key []byte) (store.Record, error) {
	if err := store.ValidateKey(table, key); err != nil {
		return store.Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return store.Record{}, errClosed
	}
	r, ok := m.recs[id(table, key)]
	if !ok {
		return store.Record{}, store.ErrNotFound
	}
	return clone(r), nil
}

func (m *memStore) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if err := store.ValidateTable(table); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errClosed
	}
	var rs []store.Record
	for _, r := range m.recs {
		if r.Table == table {
			rs = append(rs, clone(r))
		}
	}
	m.mu.Unlock()
	slices.SortFunc(rs, func(a, b store.Record) int { return bytes.Compare(a.Key, b.Key) })
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (m *memStore) Apply(ctx context.Context, b *store.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	for _, c := range b.Checks {
		if _, ok := m.recs[id(c.Table, c.Key)]; ok != c.Exists {
			c.Key = bytes.Clone(c.Key)
			return &store.ConflictError{Check: c}
		}
	}
	for _, op := range b.Ops {
		if op.Delete {
			delete(m.recs, id(op.Table, op.Key))
		} else {
			m.recs[id(op.Table, op.Key)] = clone(op.Record)
		}
	}
	return nil
}

func (m *memStore) DeleteDay(ctx context.Context, day calendar.Day) (int64, error) {
	if day == store.NoDay {
		return 0, store.ErrInvalid
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errClosed
	}
	var n int64
	for k, r := range m.recs {
		if r.Day == day {
			delete(m.recs, k)
			n++
		}
	}
	return n, nil
}

func (m *memStore) Days(ctx context.Context) ([]calendar.Day, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	var days []calendar.Day
	for _, r := range m.recs {
		if r.Day != store.NoDay && !slices.Contains(days, r.Day) {
			days = append(days, r.Day)
		}
	}
	slices.Sort(days)
	return days, nil
}

func (m *memStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func TestRunOnMemStore(t *testing.T) {
	Run(t, func(t *testing.T) store.Store {
		return &memStore{recs: make(map[string]store.Record)}
	})
}

// brokenStore breaks the contract in one way, to check that the suite
// notices.
type brokenStore struct {
	*memStore
	apply func(m *memStore, ctx context.Context, b *store.Batch) error
	scan  func(m *memStore, ctx context.Context, table string, fn func(store.Record) error) error
}

func (s brokenStore) Apply(ctx context.Context, b *store.Batch) error {
	if s.apply != nil && b != nil {
		return s.apply(s.memStore, ctx, b)
	}
	return s.memStore.Apply(ctx, b)
}

func (s brokenStore) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if s.scan != nil {
		return s.scan(s.memStore, ctx, table, fn)
	}
	return s.memStore.Scan(ctx, table, fn)
}

// brokenStores maps a defect to the store that has it and the subtest of
// the suite that must catch it.
var brokenStores = map[string]struct {
	store  brokenStore
	caught string
}{
	"checks-ignored": {brokenStore{apply: func(m *memStore, ctx context.Context, b *store.Batch) error {
		return m.Apply(ctx, &store.Batch{Ops: b.Ops})
	}}, "BatchChecks"},
	"not-atomic": {brokenStore{apply: func(m *memStore, ctx context.Context, b *store.Batch) error {
		if err := m.Apply(ctx, &store.Batch{Ops: b.Ops}); err != nil {
			return err
		}
		return m.Apply(ctx, &store.Batch{Checks: b.Checks})
	}}, "BatchAtomicity"},
	"check-then-act-race": {brokenStore{apply: func(m *memStore, ctx context.Context, b *store.Batch) error {
		// Checks and writes under separate locks: two consumers of one
		// token can both pass the check.
		if err := m.Apply(ctx, &store.Batch{Checks: b.Checks}); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
		return m.Apply(ctx, &store.Batch{Ops: b.Ops})
	}}, "ConcurrentTokenConsumption"},
	"scan-unordered": {brokenStore{scan: func(m *memStore, ctx context.Context, table string, fn func(store.Record) error) error {
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
	"scan-error-wrapped": {brokenStore{scan: func(m *memStore, ctx context.Context, table string, fn func(store.Record) error) error {
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
		b.memStore = &memStore{recs: make(map[string]store.Record)}
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
