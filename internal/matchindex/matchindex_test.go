package matchindex

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
)

// impls are the implementations every behavioural test runs against.
var impls = []struct {
	name string
	new  func() Index
}{
	{"compact", func() Index { return NewCompact() }},
	{"map", func() Index { return NewMap() }},
}

func randRPI(r *rand.Rand) [16]byte {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], r.Uint64())
	binary.LittleEndian.PutUint64(b[8:], r.Uint64())
	return b
}

func randKey(r *rand.Rand) Key { return NewKey(randRPI(r), randRPI(r)) }

// randShortKey returns a key as the enclave makes them: two 8-byte RPI
// prefixes, the rest zero (isShort).
func randShortKey(r *rand.Rand) Key {
	var own, heard [16]byte
	binary.LittleEndian.PutUint64(own[:8], r.Uint64())
	binary.LittleEndian.PutUint64(heard[:8], r.Uint64())
	return NewKey(own, heard)
}

// randContact returns a contact of day d: mostly as the enclave stores
// them, in their day and at most an hour long, which Compact packs into
// its runs; sometimes anything, which it keeps apart.
func randContact(r *rand.Rand, d calendar.Day) Contact {
	if r.IntN(4) == 0 {
		return Contact{Interval: r.Uint32(), Minutes: uint16(r.Uint32()), Attenuation: uint8(r.Uint32()), Day: d}
	}
	return Contact{
		Interval:    uint32(d)*intervalsPerDay + uint32(r.IntN(intervalsPerDay+2)),
		Minutes:     uint16(1 + r.IntN(60)),
		Attenuation: uint8(r.Uint32()),
		Day:         d,
	}
}

// nearModel is the specification of LookupBatch: Lookup, then the
// interval filter, query by query.
func nearModel(lookup func(Key) []Contact, qs []Query, skew uint32) []Found {
	var out []Found
	for i, q := range qs {
		for _, c := range sorted(lookup(q.Key)) {
			if within(c.Interval, q.Interval, skew) {
				out = append(out, Found{Query: i, Contact: c})
			}
		}
	}
	return out
}

// sortedFound returns fs sorted by query, then contact: LookupBatch
// groups by query in order, but within a query the order is unspecified.
func sortedFound(fs []Found) []Found {
	fs = slices.Clone(fs)
	slices.SortStableFunc(fs, func(a, b Found) int {
		return cmp.Or(cmp.Compare(a.Query, b.Query), compareContacts(a.Contact, b.Contact))
	})
	return fs
}

// checkGrouped fails unless fs is grouped by query in ascending order.
func checkGrouped(t *testing.T, fs []Found) {
	t.Helper()
	for i := 1; i < len(fs); i++ {
		if fs[i-1].Query > fs[i].Query {
			t.Fatalf("LookupBatch answered query %d after query %d", fs[i].Query, fs[i-1].Query)
		}
	}
}

func compareContacts(a, b Contact) int {
	return cmp.Or(
		cmp.Compare(a.Day, b.Day),
		cmp.Compare(a.Interval, b.Interval),
		cmp.Compare(a.Minutes, b.Minutes),
		cmp.Compare(a.Attenuation, b.Attenuation),
	)
}

// sorted returns cs sorted, for comparing results whose order is
// unspecified.
func sorted(cs []Contact) []Contact {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, compareContacts)
	return cs
}

func TestKeyHalves(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	own, heard := randRPI(r), randRPI(r)
	k := NewKey(own, heard)
	if k.Own() != own || k.Heard() != heard {
		t.Fatalf("NewKey(own, heard) = %x: Own %x, Heard %x", k, k.Own(), k.Heard())
	}
	if m := k.Mirror(); m != NewKey(heard, own) || m.Mirror() != k {
		t.Fatalf("Mirror(%x) = %x, want heard||own, and mirroring twice to give the key back", k, m)
	}
}

// TestReciprocalMatch follows one encounter through Match: only the device
// that logged the mirror tuple is exposed.
func TestReciprocalMatch(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			r := rand.New(rand.NewChaCha8([32]byte{2}))
			a1, b1, c1 := randRPI(r), randRPI(r), randRPI(r)
			idx := impl.new()
			// C, broadcasting c1, heard A (a1) and tests positive.
			uploaded := Contact{Interval: 2_900_000, Minutes: 12, Attenuation: 55, Day: 20_000}
			if err := idx.Add([]Entry{{Key: NewKey(c1, a1), Contact: uploaded}}); err != nil {
				t.Fatal(err)
			}
			cases := []struct {
				name string
				own  Key
				want []Contact
			}{
				{"A heard C and was heard", NewKey(a1, c1), []Contact{uploaded}},
				{"B heard C but was not heard", NewKey(b1, c1), nil},
				{"C polls its own tuple", NewKey(c1, a1), nil},
				{"one half of the key only", NewKey(a1, b1), nil},
			}
			for _, tc := range cases {
				got := Match(idx, nil, tc.own, uploaded.Interval, 1)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
				}
			}
		})
	}
}

func TestMatchSkew(t *testing.T) {
	cases := []struct {
		stored, polled, skew uint32
		match                bool
	}{
		{1000, 1000, 0, true},
		{1000, 1001, 0, false},
		{1000, 999, 1, true},
		{1000, 1001, 1, true},
		{1000, 998, 1, false},
		{1000, 1002, 1, false},
		{1000, 1002, 2, true},
		{0, 1, 1, true},
		{1, 0, 1, true},
		{0, math.MaxUint32, 1, false}, // no wrap-around
		{math.MaxUint32, 0, 1, false},
		{math.MaxUint32, math.MaxUint32 - 1, 1, true},
		{0, math.MaxUint32, math.MaxUint32, true},
	}
	for _, impl := range impls {
		for _, tc := range cases {
			name := fmt.Sprintf("%s/stored=%d/polled=%d/skew=%d", impl.name, tc.stored, tc.polled, tc.skew)
			t.Run(name, func(t *testing.T) {
				idx := impl.new()
				var own, heard [16]byte
				own[0], heard[0] = 1, 2
				c := Contact{Interval: tc.stored, Minutes: 5, Attenuation: 60, Day: 1}
				if err := idx.Add([]Entry{{Key: NewKey(heard, own), Contact: c}}); err != nil {
					t.Fatal(err)
				}
				prefix := []Contact{{Interval: 7}}
				got := Match(idx, slices.Clone(prefix), NewKey(own, heard), tc.polled, tc.skew)
				want := prefix
				if tc.match {
					want = append(want, c)
				}
				if !slices.Equal(got, want) {
					t.Errorf("Match = %v, want %v", got, want)
				}
			})
		}
	}
}

// model is the specification both implementations are checked against:
// every entry added and not dropped, by key.
type model struct {
	m map[Key][]Contact
	n int
}

func newModel() *model { return &model{m: map[Key][]Contact{}} }

func (m *model) add(entries []Entry) {
	for _, e := range entries {
		m.m[e.Key] = append(m.m[e.Key], e.Contact)
	}
	m.n += len(entries)
}

func (m *model) lookup(k Key) []Contact { return sorted(m.m[k]) }

func (m *model) drop(d calendar.Day) int {
	removed := 0
	for k, cs := range m.m {
		if slices.ContainsFunc(cs, func(c Contact) bool { return c.Day == d }) {
			kept := slices.DeleteFunc(slices.Clone(cs), func(c Contact) bool { return c.Day == d })
			removed += len(cs) - len(kept)
			m.m[k] = kept
		}
	}
	m.n -= removed
	return removed
}

func (m *model) len() int { return m.n }

// TestAgainstMap runs random adds, bulk loads, drops, lookups and batch
// lookups on Compact and Map and checks they agree with each other and
// with a model, including on keys that share one RPI with a stored key, on
// mirrors, on duplicates, on keys stored under several days and on
// contacts that do not pack into a run.
func TestAgainstMap(t *testing.T) {
	for seed := range 8 {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewChaCha8([32]byte{3, byte(seed)}))
			compact, baseline := NewCompact(), NewMap()
			m := newModel()
			var known []Key
			pick := func() Key {
				if len(known) == 0 || r.IntN(4) == 0 {
					if r.IntN(2) == 0 {
						return randShortKey(r)
					}
					return randKey(r)
				}
				k := known[r.IntN(len(known))]
				switch r.IntN(4) {
				case 0:
					return k.Mirror()
				case 1:
					return NewKey(k.Own(), randRPI(r)) // same own RPI
				case 2:
					return NewKey(randRPI(r), k.Heard()) // same heard RPI
				}
				return k
			}
			check := func(k Key) {
				t.Helper()
				want := m.lookup(k)
				gotC := sorted(compact.Lookup(nil, k))
				gotM := sorted(baseline.Lookup(nil, k))
				if !slices.Equal(gotC, want) || !slices.Equal(gotM, want) {
					t.Fatalf("Lookup(%x): compact %v, map %v, want %v", k[:4], gotC, gotM, want)
				}
			}
			checkBatch := func() {
				t.Helper()
				qs := make([]Query, r.IntN(300))
				for i := range qs {
					k := pick()
					iv := r.Uint32()
					if cs := m.m[k]; len(cs) > 0 && r.IntN(2) == 0 {
						iv = cs[r.IntN(len(cs))].Interval + uint32(r.IntN(5)) - 2
					}
					qs[i] = Query{Key: k, Interval: iv}
				}
				skew := []uint32{0, 1, 3, math.MaxUint32}[r.IntN(4)]
				want := nearModel(m.lookup, qs, skew)
				prefix := []Found{{Query: -1}}
				gotC := compact.LookupBatch(slices.Clone(prefix), qs, skew)
				gotM := baseline.LookupBatch(slices.Clone(prefix), qs, skew)
				for _, got := range [][]Found{gotC, gotM} {
					if got[0] != prefix[0] {
						t.Fatalf("LookupBatch overwrote dst")
					}
					checkGrouped(t, got[1:])
				}
				if gotC, gotM := sortedFound(gotC[1:]), sortedFound(gotM[1:]); !slices.Equal(gotC, want) || !slices.Equal(gotM, want) {
					t.Fatalf("LookupBatch of %d, skew %d: compact %d found, map %d, want %d", len(qs), skew, len(gotC), len(gotM), len(want))
				}
			}
			for op := range 300 {
				switch x := r.IntN(12); {
				case x < 6:
					batch := make([]Entry, r.IntN(400))
					for i := range batch {
						k := pick()
						if r.IntN(3) > 0 {
							known = append(known, k)
						}
						batch[i] = Entry{Key: k, Contact: randContact(r, calendar.Day(100+r.IntN(6)))}
					}
					if x == 0 {
						// A bulk load, in two parts.
						l := compact.NewLoader()
						l.Add(batch[:len(batch)/2])
						l.Add(batch[len(batch)/2:])
						if err := l.Load(); err != nil {
							t.Fatal(err)
						}
					} else if err := compact.Add(batch); err != nil {
						t.Fatal(err)
					}
					if err := baseline.Add(batch); err != nil {
						t.Fatal(err)
					}
					m.add(batch)
				case x < 7:
					d := calendar.Day(100 + r.IntN(7))
					want := m.drop(d)
					if got := compact.Drop(d); got != want {
						t.Fatalf("op %d: compact.Drop(%d) = %d, want %d", op, d, got, want)
					}
					if got := baseline.Drop(d); got != want {
						t.Fatalf("op %d: map.Drop(%d) = %d, want %d", op, d, got, want)
					}
				case x < 9:
					checkBatch()
				default:
					for range 50 {
						check(pick())
					}
				}
				if n := m.len(); compact.Len() != n || baseline.Len() != n {
					t.Fatalf("op %d: Len: compact %d, map %d, want %d", op, compact.Len(), baseline.Len(), n)
				}
			}
			for k := range m.m {
				check(k)
			}
		})
	}
}

// TestLookupBatchOrder checks that a batch answers each query in order,
// whatever the shards and runs of its keys, with the duplicates of a key
// queried twice, and nothing for an empty batch.
func TestLookupBatchOrder(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			r := rand.New(rand.NewChaCha8([32]byte{16}))
			idx := impl.new()
			var stored []Entry
			for range 3 {
				batch := make([]Entry, 2000)
				for i := range batch {
					batch[i] = Entry{Key: randKey(r), Contact: randContact(r, 200)}
				}
				if err := idx.Add(batch); err != nil {
					t.Fatal(err)
				}
				stored = append(stored, batch...)
			}
			if got := idx.LookupBatch(nil, nil, 0); len(got) != 0 {
				t.Fatalf("LookupBatch of no queries = %v", got)
			}
			// More queries than a chunk, most of them hits, some twice.
			qs := make([]Query, 3*batchChunk+5)
			for i := range qs {
				e := stored[r.IntN(len(stored))]
				if i%7 == 3 {
					e = Entry{Key: randKey(r)}
				}
				if i%11 == 5 {
					e.Key = qs[i-1].Key
				}
				qs[i] = Query{Key: e.Key, Interval: e.Contact.Interval}
			}
			got := idx.LookupBatch(nil, qs, math.MaxUint32)
			checkGrouped(t, got)
			want := nearModel(func(k Key) []Contact { return idx.Lookup(nil, k) }, qs, math.MaxUint32)
			if got := sortedFound(got); !slices.Equal(got, want) {
				t.Fatalf("LookupBatch found %d, Lookup %d", len(got), len(want))
			}
		})
	}
}

// TestPackNarrow checks that a run's 32-bit payload gives back every
// contact it accepts, at the edges of the day, of the offset, of the
// minutes and of the uint32 intervals, and refuses the others.
func TestPackNarrow(t *testing.T) {
	days := new([maxDays]calendar.Day)
	for _, d := range []calendar.Day{0, 1, 20_000, math.MaxUint32 / intervalsPerDay, math.MaxUint32} {
		days[7] = d
		first := uint32(d) * intervalsPerDay
		for _, tc := range []struct {
			off     uint32
			minutes uint16
			fits    bool
		}{
			{0, 0, true}, {143, 60, true}, {255, 255, true},
			{256, 0, false}, {0, 256, false}, {math.MaxUint32, 1, false},
		} {
			c := Contact{Interval: first + tc.off, Minutes: tc.minutes, Attenuation: 0xa5, Day: d}
			p, ok := packNarrow(c.Interval, c.Minutes, c.Attenuation, c.Day, 7)
			if ok != tc.fits {
				t.Fatalf("%+v: packs %v, want %v", c, ok, tc.fits)
			}
			if ok && (unpackNarrow(p, days) != c || tagOf(p) != 7) {
				t.Fatalf("%+v: unpacks as %+v, tag %d", c, unpackNarrow(p, days), tagOf(p))
			}
		}
	}
}

func TestDropRemovesExactlyThatDay(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			r := rand.New(rand.NewChaCha8([32]byte{4}))
			idx := impl.new()
			m := newModel()
			shared := randKey(r) // stored under every day
			for d := calendar.Day(1); d <= 4; d++ {
				batch := []Entry{{Key: shared, Contact: Contact{Interval: uint32(d), Day: d}}}
				for i := range 500 * int(d) {
					batch = append(batch, Entry{Key: randKey(r), Contact: Contact{Interval: uint32(i), Minutes: uint16(d), Day: d}})
				}
				if err := idx.Add(batch); err != nil {
					t.Fatal(err)
				}
				m.add(batch)
			}
			steps := []struct {
				drop calendar.Day
				want int
			}{
				{2, 1001},
				{2, 0},  // already gone
				{99, 0}, // never there
				{4, 2001},
			}
			for _, s := range steps {
				if got := idx.Drop(s.drop); got != s.want {
					t.Fatalf("Drop(%d) = %d, want %d", s.drop, got, s.want)
				}
				m.drop(s.drop)
				if idx.Len() != m.len() {
					t.Fatalf("after Drop(%d): Len = %d, want %d", s.drop, idx.Len(), m.len())
				}
			}
			for k := range m.m {
				if got, want := sorted(idx.Lookup(nil, k)), m.lookup(k); !slices.Equal(got, want) {
					t.Fatalf("Lookup = %v, want %v", got, want)
				}
			}
			// The day can be added again after it was dropped.
			again := Entry{Key: randKey(r), Contact: Contact{Interval: 9, Day: 2}}
			if err := idx.Add([]Entry{again}); err != nil {
				t.Fatal(err)
			}
			if got := idx.Lookup(nil, again.Key); !slices.Equal(got, []Contact{again.Contact}) {
				t.Fatalf("Lookup after re-adding day 2 = %v, want %v", got, []Contact{again.Contact})
			}
		})
	}
}

// TestConcurrentLookups runs lookups and batch lookups while another
// goroutine adds uploads (some by bulk loads) and drops days. A lookup must find every entry of an upload whose Add
// returned, and every contact it returns must be one that was added under
// that key.
func TestConcurrentLookups(t *testing.T) {
	const (
		uploads   = 40
		perUpload = 250
		keep      = calendar.Day(1) // never dropped
		churn     = calendar.Day(2) // added and dropped again and again
	)
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			r := rand.New(rand.NewChaCha8([32]byte{5}))
			// contactOf derives the contact from the key, so a reader can
			// tell whether a result belongs to the key it asked for.
			contactOf := func(k Key, d calendar.Day) Contact {
				return Contact{Interval: binary.LittleEndian.Uint32(k[:]), Minutes: uint16(k[4]), Attenuation: k[5], Day: d}
			}
			batches := make([][]Entry, uploads)
			for b := range batches {
				for i := range perUpload {
					k := randKey(r)
					d := keep
					if i%2 == 1 {
						d = churn
					}
					batches[b] = append(batches[b], Entry{Key: k, Contact: contactOf(k, d)})
				}
			}
			idx := impl.new()
			var added atomic.Int64 // uploads whose Add returned
			var writerDone atomic.Bool
			var wg sync.WaitGroup
			wg.Go(func() {
				defer writerDone.Store(true)
				for b, batch := range batches {
					add := idx.Add
					if c, ok := idx.(*Compact); ok && b%3 == 1 {
						add = func(batch []Entry) error {
							l := c.NewLoader()
							l.Add(batch)
							return l.Load()
						}
					}
					if err := add(batch); err != nil {
						t.Error(err)
						return
					}
					added.Store(int64(b + 1))
					if b%5 == 4 {
						idx.Drop(churn)
					}
				}
			})
			for g := range 3 {
				wg.Go(func() {
					r := rand.New(rand.NewChaCha8([32]byte{6, byte(g)}))
					var dst []Contact
					for n := 0; n < 4000 || !writerDone.Load(); n++ {
						done := int(added.Load())
						if done == 0 {
							continue
						}
						e := batches[r.IntN(done)][r.IntN(perUpload)]
						if n%2 == 0 {
							dst = idx.Lookup(dst[:0], e.Key)
						} else {
							dst = dst[:0]
							for _, f := range idx.LookupBatch(nil, []Query{{Key: randKey(r)}, {Key: e.Key}}, math.MaxUint32) {
								if f.Query != 1 {
									t.Errorf("LookupBatch found %+v for a key never added", f)
									return
								}
								dst = append(dst, f.Contact)
							}
						}
						for _, c := range dst {
							if c != contactOf(e.Key, c.Day) || (c.Day != keep && c.Day != churn) {
								t.Errorf("Lookup returned %+v, which was never added under that key", c)
								return
							}
						}
						if e.Contact.Day == keep && !slices.Contains(dst, e.Contact) {
							t.Errorf("Lookup after Add returned = %v, missing %+v", dst, e.Contact)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestLoader checks that a bulk load stores what the same adds would, in
// one run per shard, on top of what the index held; that loaders can be
// fed from several goroutines; and that a load that would exceed 256 days
// changes nothing and keeps its entries.
func TestLoader(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{17}))
	bulk, incremental := NewCompact(), NewCompact()
	var all []Entry
	upload := func(n int, d calendar.Day) []Entry {
		es := make([]Entry, n)
		for i := range es {
			es[i] = Entry{Key: randKey(r), Contact: randContact(r, d)}
		}
		all = append(all, es...)
		if err := incremental.Add(es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	// Held before the load: several runs per shard.
	for i := range 20 {
		if err := bulk.Add(upload(500, calendar.Day(300+i%3))); err != nil {
			t.Fatal(err)
		}
	}
	l := bulk.NewLoader()
	var wg sync.WaitGroup
	for g := range 4 {
		es := upload(5000, calendar.Day(300+g))
		wg.Go(func() {
			for c := range slices.Chunk(es, 700) {
				l.Add(c)
			}
		})
	}
	wg.Wait()
	if l.Len() != 20_000 {
		t.Fatalf("Loader.Len = %d, want 20000", l.Len())
	}
	if err := l.Load(); err != nil {
		t.Fatal(err)
	}
	if l.Len() != 0 || bulk.Len() != len(all) {
		t.Fatalf("after Load: loader holds %d, index %d, want 0 and %d", l.Len(), bulk.Len(), len(all))
	}
	for s := range bulk.shards {
		sh := bulk.shards[s].Load()
		if len(sh.runs) != 1 {
			t.Fatalf("shard %d has %d runs after a load", s, len(sh.runs))
		}
		checkRun(t, &sh.runs[0])
	}
	for _, e := range all {
		if got, want := sorted(bulk.Lookup(nil, e.Key)), sorted(incremental.Lookup(nil, e.Key)); !slices.Equal(got, want) {
			t.Fatalf("Lookup after load = %v, after adds %v", got, want)
		}
	}
	if n := bulk.NewLoader().Load(); n != nil {
		t.Fatalf("an empty load: %v", n)
	}

	// One day too many: nothing of the load is stored, and it can be
	// loaded once a day is dropped.
	full := NewCompact()
	for d := range calendar.Day(maxDays - 1) {
		if err := full.Add([]Entry{{Key: randKey(r), Contact: randContact(r, d)}}); err != nil {
			t.Fatal(err)
		}
	}
	extra := []Entry{{Key: randKey(r), Contact: randContact(r, 1000)}, {Key: randKey(r), Contact: randContact(r, 1001)}}
	l = full.NewLoader()
	l.Add(extra)
	if err := l.Load(); !errors.Is(err, ErrTooManyDays) {
		t.Fatalf("Load of 2 new days into %d: err = %v, want ErrTooManyDays", maxDays-1, err)
	}
	if full.Len() != maxDays-1 || len(full.Lookup(nil, extra[0].Key)) != 0 || l.Len() != len(extra) {
		t.Fatalf("failed Load changed the index (%d tuples) or lost its entries (%d)", full.Len(), l.Len())
	}
	full.Drop(0)
	if err := l.Load(); err != nil {
		t.Fatalf("Load after Drop: %v", err)
	}
	for _, e := range extra {
		if got := full.Lookup(nil, e.Key); !slices.Equal(got, []Contact{e.Contact}) {
			t.Fatalf("Lookup = %v, want %v", got, []Contact{e.Contact})
		}
	}
}

func TestCompactTooManyDays(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{7}))
	idx := NewCompact()
	var live []Entry
	for d := range calendar.Day(maxDays) {
		e := Entry{Key: randKey(r), Contact: Contact{Interval: uint32(d), Day: d * 10}}
		live = append(live, e)
		if err := idx.Add([]Entry{e}); err != nil {
			t.Fatalf("Add of day %d of %d: %v", d+1, maxDays, err)
		}
	}
	// One more day fails, and nothing of that upload is stored, not even
	// its entry of a day the index already holds.
	extra := []Entry{
		{Key: randKey(r), Contact: Contact{Day: 10}},
		{Key: randKey(r), Contact: Contact{Day: 12345}},
	}
	if err := idx.Add(extra); !errors.Is(err, ErrTooManyDays) {
		t.Fatalf("Add of day %d: err = %v, want ErrTooManyDays", maxDays+1, err)
	}
	if idx.Len() != maxDays {
		t.Fatalf("Len after failed Add = %d, want %d", idx.Len(), maxDays)
	}
	for _, e := range extra {
		if got := idx.Lookup(nil, e.Key); len(got) != 0 {
			t.Fatalf("failed Add stored %v", got)
		}
	}
	// Dropping a day makes room, and the tag the new day reuses does not
	// change the day reported for other contacts.
	if n := idx.Drop(50); n != 1 {
		t.Fatalf("Drop(50) = %d, want 1", n)
	}
	if got := idx.Lookup(nil, live[5].Key); len(got) != 0 {
		t.Fatalf("Lookup of the dropped day's key = %v, want nothing", got)
	}
	live = slices.Delete(live, 5, 6)
	if err := idx.Add(extra); err != nil {
		t.Fatalf("Add after Drop: %v", err)
	}
	live = append(live, extra...)
	for _, e := range live {
		if got := idx.Lookup(nil, e.Key); !slices.Equal(got, []Contact{e.Contact}) {
			t.Fatalf("Lookup = %v, want %v", got, []Contact{e.Contact})
		}
	}
}

// TestCompactFingerprintBits checks that a hit needs all 88 bits: tuples
// whose fingerprint agrees with the key's on the shard and the 64-bit sort
// key but not on the 16-bit check are not returned, nor are the free
// slots next to them, which repeat the sort key.
func TestCompactFingerprintBits(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{8}))
	idx := NewCompact()
	k := randKey(r)
	f := idx.fingerprint(new([16]byte), &k)
	const day = 20_000
	pack := func(c Contact) uint32 {
		p, ok := packNarrow(c.Interval, c.Minutes, c.Attenuation, c.Day, 0)
		if !ok {
			t.Fatalf("%+v does not pack", c)
		}
		return p
	}
	idx.days[0] = day
	want := Contact{Interval: day*intervalsPerDay + 3, Minutes: 4, Attenuation: 5, Day: day}
	other := func(i uint32) uint32 { return pack(Contact{Interval: day*intervalsPerDay + i, Day: day}) }
	near := []tuple{
		{fp: f.fp - 1, check: f.check, payload: other(1)},
		{fp: f.fp, check: f.check - 1, payload: other(2)},
		{fp: f.fp, check: f.check, payload: pack(want)},
		{fp: f.fp, check: f.check + 1, payload: other(4)},
		{fp: f.fp + 1, check: f.check, payload: other(5)},
	}
	for i := range near {
		near[i].check = max(1, near[i].check)
	}
	// Surround them with other tuples so that the lookup has work to do.
	for range 1000 {
		near = append(near, tuple{fp: r.Uint64(), check: uint16(1 + r.IntN(0xffff)), payload: other(6)})
	}
	slices.SortFunc(near, compareTuples)
	idx.shards[f.shard].Store(&shard{runs: []run{newRun(near)}, days: idx.days, n: len(near)})
	if got := idx.Lookup(nil, k); !slices.Equal(got, []Contact{want}) {
		t.Fatalf("Lookup = %v, want only %v", got, want)
	}
}

// TestShortAndLongKeys: a key as the enclave makes it (isShort), whose
// fingerprint is one AES block, and the keys nearest it that are not
// short, whose fingerprint is a CBC-MAC, each find what was stored under
// them and nothing else.
func TestShortAndLongKeys(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{9}))
	short := randShortKey(r)
	if !isShort(&short) {
		t.Fatal("randShortKey made a key that is not short")
	}
	tail := short // one bit past the own prefix
	tail[shortHalf] = 1
	heardTail := short // one bit past the heard prefix
	heardTail[31] = 0x80
	packed := Key{} // the short key's 16 bytes, at the front of a long key
	copy(packed[:shortHalf], short[:shortHalf])
	copy(packed[shortHalf:16], short[16:16+shortHalf])
	keys := []Key{short, tail, heardTail, packed, short.Mirror()}
	for _, k := range keys[1:4] {
		if isShort(&k) {
			t.Fatalf("%x is short", k)
		}
	}
	const day = 30_000
	for _, impl := range impls {
		idx := impl.new()
		var es []Entry
		for i, k := range keys {
			es = append(es, Entry{Key: k, Contact: Contact{Interval: day*intervalsPerDay + uint32(i), Minutes: 5, Day: day}})
		}
		if err := idx.Add(es); err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if got := idx.Lookup(nil, k); !slices.Equal(got, []Contact{es[i].Contact}) {
				t.Errorf("%s: Lookup(key %d) = %v, want only %v", impl.name, i, got, es[i].Contact)
			}
		}
	}
}

func TestMemBytes(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{9}))
	compact, baseline := NewCompact(), NewMap()
	const n = 100_000
	var batch []Entry
	for i := range n {
		batch = append(batch, Entry{Key: randKey(r), Contact: Contact{Interval: uint32(i%2) * intervalsPerDay, Day: calendar.Day(i % 2)}})
		if len(batch) == 5000 {
			if err := compact.Add(batch); err != nil {
				t.Fatal(err)
			}
			if err := baseline.Add(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	perTuple := float64(compact.MemBytes()) / n
	if lo, hi := float64(slotBytes), float64(slotBytes)*slotsPerGap/(slotsPerGap-1)+1; perTuple < lo || perTuple > hi {
		t.Errorf("compact: %.1f bytes per tuple, want %.1f to %.1f", perTuple, lo, hi)
	}
	if mapPerTuple := float64(baseline.MemBytes()) / n; mapPerTuple < 3*perTuple {
		t.Errorf("map: %.1f bytes per tuple, want more than 3 times compact's %.1f", mapPerTuple, perTuple)
	}
	before := compact.MemBytes()
	compact.Drop(0)
	if after := compact.MemBytes(); after > before*6/10 {
		t.Errorf("compact: MemBytes %d after dropping half the tuples, %d before", after, before)
	}
}

// TestCompactInvariants checks, after many small adds and some drops, what
// lookups rely on and what keeps them fast: in every run, fingerprints
// never decrease, every tuple is at or after its home slot, free slots
// repeat the next tuple's fingerprint; each run is at least runRatio times
// larger than the next; every run but the oldest has a filter that holds
// each of its tuples; a drop leaves one run; and the shard's count is the
// sum of its runs'.
func TestCompactInvariants(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{15}))
	idx := NewCompact()
	const base = 20_000
	for i := range 320 { // not ending on a drop, which leaves one run
		batch := make([]Entry, 1+r.IntN(600))
		if i%100 == 0 {
			// Dozens of tuples a shard, as a large upload brings.
			batch = make([]Entry, 20_000)
		}
		for j := range batch {
			d := calendar.Day(base + i%5)
			batch[j] = Entry{Key: randKey(r), Contact: Contact{Interval: uint32(d)*intervalsPerDay + uint32(r.IntN(intervalsPerDay)), Day: d}}
		}
		if err := idx.Add(batch); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			idx.Drop(calendar.Day(base + r.IntN(5)))
			for s := range idx.shards {
				if sh := idx.shards[s].Load(); len(sh.runs) > 1 {
					t.Fatalf("after Drop, shard %d has %d runs", s, len(sh.runs))
				}
			}
		}
	}
	maxRuns := 0
	for s := range idx.shards {
		sh := idx.shards[s].Load()
		n := 0
		for i := range sh.runs {
			checkRun(t, &sh.runs[i])
			checkFilter(t, &sh.runs[i], i > 0)
			n += sh.runs[i].n
			if i > 0 && sh.runs[i-1].n < runRatio*sh.runs[i].n {
				t.Errorf("shard %d: run %d has %d tuples, run %d %d", s, i-1, sh.runs[i-1].n, i, sh.runs[i].n)
			}
		}
		if len(sh.wide) != 0 {
			t.Errorf("shard %d: %d wide tuples, want none", s, len(sh.wide))
		}
		if n != sh.n {
			t.Errorf("shard %d: n = %d, runs hold %d", s, sh.n, n)
		}
		maxRuns = max(maxRuns, len(sh.runs))
	}
	t.Logf("%d tuples, at most %d runs in a shard", idx.Len(), maxRuns)
}

// checkFilter checks that a run has a filter if it should, and that the
// filter holds each of its tuples: a false negative would lose a match.
func checkFilter(t *testing.T, rn *run, want bool) {
	t.Helper()
	if (rn.filter != nil) != want {
		t.Fatalf("run of %d tuples: has a filter %v, want %v", rn.n, rn.filter != nil, want)
	}
	for j, c := range rn.check {
		if c != 0 && rn.filter != nil && !rn.filter.mayHold(rn.fp[j]) {
			t.Fatalf("the filter of a run of %d tuples rules out its tuple at slot %d", rn.n, j)
		}
	}
}

// TestFilterFalsePositives measures how many keys a run does not hold its
// filter lets through: about 1% by design. More would send lookups into
// young runs for nothing, a cache miss each.
func TestFilterFalsePositives(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{16}))
	for _, n := range []int{1, 20, 3000, 100_000} {
		ts := make([]tuple, n)
		for i := range ts {
			ts[i] = tuple{fp: r.Uint64(), check: 1}
		}
		slices.SortFunc(ts, compareTuples)
		rn := newRun(ts)
		f := newFilter(&rn)
		const probes = 200_000
		passed := 0
		for range probes {
			if f.mayHold(r.Uint64()) {
				passed++
			}
		}
		rate := float64(passed) / probes
		t.Logf("%d tuples: %d filter words, %.2f%% of other keys let through", n, len(f), 100*rate)
		if n >= 3000 && rate > 0.015 {
			t.Errorf("%d tuples: the filter lets %.2f%% of other keys through, want about 1%%", n, 100*rate)
		}
	}
}

// checkRun checks the invariants of one run.
func checkRun(t *testing.T, rn *run) {
	t.Helper()
	if len(rn.fp) != len(rn.check) || len(rn.fp) != len(rn.payload) || len(rn.fp) < int(rn.slots) || rn.n == 0 {
		t.Fatalf("run of %d tuples: %d fp, %d check, %d payload, %d home slots", rn.n, len(rn.fp), len(rn.check), len(rn.payload), rn.slots)
	}
	tuples := 0
	for j := range rn.fp {
		if j > 0 && rn.fp[j-1] > rn.fp[j] {
			t.Fatalf("not sorted at slot %d", j)
		}
		if rn.check[j] == 0 {
			if j+1 < len(rn.fp) && rn.fp[j] != rn.fp[j+1] || j+1 == len(rn.fp) && rn.fp[j] != math.MaxUint64 {
				t.Fatalf("free slot %d does not repeat the next fingerprint", j)
			}
			continue
		}
		tuples++
		if h := home(rn.fp[j], rn.slots); h > j {
			t.Fatalf("tuple at slot %d before its home %d", j, h)
		}
	}
	if tuples != rn.n {
		t.Fatalf("run holds %d tuples, says %d", tuples, rn.n)
	}
}
