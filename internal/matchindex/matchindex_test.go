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

// TestAgainstMap runs random adds, drops and lookups on Compact and Map
// and checks they agree with each other and with a model, including on
// keys that share one RPI with a stored key, on mirrors, on duplicates and
// on keys stored under several days.
func TestAgainstMap(t *testing.T) {
	for seed := range 8 {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewChaCha8([32]byte{3, byte(seed)}))
			compact, baseline := NewCompact(), NewMap()
			m := newModel()
			var known []Key
			pick := func() Key {
				if len(known) == 0 || r.IntN(4) == 0 {
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
			for op := range 300 {
				switch x := r.IntN(10); {
				case x < 5:
					batch := make([]Entry, r.IntN(400))
					for i := range batch {
						k := pick()
						if r.IntN(3) > 0 {
							known = append(known, k)
						}
						batch[i] = Entry{Key: k, Contact: Contact{
							Interval:    r.Uint32(),
							Minutes:     uint16(r.Uint32()),
							Attenuation: uint8(r.Uint32()),
							Day:         calendar.Day(100 + r.IntN(6)),
						}}
					}
					if err := compact.Add(batch); err != nil {
						t.Fatal(err)
					}
					if err := baseline.Add(batch); err != nil {
						t.Fatal(err)
					}
					m.add(batch)
				case x < 6:
					d := calendar.Day(100 + r.IntN(7))
					want := m.drop(d)
					if got := compact.Drop(d); got != want {
						t.Fatalf("op %d: compact.Drop(%d) = %d, want %d", op, d, got, want)
					}
					if got := baseline.Drop(d); got != want {
						t.Fatalf("op %d: map.Drop(%d) = %d, want %d", op, d, got, want)
					}
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

// TestConcurrentLookups runs lookups while another goroutine adds uploads
// and drops days. A lookup must find every entry of an upload whose Add
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
					if err := idx.Add(batch); err != nil {
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
						dst = idx.Lookup(dst[:0], e.Key)
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

// TestCompactFingerprintBits checks that a hit needs all 104 bits: tuples
// whose fingerprint agrees with the key's on the shard and the 64-bit
// sort key but not on the last 32 bits are not returned.
func TestCompactFingerprintBits(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{8}))
	idx := NewCompact()
	k := randKey(r)
	s, hi, lo := idx.fingerprint(new([16]byte), &k)
	want := Contact{Interval: 3, Minutes: 4, Attenuation: 5, Day: 0}
	near := []tuple{
		{hi: hi - 1, rest: pack(lo, Contact{Interval: 1}, 0)},
		{hi: hi, rest: pack(lo-1, Contact{Interval: 2}, 0)},
		{hi: hi, rest: pack(lo, want, 0)},
		{hi: hi, rest: pack(lo+1, Contact{Interval: 4}, 0)},
		{hi: hi + 1, rest: pack(lo, Contact{Interval: 5}, 0)},
	}
	// Surround them with other tuples so that the search has work to do.
	for range 1000 {
		near = append(near, tuple{hi: r.Uint64(), rest: rest{lo: r.Uint32()}})
	}
	slices.SortFunc(near, compareTuples)
	idx.shards[s].Store(&shard{runs: []run{newRun(near)}, days: idx.days, n: len(near)})
	if got := idx.Lookup(nil, k); !slices.Equal(got, []Contact{want}) {
		t.Fatalf("Lookup = %v, want only %v", got, want)
	}
}

func TestMemBytes(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{9}))
	compact, baseline := NewCompact(), NewMap()
	const n = 100_000
	var batch []Entry
	for i := range n {
		batch = append(batch, Entry{Key: randKey(r), Contact: Contact{Day: calendar.Day(i % 2)}})
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
	if perTuple < bytesPerTuple || perTuple > bytesPerTuple+2 {
		t.Errorf("compact: %.1f bytes per tuple, want %d to %d", perTuple, bytesPerTuple, bytesPerTuple+2)
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
// lookups rely on and what keeps them fast: every run is sorted by
// fingerprint, each run is at least runRatio times larger than the next,
// and the shard's count is the sum of its runs.
func TestCompactInvariants(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{15}))
	idx := NewCompact()
	for i := range 300 {
		batch := make([]Entry, 1+r.IntN(600))
		for j := range batch {
			batch[j] = Entry{Key: randKey(r), Contact: Contact{Day: calendar.Day(i % 5)}}
		}
		if err := idx.Add(batch); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			idx.Drop(calendar.Day(r.IntN(5)))
		}
	}
	maxRuns := 0
	for s := range idx.shards {
		sh := idx.shards[s].Load()
		n := 0
		for i, rn := range sh.runs {
			n += len(rn.hi)
			if len(rn.hi) == 0 || len(rn.hi) != len(rn.rest) {
				t.Fatalf("shard %d run %d: %d hi, %d rest", s, i, len(rn.hi), len(rn.rest))
			}
			if i > 0 && len(sh.runs[i-1].hi) < runRatio*len(rn.hi) {
				t.Errorf("shard %d: run %d has %d tuples, run %d %d", s, i-1, len(sh.runs[i-1].hi), i, len(rn.hi))
			}
			for j := 1; j < len(rn.hi); j++ {
				if rn.hi[j-1] > rn.hi[j] || rn.hi[j-1] == rn.hi[j] && rn.rest[j-1].lo > rn.rest[j].lo {
					t.Fatalf("shard %d run %d: not sorted at %d", s, i, j)
				}
			}
		}
		if n != sh.n {
			t.Errorf("shard %d: n = %d, runs hold %d", s, sh.n, n)
		}
		maxRuns = max(maxRuns, len(sh.runs))
	}
	t.Logf("%d tuples, at most %d runs in a shard", idx.Len(), maxRuns)
}
