package matchindex

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
)

// TestSortScratch: a Loader's sort puts tuples in order of sort key and
// loses none, whatever their keys: uniform as fingerprints are, or
// bunched and repeated as they never are, which only makes it slower;
// and the memory it keeps from one sort does not spoil the next.
func TestSortScratch(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{3}))
	keys := map[string]func() uint64{
		"uniform":  r.Uint64,
		"repeated": func() uint64 { return r.Uint64N(8) << 60 },
		"bunched":  func() uint64 { return 1<<63 + r.Uint64N(1000) },
		"top":      func() uint64 { return ^r.Uint64N(3) },
	}
	var sc loadScratch
	for name, key := range keys {
		for _, n := range []int{0, 1, 63, 64, 65, 1000, 70_000, 3000} {
			ts := make([]tuple, n)
			for i := range ts {
				ts[i] = tuple{fp: key(), payload: r.Uint32(), check: uint16(r.Uint32())}
			}
			want := slices.Clone(ts)
			got := slices.Clone(sc.sort(ts))
			if !slices.IsSortedFunc(got, compareTuples) {
				t.Fatalf("%s, %d tuples: not sorted", name, n)
			}
			byAll := func(a, b tuple) int {
				return cmp.Or(cmp.Compare(a.fp, b.fp), cmp.Compare(a.payload, b.payload), cmp.Compare(a.check, b.check))
			}
			slices.SortFunc(want, byAll)
			slices.SortFunc(got, byAll)
			if !slices.Equal(got, want) {
				t.Fatalf("%s, %d tuples: the sort lost or changed tuples", name, n)
			}
		}
	}
}

// BenchmarkLoad bulk-loads b.N entries as a restart does: uploads' day
// parts of about 400 entries over 13 days, added from two goroutines, then
// one Load. It reports the time per entry of the adds and of the load.
func BenchmarkLoad(b *testing.B) {
	r := rand.New(rand.NewChaCha8([32]byte{5}))
	const part = 400
	es := make([]Entry, max(b.N, part))
	for i := range es {
		d := calendar.Day(20_000 + i/part%13)
		es[i] = Entry{Key: randKey(r), Contact: Contact{Interval: uint32(d)*intervalsPerDay + r.Uint32N(intervalsPerDay), Minutes: 5, Day: d}}
	}
	b.ResetTimer()
	c := NewCompact()
	l := c.NewLoader()
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := g * part; i < len(es); i += 2 * part {
				l.Add(es[i:min(i+part, len(es))])
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(len(es)), "add-ns/entry")
	at := b.Elapsed()
	if err := l.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((b.Elapsed()-at).Nanoseconds())/float64(len(es)), "load-ns/entry")
	if c.Len() != len(es) {
		b.Fatalf("%d loaded of %d", c.Len(), len(es))
	}
}
