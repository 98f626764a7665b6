package matchindex

import (
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/conftrace/conftrace/internal/calendar"
)

// A Loader adds many entries to a [Compact] at once: what a restart does
// with every stored upload. Entries given to [Loader.Add] are fingerprinted
// and kept aside; [Loader.Load] then sorts each shard's new tuples once and
// merges them with what the shard holds into a single run, the layout
// lookups read fastest. Adding the same entries with [Compact.Add] would
// sort and merge them again and again, upload by upload, and leave several
// runs per shard.
//
//	l := idx.NewLoader()
//	for _, batch := range stored { // Add may be called from several goroutines
//		l.Add(batch)
//	}
//	err := l.Load()
//
// Until Load, the entries take 16 bytes each besides the index, grouped by
// shard within each Add: give Add thousands of entries at a time (a batch
// of uploads), so that each shard's part of an Add is more than a tuple or
// two, or Load spends its time gathering the parts.
//
// The memory a restart touches matters as much as its work: on a virtual
// machine, or in a TEE that accepts its pages as it first touches them, a
// page costs microseconds the first time. So a Loader keeps each tuple in
// its final 16 bytes from Add on, and Load sorts each shard in memory that
// it reuses from shard to shard: beyond the index itself, a load touches
// little more than 16 bytes a tuple.
type Loader struct {
	c *Compact

	mu     sync.Mutex
	chunks []loadChunk
	wide   []loadWide
	days   []calendar.Day // the distinct days of the entries added
	n      int
}

// loadChunk is what one Add kept: its narrow tuples grouped by shard,
// shard s's being tuples[start[s]:start[s+1]], each tagged with the index
// in days of its day. Load replaces days by the index's tags.
type loadChunk struct {
	tuples []tuple
	start  *[numShards + 1]int32
	days   []calendar.Day
	tags   []uint8
}

// loadWide is a tuple that does not pack, with its day and its shard.
type loadWide struct {
	wideTuple
	day   calendar.Day
	shard uint8
}

// NewLoader returns a loader that adds to c.
func (c *Compact) NewLoader() *Loader {
	return &Loader{c: c}
}

// Add fingerprints entries and keeps them for Load. It is safe for
// concurrent use, which spreads the fingerprinting and the grouping by
// shard, the costly parts, over the callers: under its lock it only keeps
// the result. The limit on days is checked by Load.
func (l *Loader) Add(entries []Entry) {
	if len(entries) == 0 {
		return
	}
	type shardTuple struct {
		tuple
		shard uint8
	}
	ts := make([]shardTuple, 0, len(entries))
	var wide []loadWide
	ch := loadChunk{start: new([numShards + 1]int32)}
	buf := new([16]byte)
	day, tag := entries[0].Contact.Day, uint8(0)
	ch.days = append(ch.days, day)
	for i := range entries {
		e := &entries[i]
		if e.Contact.Day != day {
			day = e.Contact.Day
			tag, ch.days = dayNumber(ch.days, day)
		}
		f := l.c.fingerprint(buf, &e.Key)
		payload, ok := packNarrow(e.Contact.Interval, e.Contact.Minutes, e.Contact.Attenuation, day, tag)
		if ok && len(ch.days) <= maxDays {
			ts = append(ts, shardTuple{tuple{fp: f.fp, payload: payload, check: f.check}, f.shard})
			ch.start[int(f.shard)+1]++
		} else {
			// Rare, or an Add of more days than an index holds, which
			// Load refuses.
			w := wideTuple{fp: f.fp, interval: e.Contact.Interval, minutes: e.Contact.Minutes, check: f.check, atten: e.Contact.Attenuation}
			wide = append(wide, loadWide{w, day, f.shard})
		}
	}
	clear(buf[:])
	// Grouped by shard (a counting sort) in memory the size of the batch,
	// where the scattered writes stay in cache.
	for s := range numShards {
		ch.start[s+1] += ch.start[s]
	}
	ch.tuples = make([]tuple, len(ts))
	next := *ch.start
	for i := range ts {
		ch.tuples[next[ts[i].shard]] = ts[i].tuple
		next[ts[i].shard]++
	}
	clear(ts)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ch.days {
		if !slices.Contains(l.days, d) {
			l.days = append(l.days, d)
		}
	}
	if len(ch.tuples) > 0 {
		l.chunks = append(l.chunks, ch)
	}
	l.wide = append(l.wide, wide...)
	l.n += len(entries)
}

// dayNumber returns the index of d in days, appending it if it is not
// there. An Add holds entries of a few days (retention keeps 14), which a
// linear search finds as fast as anything.
func dayNumber(days []calendar.Day, d calendar.Day) (uint8, []calendar.Day) {
	for i := len(days) - 1; i >= 0; i-- {
		if days[i] == d {
			return uint8(i), days
		}
	}
	return uint8(len(days)), append(days, d)
}

// Len returns the number of entries added and not loaded yet.
func (l *Loader) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Load adds every entry given to Add since the last Load to the index,
// leaving each shard it touches a single run. It fails with
// [ErrTooManyDays], changing nothing and keeping the entries, if that would
// leave contacts of more than 256 distinct days in the index. Lookups go on
// while it runs and see each shard either before or after; Add, Drop and
// other loads wait. It works on GOMAXPROCS shards at once.
//
// It sorts without comparisons: each shard's tuples by the high bits of
// their sort key, which are uniform (a fingerprint), into buckets of one or
// two, which an insertion sort then puts in order. That is linear in the
// number of tuples, where a comparison sort is n log n.
func (l *Loader) Load() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.assignTags(l.days); err != nil {
		return err
	}
	for i := range l.chunks {
		ch := &l.chunks[i]
		ch.tags = make([]uint8, len(ch.days))
		for j, d := range ch.days {
			ch.tags[j] = c.tags[d]
		}
	}
	var wide [numShards][]wideTuple
	for _, w := range l.wide {
		w.tag = c.tags[w.day]
		wide[w.shard] = append(wide[w.shard], w.wideTuple)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), numShards) {
		wg.Go(func() {
			var sc loadScratch
			for s := int(next.Add(1)) - 1; s < numShards; s = int(next.Add(1)) - 1 {
				c.loadShard(s, l.gather(s, &sc), wide[s], &sc)
			}
		})
	}
	wg.Wait()
	l.chunks, l.wide, l.days, l.n = nil, nil, nil, 0
	return nil
}

// loadScratch is the memory a Load goroutine gathers and sorts shards in,
// from one shard to the next.
type loadScratch struct {
	in, out []tuple
	counts  []int32
}

// gather returns shard s's narrow tuples, tagged with the index's tags, in
// sc.in.
func (l *Loader) gather(s int, sc *loadScratch) []tuple {
	in := sc.in[:0]
	for i := range l.chunks {
		ch := &l.chunks[i]
		for _, t := range ch.tuples[ch.start[s]:ch.start[s+1]] {
			t.payload = t.payload&^0xff | uint32(ch.tags[tagOf(t.payload)])
			in = append(in, t)
		}
	}
	sc.in = in
	return in
}

// loadShard sorts shard s's new narrow tuples (in sc) and merges them and
// wide with the shard's runs and wide list into a single run. The caller
// holds c.mu.
func (c *Compact) loadShard(s int, narrow []tuple, wide []wideTuple, sc *loadScratch) {
	if len(narrow) == 0 && len(wide) == 0 {
		return
	}
	all := sc.sort(narrow)
	old := c.shards[s].Load()
	sh := &shard{wide: old.wide, days: c.days, n: old.n + len(narrow) + len(wide)}
	for i := range old.runs {
		all = mergeTuples(all, old.runs[i].appendTuples(make([]tuple, 0, old.runs[i].n), -1))
	}
	if len(all) > 0 {
		sh.runs = []run{newRun(all)}
	}
	if len(wide) > 0 {
		sh.wide = mergeWide(old.wide, wide)
	}
	c.shards[s].Store(sh)
}

// maxBucket is the most tuples loadScratch.sort lets a bucket hold. With
// uniform keys the largest of a shard's 2^18 buckets at 10^8 tuples holds
// about 10.
const maxBucket = 64

// sort sorts ts by sort key and returns them sorted, in ts or in sc.out,
// where they stay until the next call. The sort keys being uniform, a
// counting sort by their high bits leaves each tuple in a bucket of one or
// two, and an insertion sort finishes: linear time.
func (sc *loadScratch) sort(ts []tuple) []tuple {
	if len(ts) < 64 {
		slices.SortFunc(ts, compareTuples)
		return ts
	}
	if cap(sc.out) < len(ts) {
		sc.out = make([]tuple, len(ts)+len(ts)/8)
	}
	out := sc.out[:len(ts)]
	shift := 64 - uint(bits.Len(uint(len(ts)))-1) // at most two tuples a bucket, on average
	nb := 1<<(64-shift) + 1
	if cap(sc.counts) < nb {
		sc.counts = make([]int32, nb, 2*nb)
	}
	counts := sc.counts[:nb]
	clear(counts)
	for i := range ts {
		counts[ts[i].fp>>shift+1]++
	}
	for b := 1; b < nb; b++ {
		if counts[b] > maxBucket {
			// Keys this bunched are not fingerprints; sorted anyway,
			// without the insertion sort's quadratic time.
			slices.SortFunc(ts, compareTuples)
			return ts
		}
		counts[b] += counts[b-1]
	}
	for i := range ts {
		b := ts[i].fp >> shift
		out[counts[b]] = ts[i]
		counts[b]++
	}
	// Every tuple is now among those of its bucket: an insertion sort
	// moves each by at most its bucket's size.
	for i := 1; i < len(out); i++ {
		t := out[i]
		j := i
		for ; j > 0 && out[j-1].fp > t.fp; j-- {
			out[j] = out[j-1]
		}
		out[j] = t
	}
	return out
}
