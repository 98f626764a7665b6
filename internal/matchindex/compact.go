package matchindex

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/conftrace/conftrace/internal/calendar"
)

const (
	// numShards is the number of shards, chosen by the first byte of the
	// fingerprint. Sharding bounds the memory a merge or a drop copies at
	// once to about 1/256 of the index.
	numShards = 256
	// maxDays is the number of distinct days a Compact holds: the day is
	// stored as an 8-bit tag.
	maxDays = 256
	// runRatio is how much larger each run is than the next newer one.
	// Larger ratios mean fewer runs to search per lookup and more copying
	// per add. A shard holds about log_16(n/u)+1 runs for n tuples added
	// in uploads of u: 5 for n = 10^9 and u = 7,000.
	runRatio = 16
	// bytesPerTuple is what a run spends on one tuple: hi and rest.
	bytesPerTuple = 8 + 12
)

// Compact is the compact [Index], at 20 bytes per tuple; the package
// documentation describes its layout and its false-match probability. Use
// [NewCompact] to make one: the zero Compact has no fingerprint key.
type Compact struct {
	mac cipher.Block // keys the fingerprint

	mu   sync.Mutex             // serializes Add and Drop, and guards tags, free and days
	tags map[calendar.Day]uint8 // live days and their tags
	free []uint8                // unused tags
	days *[maxDays]calendar.Day // tag to day; copied, never modified, when a tag is (re)assigned

	// shards are replaced under mu and read without it.
	shards [numShards]atomic.Pointer[shard]
}

// shard is an immutable snapshot of one shard. Lookups load it atomically
// and decode tags with its days table, which was current when the snapshot
// was made: a tag reassigned later can only be in newer snapshots, because
// Drop removes a day's tuples from every shard before freeing its tag.
type shard struct {
	runs []run // oldest and largest first
	days *[maxDays]calendar.Day
	n    int
}

// run is an immutable sorted run of tuples, as two parallel arrays so that
// a search reads only hi, and a hit one element of rest. The fingerprint of
// tuple i is (shard, hi[i], rest[i].lo); runs are sorted by (hi, lo).
type run struct {
	hi   []uint64
	rest []rest
}

// rest is all of a tuple but hi, 12 bytes.
type rest struct {
	lo       uint32 // fingerprint bits 72 to 103
	interval uint32
	meta     uint32 // minutes (16) | attenuation (8) | day tag (8)
}

// tuple is a run element while runs are built.
type tuple struct {
	hi    uint64
	rest  rest
	shard uint8
}

// NewCompact returns an empty compact index with a fresh fingerprint key.
func NewCompact() *Compact {
	var key [16]byte
	rand.Read(key[:]) // never fails since Go 1.24
	mac, err := aes.NewCipher(key[:])
	if err != nil {
		panic("matchindex: " + err.Error()) // unreachable: the key size is valid
	}
	c := &Compact{
		mac:  mac,
		tags: make(map[calendar.Day]uint8),
		days: new([maxDays]calendar.Day),
	}
	for t := maxDays - 1; t >= 0; t-- {
		c.free = append(c.free, uint8(t))
	}
	empty := &shard{days: c.days}
	for i := range c.shards {
		c.shards[i].Store(empty)
	}
	return c
}

// fingerprint computes the AES-CBC-MAC of k in b, scratch space owned by
// the caller, and splits it into shard, hi and lo (bits 104 to 127 are not
// used). b is on the heap anyway (a cipher.Block method makes any buffer
// escape); working in it alone keeps k from escaping too.
func (c *Compact) fingerprint(b *[16]byte, k *Key) (shard uint8, hi uint64, lo uint32) {
	copy(b[:], k[:16])
	c.mac.Encrypt(b[:], b[:])
	for i := range b {
		b[i] ^= k[16+i]
	}
	c.mac.Encrypt(b[:], b[:])
	return b[0], binary.BigEndian.Uint64(b[1:9]), binary.BigEndian.Uint32(b[9:13])
}

// pack and unpack convert a contact to and from its part of rest.
func pack(lo uint32, c Contact, tag uint8) rest {
	return rest{lo: lo, interval: c.Interval, meta: uint32(c.Minutes)<<16 | uint32(c.Attenuation)<<8 | uint32(tag)}
}

func (r rest) tag() uint8 { return uint8(r.meta) }

func (r rest) unpack(days *[maxDays]calendar.Day) Contact {
	return Contact{
		Interval:    r.interval,
		Minutes:     uint16(r.meta >> 16),
		Attenuation: uint8(r.meta >> 8),
		Day:         days[r.tag()],
	}
}

// Add stores the entries of one upload, or none of them if that would
// leave more than 256 distinct days in the index ([ErrTooManyDays]).
func (c *Compact) Add(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// Fingerprints are the costly part of preparing tuples and need no
	// lock.
	tuples := make([]tuple, len(entries))
	buf := new([16]byte)
	for i := range entries {
		e := &entries[i]
		s, hi, lo := c.fingerprint(buf, &e.Key)
		tuples[i] = tuple{hi: hi, rest: pack(lo, e.Contact, 0), shard: s}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.assignTags(entries); err != nil {
		return err
	}
	var perShard [numShards]int
	day, tag := entries[0].Contact.Day, c.tags[entries[0].Contact.Day]
	for i := range entries {
		if d := entries[i].Contact.Day; d != day {
			day, tag = d, c.tags[d]
		}
		tuples[i].rest.meta |= uint32(tag)
		perShard[tuples[i].shard]++
	}

	// Group the tuples by shard (a counting sort), then sort each shard's
	// tuples into a new run.
	var start [numShards + 1]int
	for s := range numShards {
		start[s+1] = start[s] + perShard[s]
	}
	grouped := make([]tuple, len(tuples))
	next := start
	for _, t := range tuples {
		grouped[next[t.shard]] = t
		next[t.shard]++
	}
	for s := range numShards {
		part := grouped[start[s]:start[s+1]]
		if len(part) == 0 {
			continue
		}
		slices.SortFunc(part, compareTuples)
		old := c.shards[s].Load()
		runs := append(slices.Clip(old.runs), newRun(part))
		c.shards[s].Store(&shard{runs: normalize(runs), days: c.days, n: old.n + len(part)})
	}
	return nil
}

// assignTags gives a tag to each day of entries that has none, or fails,
// changing nothing, if there are not enough free tags.
func (c *Compact) assignTags(entries []Entry) error {
	var fresh []calendar.Day
	last, lastKnown := calendar.Day(0), false
	for i := range entries {
		d := entries[i].Contact.Day
		if lastKnown && d == last {
			continue
		}
		last, lastKnown = d, true
		if _, ok := c.tags[d]; !ok && !slices.Contains(fresh, d) {
			if len(fresh) == len(c.free) {
				return fmt.Errorf("%w: it holds %d of at most %d, and the upload adds more", ErrTooManyDays, len(c.tags), maxDays)
			}
			fresh = append(fresh, d)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	days := *c.days // copy: published snapshots keep the old table
	for _, d := range fresh {
		t := c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		c.tags[d] = t
		days[t] = d
	}
	c.days = &days
	return nil
}

func compareTuples(a, b tuple) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.rest.lo, b.rest.lo)
}

// newRun makes a run of sorted tuples.
func newRun(ts []tuple) run {
	r := makeRun(len(ts))
	for i, t := range ts {
		r.hi[i], r.rest[i] = t.hi, t.rest
	}
	return r
}

func makeRun(n int) run {
	return run{hi: make([]uint64, n), rest: make([]rest, n)}
}

// normalize merges runs until each is at least runRatio times larger than
// the next, keeping the number of runs logarithmic in the shard size.
// Only runs it merges are copied.
func normalize(runs []run) []run {
	// Scan from the newest pair down. A merge makes run i-1 larger, which
	// can only upset the pair below it, checked next.
	for i := len(runs) - 1; i > 0; i-- {
		if len(runs[i-1].hi) < runRatio*len(runs[i].hi) {
			runs[i-1] = merge(runs[i-1], runs[i])
			runs = slices.Delete(runs, i, i+1)
		}
	}
	return runs
}

// merge returns a run with the tuples of a and b.
func merge(a, b run) run {
	r := makeRun(len(a.hi) + len(b.hi))
	i, j := 0, 0
	for k := range r.hi {
		takeA := j == len(b.hi) || i < len(a.hi) &&
			(a.hi[i] < b.hi[j] || a.hi[i] == b.hi[j] && a.rest[i].lo <= b.rest[j].lo)
		if takeA {
			r.hi[k], r.rest[k] = a.hi[i], a.rest[i]
			i++
		} else {
			r.hi[k], r.rest[k] = b.hi[j], b.rest[j]
			j++
		}
	}
	return r
}

// without returns r without the tuples tagged tag, and how many it
// removed; r itself if none.
func (r run) without(tag uint8) (run, int) {
	removed := 0
	for _, x := range r.rest {
		if x.tag() == tag {
			removed++
		}
	}
	if removed == 0 {
		return r, 0
	}
	out := makeRun(len(r.hi) - removed)
	k := 0
	for i, x := range r.rest {
		if x.tag() != tag {
			out.hi[k], out.rest[k] = r.hi[i], x
			k++
		}
	}
	return out, removed
}

// Lookup appends the contacts stored under k to dst. It takes no lock.
func (c *Compact) Lookup(dst []Contact, k Key) []Contact {
	s, hi, lo := c.fingerprint(new([16]byte), &k)
	sh := c.shards[s].Load()
	for _, r := range sh.runs {
		for i := search(r.hi, hi); i < len(r.hi) && r.hi[i] == hi; i++ {
			if x := r.rest[i]; x.lo == lo {
				dst = append(dst, x.unpack(sh.days))
			}
		}
	}
	return dst
}

// Drop removes every contact of day. It rewrites the runs that hold any,
// one shard at a time, while lookups go on; Add waits until it is done.
func (c *Compact) Drop(day calendar.Day) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	tag, ok := c.tags[day]
	if !ok {
		return 0
	}
	total := 0
	for s := range c.shards {
		old := c.shards[s].Load()
		var runs []run
		removed := 0
		for _, r := range old.runs {
			kept, n := r.without(tag)
			removed += n
			if len(kept.hi) > 0 {
				runs = append(runs, kept)
			}
		}
		if removed > 0 {
			c.shards[s].Store(&shard{runs: normalize(runs), days: old.days, n: old.n - removed})
			total += removed
		}
	}
	delete(c.tags, day)
	c.free = append(c.free, tag)
	return total
}

// Len returns the number of contacts stored.
func (c *Compact) Len() int {
	n := 0
	for s := range c.shards {
		n += c.shards[s].Load().n
	}
	return n
}

// runOverhead is the memory of a run besides its tuples.
const runOverhead = int64(unsafe.Sizeof(run{}))

// MemBytes returns the memory the index uses: 20 bytes per tuple, plus
// small per-run and per-shard overheads. Right after an Add or Drop, the
// runs it replaced also use memory until the garbage collector frees them
// (at most about one shard's worth).
func (c *Compact) MemBytes() int64 {
	b := int64(unsafe.Sizeof(*c)) + int64(unsafe.Sizeof([maxDays]calendar.Day{}))
	for s := range c.shards {
		sh := c.shards[s].Load()
		b += int64(unsafe.Sizeof(*sh))
		for _, r := range sh.runs {
			b += runOverhead + int64(len(r.hi))*bytesPerTuple
		}
	}
	return b
}
