// Package memstore is a store.Store that keeps its records in memory. It
// is for tests and development: nothing survives the process, and Apply's
// "durable" means only that the batch is visible to every later call.
//
// It behaves as the conformance suite in store/storetest requires of every
// store, limits and errors included, so that a test of the enclave logic
// over memstore exercises the same contract as one over SQLite, in a
// fraction of the time. Like every store it holds only the bytes it is
// given and knows nothing of what they mean. A test can play the untrusted
// host through the ordinary methods: Get a sealed record, change or move
// it, and Apply it back.
package memstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// ErrClosed is returned by every method but Close once the store is closed.
var ErrClosed = errors.New("memstore: store is closed")

// Store is an in-memory store.Store. The zero value is not usable; call
// New. It is safe for concurrent use.
type Store struct {
	// mu guards everything below. Readers share it; Apply and DeleteDay
	// hold it exclusively, which makes every batch atomic and its checks
	// see the state its operations change.
	mu     sync.RWMutex
	closed bool
	// tables maps a table name to its records by key. A stored record is
	// never modified in place (a put replaces it), so a scan may hand out
	// records it collected under the lock after releasing it.
	tables map[string]map[string]*store.Record
	// days counts the records of each day, NoDay included, so that Days
	// need not visit every record.
	days map[calendar.Day]int
	// seq is the sequence number of the last put (store.Record.Seq).
	seq uint64
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		tables: make(map[string]map[string]*store.Record),
		days:   make(map[calendar.Day]int),
	}
}

// clone returns a copy of r that shares no memory with it, so that neither
// the caller's buffers nor the store's records change under the other.
func clone(r store.Record) store.Record {
	r.Key = bytes.Clone(r.Key)
	r.Value = bytes.Clone(r.Value)
	if r.Value == nil {
		r.Value = []byte{}
	}
	return r
}

// Get returns the record stored under key in table, or an error matching
// store.ErrNotFound.
func (s *Store) Get(ctx context.Context, table string, key []byte) (store.Record, error) {
	if err := store.ValidateKey(table, key); err != nil {
		return store.Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.Record{}, ErrClosed
	}
	r, ok := s.tables[table][string(key)]
	if !ok {
		return store.Record{}, fmt.Errorf("memstore: %s record %x: %w", table, key, store.ErrNotFound)
	}
	return clone(*r), nil
}

// Scan calls fn for each record of table in ascending key order. It visits
// the records the table held when the scan began, and holds no lock while
// fn runs, so fn may read and even write the store.
func (s *Store) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	if err := store.ValidateTable(table); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	recs := make([]*store.Record, 0, len(s.tables[table]))
	for _, r := range s.tables[table] {
		recs = append(recs, r)
	}
	s.mu.RUnlock()

	slices.SortFunc(recs, func(a, b *store.Record) int { return bytes.Compare(a.Key, b.Key) })
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(clone(*r)); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Apply checks the batch's checks and, if all hold, applies its operations
// in order, all under one lock: all or nothing.
func (s *Store) Apply(ctx context.Context, b *store.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if b == nil {
		return nil
	}
	for _, c := range b.Checks {
		r, ok := s.tables[c.Table][string(c.Key)]
		var v []byte
		if ok {
			v = r.Value
		}
		if !c.Holds(ok, v) {
			c.Key = bytes.Clone(c.Key)
			return &store.ConflictError{Check: c}
		}
	}
	for _, op := range b.Ops {
		if op.Delete {
			s.remove(op.Table, op.Key)
			continue
		}
		s.remove(op.Table, op.Key)
		t := s.tables[op.Table]
		if t == nil {
			t = make(map[string]*store.Record)
			s.tables[op.Table] = t
		}
		r := clone(op.Record)
		s.seq++
		r.Seq = s.seq
		t[string(r.Key)] = &r
		s.days[r.Day]++
	}
	return nil
}

// remove deletes the record under key in table, if any. The caller holds
// s.mu exclusively.
func (s *Store) remove(table string, key []byte) {
	t := s.tables[table]
	r, ok := t[string(key)]
	if !ok {
		return
	}
	delete(t, string(key))
	if len(t) == 0 {
		delete(s.tables, table)
	}
	s.forget(r.Day, 1)
}

// forget takes n records off day's count. The caller holds s.mu
// exclusively.
func (s *Store) forget(day calendar.Day, n int) {
	if s.days[day] -= n; s.days[day] <= 0 {
		delete(s.days, day)
	}
}

// DeleteDay deletes every record of day in every table and reports how
// many it deleted. Deleting store.NoDay fails with store.ErrInvalid.
func (s *Store) DeleteDay(ctx context.Context, day calendar.Day) (int64, error) {
	if day == store.NoDay {
		return 0, fmt.Errorf("memstore: deleting the records of no day: %w", store.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if s.days[day] == 0 {
		return 0, nil
	}
	var n int64
	for name, t := range s.tables {
		for k, r := range t {
			if r.Day == day {
				delete(t, k)
				n++
			}
		}
		if len(t) == 0 {
			delete(s.tables, name)
		}
	}
	s.forget(day, int(n))
	return n, nil
}

// Since calls fn, in ascending order of Seq, for each record of tables
// whose Seq is above after. It visits the records the store held when it
// began, and holds no lock while fn runs.
func (s *Store) Since(ctx context.Context, after uint64, tables []string, fn func(store.Record) error) error {
	for _, table := range tables {
		if err := store.ValidateTable(table); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	var recs []*store.Record
	for _, table := range slices.Compact(slices.Sorted(slices.Values(tables))) {
		for _, r := range s.tables[table] {
			if r.Seq > after {
				recs = append(recs, r)
			}
		}
	}
	s.mu.RUnlock()

	slices.SortFunc(recs, func(a, b *store.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(clone(*r)); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Head returns the sequence number of the last put.
func (s *Store) Head(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.seq, nil
}

// Days returns the days that have at least one record, ascending, without
// store.NoDay.
func (s *Store) Days(ctx context.Context) ([]calendar.Day, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	days := make([]calendar.Day, 0, len(s.days))
	for d := range s.days {
		if d != store.NoDay {
			days = append(days, d)
		}
	}
	slices.Sort(days)
	return days, nil
}

// Close releases the records. Calling it again does nothing; the other
// methods fail with ErrClosed after it.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.tables, s.days = nil, nil
	return nil
}
