package indexbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/conftrace/conftrace/internal/matchindex"
)

// queries draws the checks of one side.
type queries struct {
	g   pairs
	n   int // pairs stored
	r   *rand.Rand
	qs  []matchindex.Query
	out []matchindex.Found
}

func newQueries(g pairs, n, sightings int, seed uint64) *queries {
	return &queries{g: g, n: n, r: rand.New(rand.NewPCG(seed, 0x1dbe)), qs: make([]matchindex.Query, sightings)}
}

// draw fills q.qs with fresh queries, each of a stored pair (uniformly
// among all, at its interval) with probability hitRate and else of a
// random key, and returns how many are of stored pairs.
func (q *queries) draw(hitRate float64) int {
	hits := 0
	for i := range q.qs {
		if hitRate > 0 && (hitRate >= 1 || q.r.Float64() < hitRate) {
			e := q.g.entry(q.r.IntN(q.n))
			q.qs[i] = matchindex.Query{Key: e.Key, Interval: e.Contact.Interval}
			hits++
			continue
		}
		var k matchindex.Key // two random prefixes, as entry makes them
		binary.LittleEndian.PutUint64(k[0:], q.r.Uint64())
		binary.LittleEndian.PutUint64(k[16:], q.r.Uint64())
		q.qs[i] = matchindex.Query{Key: k, Interval: uint32(firstDay)*intervalsPerDay + q.r.Uint32N(days*intervalsPerDay)}
	}
	return hits
}

// pass is what the checks of one kind measured.
type pass struct {
	checks, lookups, hits int
	elapsed               time.Duration // in LookupBatch only
}

func (p pass) checksPerS() float64 { return float64(p.checks) / p.elapsed.Seconds() }

func (p pass) nsPerLookup() float64 { return float64(p.elapsed.Nanoseconds()) / float64(p.lookups) }

// timeChecks runs checks of fresh queries on idx, a fraction hitRate of
// them of stored pairs, for d or at least one check, and adds what it
// times of their lookups to p. A check must find exactly its stored pairs:
// keys are unique, random keys are not stored, and a hit is queried at its
// own interval.
func timeChecks(ctx context.Context, idx matchindex.Index, q *queries, hitRate float64, d time.Duration, p *pass) error {
	end := time.Now().Add(d)
	for first := true; first || time.Now().Before(end); first = false {
		if err := ctx.Err(); err != nil {
			return err
		}
		hits := q.draw(hitRate)
		start := time.Now()
		q.out = idx.LookupBatch(q.out[:0], q.qs, skew)
		p.elapsed += time.Since(start)
		if len(q.out) != hits {
			return fmt.Errorf("a check of %d stored pairs among %d queries found %d", hits, len(q.qs), len(q.out))
		}
		p.checks++
		p.lookups += len(q.qs)
		p.hits += hits
	}
	return nil
}
