package matchindex

import (
	"sync"

	"github.com/conftrace/conftrace/internal/calendar"
)

// Map is the baseline [Index]: a Go map from the full key to its contacts,
// behind a read-write mutex. It is what a first version would do, and the
// reference [Compact] is tested and measured against. Use [NewMap] to make
// one.
type Map struct {
	mu sync.RWMutex
	m  map[Key][]Contact
	n  int
	// peak is the most keys the map has held: Go maps do not shrink when
	// keys are deleted, so it, not len(m), sizes the table.
	peak int
}

// NewMap returns an empty map index.
func NewMap() *Map {
	return &Map{m: make(map[Key][]Contact)}
}

// Add stores the entries. It never fails.
func (x *Map) Add(entries []Entry) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range entries {
		x.m[e.Key] = append(x.m[e.Key], e.Contact)
	}
	x.n += len(entries)
	x.peak = max(x.peak, len(x.m))
	return nil
}

// Lookup appends the contacts stored under k to dst.
func (x *Map) Lookup(dst []Contact, k Key) []Contact {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return append(dst, x.m[k]...)
}

// LookupBatch appends, for each query qs[i] in order, the contacts stored
// under qs[i].Key whose interval is within skew of qs[i].Interval. It looks
// the keys up one after the other, under one read lock.
func (x *Map) LookupBatch(dst []Found, qs []Query, skew uint32) []Found {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i := range qs {
		for _, c := range x.m[qs[i].Key] {
			if within(c.Interval, qs[i].Interval, skew) {
				dst = append(dst, Found{Query: i, Contact: c})
			}
		}
	}
	return dst
}

// Drop removes every contact of day.
func (x *Map) Drop(day calendar.Day) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	removed := 0
	for k, cs := range x.m {
		kept := cs[:0]
		for _, c := range cs {
			if c.Day != day {
				kept = append(kept, c)
			}
		}
		removed += len(cs) - len(kept)
		switch {
		case len(kept) == 0:
			delete(x.m, k)
		case len(kept) < len(cs):
			x.m[k] = kept
		}
	}
	x.n -= removed
	return removed
}

// Len returns the number of contacts stored.
func (x *Map) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n
}

// The estimate follows the layout of Go's map (Swiss tables): a slot holds
// a key, a slice header and a control byte, 57 bytes; a full-size table of
// 1,024 slots takes 64 KiB once its allocation is rounded up to whole
// pages; tables split when 7/8 full, and split evenly because hashes are,
// so the slot count is about the power of two above 8/7 of the peak key
// count. Each key's contacts add a one-element slice (a 12-byte Contact in
// a 16-byte allocation). BenchmarkLookup reports the heap actually used
// next to this estimate; they agree within a few percent.
const (
	mapSlotBytes    = 64
	mapContactBytes = 16
)

// MemBytes estimates the memory the map uses.
func (x *Map) MemBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	slots := int64(1)
	for slots*7 < int64(x.peak)*8 {
		slots *= 2
	}
	return slots*mapSlotBytes + int64(x.n)*mapContactBytes
}
