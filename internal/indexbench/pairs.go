package indexbench

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

const (
	// uploadPairs is the pairs of one upload: at national scale, ~10^9
	// pairs over 14 days from ~10^4 uploads a day is ~7,000 an upload.
	uploadPairs = 5000
	// days is the retention window the uploads are spread over.
	days = 14
	// firstDay is the first of them, a day in 2024.
	firstDay calendar.Day = 20_000
	// intervalsPerDay is the number of 10-minute intervals in a day.
	intervalsPerDay = 144
	// skew is the enclave's default interval tolerance.
	skew = 1
)

// pairs are the indexed pairs of a run: pair i is a function of the seed
// and i, so that nothing but the indexes holds them.
type pairs struct {
	seed uint64
}

// mix is SplitMix64's output function: consecutive inputs give unrelated,
// uniformly distributed outputs.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// word returns the j-th of the 64-bit words pair i is made of.
func (g pairs) word(i, j int) uint64 {
	return mix(g.seed*0x9e3779b97f4a7c15 + uint64(i)*8 + uint64(j))
}

// entry returns pair i: a random key as the enclave makes them (two
// 8-byte RPI prefixes, the rest of each half zero), and a contact on the
// day of its upload (uploads of uploadPairs pairs, the days in turn).
func (g pairs) entry(i int) matchindex.Entry {
	var e matchindex.Entry
	binary.LittleEndian.PutUint64(e.Key[0:], g.word(i, 0))
	binary.LittleEndian.PutUint64(e.Key[16:], g.word(i, 1))
	c := g.word(i, 4)
	day := firstDay + calendar.Day(i/uploadPairs%days)
	e.Contact = matchindex.Contact{
		Interval:    uint32(day)*intervalsPerDay + uint32(c%intervalsPerDay),
		Minutes:     uint16(1 + (c>>8)%30),
		Attenuation: uint8(40 + (c>>16)%40),
		Day:         day,
	}
	return e
}

// fill sets batch to the pairs from first on.
func (g pairs) fill(batch []matchindex.Entry, first int) {
	for k := range batch {
		batch[k] = g.entry(first + k)
	}
}

// loadCompact bulk-loads pairs 0 to n-1 into a new compact index, making
// them on every CPU as a restart decodes stored uploads.
func (g pairs) loadCompact(ctx context.Context, n int) (matchindex.Index, error) {
	idx := matchindex.NewCompact()
	l := idx.NewLoader()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			batch := make([]matchindex.Entry, uploadPairs)
			for first := int(next.Add(uploadPairs)) - uploadPairs; first < n; first = int(next.Add(uploadPairs)) - uploadPairs {
				if ctx.Err() != nil {
					return
				}
				b := batch[:min(uploadPairs, n-first)]
				g.fill(b, first)
				l.Add(b)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := l.Load(); err != nil {
		return nil, err
	}
	return idx, nil
}

// addCompact adds pairs 0 to n-1 to a new compact index an upload at a
// time, as a day of uploads does: the shards keep several runs, as they
// do between two restarts or drops, rather than the one a load leaves.
func (g pairs) addCompact(ctx context.Context, n int) (matchindex.Index, error) {
	return g.add(ctx, matchindex.NewCompact(), n)
}

// fillMap adds pairs 0 to n-1 to a new map, an upload at a time.
func (g pairs) fillMap(ctx context.Context, n int) (matchindex.Index, error) {
	return g.add(ctx, matchindex.NewMap(), n)
}

// add adds pairs 0 to n-1 to idx, an upload at a time.
func (g pairs) add(ctx context.Context, idx matchindex.Index, n int) (matchindex.Index, error) {
	batch := make([]matchindex.Entry, uploadPairs)
	for first := 0; first < n; first += uploadPairs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := batch[:min(uploadPairs, n-first)]
		g.fill(b, first)
		if err := idx.Add(b); err != nil {
			return nil, err
		}
	}
	return idx, nil
}
