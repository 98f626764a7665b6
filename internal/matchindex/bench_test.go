package matchindex

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
)

// Index sizes are a flag because an index of 10^7 tuples takes seconds to
// build and 10^8 tens of gigabytes for the map:
//
//	go test -run='^$' -bench=. -args -size=1e6,1e7
var (
	sizeFlag    = flag.String("size", "1e6", "comma-separated `sizes` (tuples) of the indexes that BenchmarkLookup, BenchmarkAdd and BenchmarkDrop build")
	uploadsFlag = flag.Int("uploads", 400, "`uploads` of benchUpload tuples that BenchmarkIngest adds")
)

const (
	// benchUpload is the number of tuples per Add: at national scale, ~10^9
	// tuples over 14 days from ~10^4 uploads a day is ~7,000 per upload.
	benchUpload = 5000
	// benchDays is the number of days the tuples are spread over.
	benchDays = 14
	// benchProbes is the number of keys lookups cycle through.
	benchProbes = 1 << 14
)

func benchSizes(b *testing.B) []int {
	var sizes []int
	for f := range strings.SplitSeq(*sizeFlag, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < benchProbes {
			b.Fatalf("-size: %q is not a number of tuples of at least %d", f, benchProbes)
		}
		sizes = append(sizes, int(v))
	}
	return sizes
}

// upload fills batch with random entries of day d.
func upload(r *rand.Rand, batch []Entry, d calendar.Day) {
	for i := range batch {
		batch[i] = Entry{Key: randKey(r), Contact: Contact{
			Interval:    2_900_000 + uint32(r.IntN(144)),
			Minutes:     uint16(1 + r.IntN(20)),
			Attenuation: uint8(40 + r.IntN(40)),
			Day:         d,
		}}
	}
}

// built is an index made for benchmarks, with some of its keys.
type built struct {
	idx       Index
	hits      []Key   // stored keys
	heapBytes float64 // heap the index uses, measured
	day0      []Entry // the entries of day 0, if asked for
}

// build makes an index of n tuples in uploads of benchUpload spread over
// benchDays days, and measures the heap it uses. With keepDay it keeps the
// entries of day 0 in day0.
func build(b *testing.B, newIndex func() Index, n int, keepDay bool) built {
	r := rand.New(rand.NewChaCha8([32]byte{11}))
	bl := built{hits: make([]Key, 0, benchProbes)}
	if keepDay {
		// Allocated before the heap is measured.
		bl.day0 = make([]Entry, 0, (n/benchUpload/benchDays+1)*benchUpload)
	}
	batch := make([]Entry, benchUpload)
	every := max(1, n/benchProbes)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	bl.idx = newIndex()
	for i := 0; i < n; i += benchUpload {
		batch := batch[:min(benchUpload, n-i)]
		d := calendar.Day(i / benchUpload % benchDays)
		upload(r, batch, d)
		if err := bl.idx.Add(batch); err != nil {
			b.Fatal(err)
		}
		for j := range batch {
			if (i+j)%every == 0 && len(bl.hits) < benchProbes {
				bl.hits = append(bl.hits, batch[j].Key)
			}
		}
		if keepDay && d == 0 {
			bl.day0 = append(bl.day0, batch...)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	bl.heapBytes = float64(after.HeapAlloc) - float64(before.HeapAlloc)
	return bl
}

func reportSize(b *testing.B, bl built) {
	n := float64(bl.idx.Len())
	b.ReportMetric(float64(bl.idx.MemBytes())/n, "B/tuple")
	b.ReportMetric(bl.heapBytes/n, "heapB/tuple")
}

// BenchmarkLookup measures lookups of stored keys (hit) and of keys never
// stored (miss: most of an exposure poll), Compact against the Map
// baseline, and the memory each uses per tuple: B/tuple as the index
// reports it, heapB/tuple as measured.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes(b) {
		for _, impl := range impls {
			bl := build(b, impl.new, n, false)
			r := rand.New(rand.NewChaCha8([32]byte{12}))
			misses := make([]Key, benchProbes)
			for i := range misses {
				misses[i] = randKey(r)
			}
			for _, kind := range []struct {
				name string
				keys []Key
				want bool
			}{{"hit", bl.hits, true}, {"miss", misses, false}} {
				b.Run(fmt.Sprintf("%s/n=%.0e/%s", impl.name, float64(n), kind.name), func(b *testing.B) {
					b.ReportAllocs()
					var dst []Contact
					i := 0
					for b.Loop() {
						dst = bl.idx.Lookup(dst[:0], kind.keys[i%len(kind.keys)])
						i++
					}
					b.StopTimer()
					if (len(dst) > 0) != kind.want {
						b.Fatalf("last lookup found %v", dst)
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
					reportSize(b, bl)
				})
			}
		}
	}
}

// BenchmarkAdd measures adding uploads of benchUpload tuples to an index
// that already holds n.
func BenchmarkAdd(b *testing.B) {
	for _, n := range benchSizes(b) {
		for _, impl := range impls {
			bl := build(b, impl.new, n, false)
			b.Run(fmt.Sprintf("%s/n=%.0e", impl.name, float64(n)), func(b *testing.B) {
				r := rand.New(rand.NewChaCha8([32]byte{13}))
				batch := make([]Entry, benchUpload)
				for b.Loop() {
					b.StopTimer()
					upload(r, batch, benchDays)
					b.StartTimer()
					if err := bl.idx.Add(batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*benchUpload)/b.Elapsed().Seconds(), "tuples/s")
			})
		}
	}
}

// BenchmarkDrop measures dropping one of benchDays days from an index of
// n tuples; each iteration adds the day back, untimed.
func BenchmarkDrop(b *testing.B) {
	for _, n := range benchSizes(b) {
		for _, impl := range impls {
			bl := build(b, impl.new, n, true)
			day := bl.day0
			b.Run(fmt.Sprintf("%s/n=%.0e", impl.name, float64(n)), func(b *testing.B) {
				for b.Loop() {
					if got := bl.idx.Drop(0); got != len(day) {
						b.Fatalf("Drop = %d, want %d", got, len(day))
					}
					b.StopTimer()
					for c := range slices.Chunk(day, benchUpload) {
						if err := bl.idx.Add(c); err != nil {
							b.Fatal(err)
						}
					}
					b.StartTimer()
				}
				b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N*n), "ns/tuple")
			})
		}
	}
}

// BenchmarkIngest measures what a day of uploads costs the index: adding
// -uploads uploads of benchUpload tuples, one Add each, to an empty index,
// as the enclave does from one Drop to the next. Its cost is dominated by
// the merges of runs that Add makes; lookups are measured apart.
func BenchmarkIngest(b *testing.B) {
	r := rand.New(rand.NewChaCha8([32]byte{14}))
	batches := make([][]Entry, *uploadsFlag)
	const firstDay = 20_000
	for i := range batches {
		// As a phone's upload: tuples of every day of the window.
		batches[i] = make([]Entry, benchUpload)
		for j := range batches[i] {
			d := calendar.Day(firstDay + r.IntN(benchDays))
			batches[i][j] = Entry{Key: randKey(r), Contact: Contact{
				Interval:    uint32(d)*intervalsPerDay + uint32(r.IntN(intervalsPerDay)),
				Minutes:     uint16(1 + r.IntN(20)),
				Attenuation: uint8(40 + r.IntN(40)),
				Day:         d,
			}}
		}
	}
	for _, impl := range impls {
		b.Run(fmt.Sprintf("%s/uploads=%d", impl.name, len(batches)), func(b *testing.B) {
			for b.Loop() {
				idx := impl.new()
				for _, batch := range batches {
					if err := idx.Add(batch); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N*len(batches)*benchUpload), "ns/tuple")
		})
	}
}
