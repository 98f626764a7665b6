package matchindex

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/conftrace/conftrace/internal/calendar"
)

// maxLoadChunk is the most pending entries a Loader keeps in one slice of
// a shard: the slices are kept whole, so that nothing is copied as they
// grow, and one per shard is part full.
const maxLoadChunk = 8192

// A Loader adds many entries to a [Compact] at once: what a restart does
// with every stored upload. Entries given to [Loader.Add] are fingerprinted
// and kept aside; [Loader.Load] then sorts each shard's new tuples once and
// merges them with what the shard holds into a single run, the layout
// lookups read fastest. Adding the same entries with [Compact.Add] would
// sort and merge them again and again, upload by upload, and leave several
// runs per shard.
//
//	l := idx.NewLoader()
//	for _, upload := range stored { // Add may be called from several goroutines
//		l.Add(upload)
//	}
//	err := l.Load()
//
// Until Load, the entries take 24 bytes each besides the index.
type Loader struct {
	c *Compact

	mu      sync.Mutex
	pending [numShards][][]pending // by shard, in slices of at most maxLoadChunk
	days    []calendar.Day         // the distinct days of pending
	n       int
}

// NewLoader returns a loader that adds to c.
func (c *Compact) NewLoader() *Loader {
	return &Loader{c: c}
}

// Add fingerprints entries and keeps them for Load. It is safe for
// concurrent use, which spreads the fingerprinting, the costly part, over
// the callers. The limit on days is checked by Load.
func (l *Loader) Add(entries []Entry) {
	if len(entries) == 0 {
		return
	}
	ps := l.c.appendPending(make([]pending, 0, len(entries)), entries)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.days = appendDays(l.days, ps)
	for _, p := range ps {
		chunks := l.pending[p.shard]
		if k := len(chunks); k == 0 || len(chunks[k-1]) == cap(chunks[k-1]) {
			// Small chunks first, so that small loads stay small.
			size := maxLoadChunk
			if k == 0 || cap(chunks[k-1]) < maxLoadChunk {
				size = 16
				if k > 0 {
					size = 2 * cap(chunks[k-1])
				}
			}
			chunks = append(chunks, make([]pending, 0, size))
		}
		chunks[len(chunks)-1] = append(chunks[len(chunks)-1], p)
		l.pending[p.shard] = chunks
	}
	l.n += len(ps)
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
func (l *Loader) Load() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.assignTags(l.days); err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), numShards) {
		wg.Go(func() {
			for s := int(next.Add(1)) - 1; s < numShards; s = int(next.Add(1)) - 1 {
				c.loadShard(s, l.pending[s])
				l.pending[s] = nil
			}
		})
	}
	wg.Wait()
	l.days, l.n = nil, 0
	return nil
}

// loadShard merges the pending entries of shard s, whose days have tags,
// with the shard's runs into a single run. It releases each chunk as soon
// as it is converted. The caller holds c.mu.
func (c *Compact) loadShard(s int, chunks [][]pending) {
	count := 0
	for _, ch := range chunks {
		count += len(ch)
	}
	if count == 0 {
		return
	}
	narrow := make([]tuple, 0, count)
	var wide []wideTuple
	for i := range chunks {
		narrow, wide = c.appendTuples(narrow, wide, chunks[i])
		chunks[i] = nil
	}
	slices.SortFunc(narrow, compareTuples)
	old := c.shards[s].Load()
	all := narrow
	for i := range old.runs {
		all = mergeTuples(all, old.runs[i].appendTuples(make([]tuple, 0, old.runs[i].n), -1))
	}
	sh := &shard{wide: old.wide, days: c.days, n: old.n + count}
	if len(all) > 0 {
		sh.runs = []run{newRun(all)}
	}
	if len(wide) > 0 {
		sh.wide = mergeWide(old.wide, wide)
	}
	c.shards[s].Store(sh)
}
