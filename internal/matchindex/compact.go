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
	// Larger ratios mean fewer runs to read per lookup and more copying
	// per add: a tuple is copied about runRatio/2 times per run size it
	// goes through. Between two drops a shard holds about log_8(d/u)+1
	// runs for d tuples added that day in uploads of u, beside the run
	// the last drop left. 8 rather than 16 copies a tuple fewer times
	// (BenchmarkIngest) for half a run more per lookup on average; and,
	// below the retention's 14 days, a day's uploads never grow to a
	// ratio of the other days' run, which 16 rewrites once a day in one
	// Add.
	runRatio = 8
	// intervalsPerDay is the number of 10-minute intervals in a day. A
	// tuple's interval is stored as its offset from the first interval
	// of its day, in 8 bits.
	intervalsPerDay = 144
	// wideBytes is what a tuple kept apart in a shard's wide list costs.
	wideBytes = int64(unsafe.Sizeof(wideTuple{}))
)

// Compact is the compact [Index]; the package documentation describes its
// layout, its false-match probability and its bulk [Loader]. Use
// [NewCompact] to make one: the zero Compact has no fingerprint key.
type Compact struct {
	mac    cipher.Block           // keys the fingerprint of a key that is not short
	prefix cipher.Block           // keys the fingerprint of a short key
	mu     sync.Mutex             // serializes Add, Drop and Load, and guards tags, free and days
	tags   map[calendar.Day]uint8 // live days and their tags
	free   []uint8                // unused tags
	days   *[maxDays]calendar.Day // tag to day; copied, never modified, when a tag is (re)assigned

	// shards are replaced under mu and read without it.
	shards [numShards]atomic.Pointer[shard]
}

// shard is an immutable snapshot of one shard. Lookups load it atomically
// and decode tags with its days table, which was current when the snapshot
// was made: a tag reassigned later can only be in newer snapshots, because
// Drop removes a day's tuples from every shard before freeing its tag.
type shard struct {
	runs []run // oldest and largest first
	// wide holds, sorted by fp, the tuples whose contact does not pack
	// into a run's 32-bit payload.
	wide []wideTuple
	days *[maxDays]calendar.Day
	n    int
}

// wideTuple is a tuple whose interval lies outside its day or that lasted
// more than 255 minutes. The enclave never stores one; they are kept apart
// so that any contact round-trips.
type wideTuple struct {
	fp       uint64
	interval uint32
	minutes  uint16
	check    uint16
	atten    uint8
	tag      uint8
}

// fingerprint is what the index keeps of a key: the shard, the sort key
// and a check that must match too.
type fingerprint struct {
	fp    uint64
	check uint16 // never 0, which marks free slots
	shard uint8
}

// NewCompact returns an empty compact index with a fresh fingerprint key.
func NewCompact() *Compact {
	c := &Compact{
		mac:    newMACKey(),
		prefix: newMACKey(),
		tags:   make(map[calendar.Day]uint8),
		days:   new([maxDays]calendar.Day),
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

// newMACKey returns AES-128 under a fresh random key.
func newMACKey() cipher.Block {
	var key [16]byte
	rand.Read(key[:]) // never fails since Go 1.24
	b, err := aes.NewCipher(key[:])
	clear(key[:])
	if err != nil {
		panic("matchindex: " + err.Error()) // unreachable: the key size is valid
	}
	return b
}

// shortHalf is how many leading bytes of each half of a short key may be
// other than zero: the enclave keys RPI prefixes of 8 bytes
// (contactlog.RPIPrefixSize), so its keys fit one AES block.
const shortHalf = 8

// isShort reports whether each half of k is zero past its first
// shortHalf bytes.
func isShort(k *Key) bool {
	return binary.LittleEndian.Uint64(k[shortHalf:16])|binary.LittleEndian.Uint64(k[16+shortHalf:]) == 0
}

// fingerprint computes the MAC of k in b, scratch space owned by the
// caller, and splits it into shard (8 bits), sort key (64) and check
// (16); the last 40 bits are not used. The MAC of a short key (isShort:
// every key the enclave makes) is one AES block of its 16 bytes, under
// the prefix key; of any other key, AES-CBC-MAC of its 32 bytes under
// the mac key; so a short key costs half as much, and the two kinds,
// under independent keys, have unrelated fingerprints. b is on the heap
// anyway (a cipher.Block method makes any buffer escape); working in it
// alone keeps k from escaping too.
func (c *Compact) fingerprint(b *[16]byte, k *Key) fingerprint {
	if isShort(k) {
		copy(b[:shortHalf], k[:shortHalf])
		copy(b[shortHalf:], k[16:16+shortHalf])
		c.prefix.Encrypt(b[:], b[:])
	} else {
		copy(b[:], k[:16])
		c.mac.Encrypt(b[:], b[:])
		for i := range b {
			b[i] ^= k[16+i]
		}
		c.mac.Encrypt(b[:], b[:])
	}
	// A check of 0 becomes 1: 0 marks a free slot. That makes check 1
	// twice as likely as the others, which changes the false-match rate
	// by a factor of 1+2^-15.
	return fingerprint{shard: b[0], fp: binary.BigEndian.Uint64(b[1:9]), check: max(1, binary.BigEndian.Uint16(b[9:11]))}
}

// A run's payload packs a contact into 32 bits: the interval's offset from
// the first interval of the contact's day (8 bits), the minutes (8), the
// attenuation (8) and the day's tag (8). Offsets wrap around 2^32 as
// intervals do, so that unpacking inverts packing for every day.

// packNarrow returns the payload of c, tagged tag, and whether c fits one.
func packNarrow(interval uint32, minutes uint16, atten uint8, day calendar.Day, tag uint8) (uint32, bool) {
	off := interval - uint32(day)*intervalsPerDay
	if off > 0xff || minutes > 0xff {
		return 0, false
	}
	return off<<24 | uint32(minutes)<<16 | uint32(atten)<<8 | uint32(tag), true
}

func tagOf(payload uint32) uint8 { return uint8(payload) }

func unpackNarrow(p uint32, days *[maxDays]calendar.Day) Contact {
	day := days[tagOf(p)]
	return Contact{
		Interval:    uint32(day)*intervalsPerDay + p>>24,
		Minutes:     uint16(p >> 16 & 0xff),
		Attenuation: uint8(p >> 8),
		Day:         day,
	}
}

func (w *wideTuple) contact(days *[maxDays]calendar.Day) Contact {
	return Contact{Interval: w.interval, Minutes: w.minutes, Attenuation: w.atten, Day: days[w.tag]}
}

// pending is an entry fingerprinted, before its day has a tag: what Add
// and a Loader compute without holding the lock.
type pending struct {
	fp       uint64
	interval uint32
	day      calendar.Day
	check    uint16
	minutes  uint16
	atten    uint8
	shard    uint8
}

// appendPending fingerprints entries and appends them to dst.
func (c *Compact) appendPending(dst []pending, entries []Entry) []pending {
	buf := new([16]byte)
	for i := range entries {
		e := &entries[i]
		f := c.fingerprint(buf, &e.Key)
		dst = append(dst, pending{
			fp: f.fp, check: f.check, shard: f.shard,
			interval: e.Contact.Interval, minutes: e.Contact.Minutes, atten: e.Contact.Attenuation, day: e.Contact.Day,
		})
	}
	clear(buf[:])
	return dst
}

// appendDays appends to dst the days of ps that it does not hold yet.
func appendDays(dst []calendar.Day, ps []pending) []calendar.Day {
	for i := range ps {
		if d := ps[i].day; (i == 0 || d != ps[i-1].day) && !slices.Contains(dst, d) {
			dst = append(dst, d)
		}
	}
	return dst
}

// Add stores the entries of one upload, or none of them if that would
// leave more than 256 distinct days in the index ([ErrTooManyDays]).
func (c *Compact) Add(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// Fingerprinting, grouping by shard and sorting need no lock: under
	// it, Add only tags the tuples and merges them into the shards' runs.
	ps := c.appendPending(make([]pending, 0, len(entries)), entries)
	days := appendDays(nil, ps)
	grouped, start := groupByShard(ps)
	for s := range numShards {
		sortPending(grouped[start[s]:start[s+1]])
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.assignTags(days); err != nil {
		return err
	}
	var narrow []tuple
	for s := range numShards {
		part := grouped[start[s]:start[s+1]]
		if len(part) == 0 {
			continue
		}
		var wide []wideTuple
		narrow, wide = c.appendTuples(narrow[:0], nil, part)
		old := c.shards[s].Load()
		sh := &shard{runs: old.runs, wide: old.wide, days: c.days, n: old.n + len(part)}
		if len(narrow) > 0 {
			sh.runs = filterYoung(normalize(append(slices.Clip(old.runs), newRun(narrow))))
		}
		if len(wide) > 0 {
			sh.wide = mergeWide(old.wide, wide)
		}
		c.shards[s].Store(sh)
	}
	return nil
}

// sortPending sorts ps by fp. An upload brings a few dozen tuples to a
// shard, which an insertion sort orders faster than a general sort.
func sortPending(ps []pending) {
	if len(ps) > 32 {
		slices.SortFunc(ps, func(a, b pending) int { return cmp.Compare(a.fp, b.fp) })
		return
	}
	for i := 1; i < len(ps); i++ {
		p := ps[i]
		j := i
		for ; j > 0 && ps[j-1].fp > p.fp; j-- {
			ps[j] = ps[j-1]
		}
		ps[j] = p
	}
}

// groupByShard returns ps grouped by shard (a counting sort): shard s's
// are grouped[start[s]:start[s+1]], in the order of ps.
func groupByShard(ps []pending) (grouped []pending, start [numShards + 1]int) {
	for i := range ps {
		start[int(ps[i].shard)+1]++
	}
	for s := range numShards {
		start[s+1] += start[s]
	}
	grouped = make([]pending, len(ps))
	next := start
	for i := range ps {
		grouped[next[ps[i].shard]] = ps[i]
		next[ps[i].shard]++
	}
	return grouped, start
}

// appendTuples converts pending entries, whose days have tags, to run
// tuples appended to narrow and, for the contacts that do not pack, wide
// tuples appended to wide. The caller holds c.mu.
func (c *Compact) appendTuples(narrow []tuple, wide []wideTuple, ps []pending) ([]tuple, []wideTuple) {
	if len(ps) == 0 {
		return narrow, wide
	}
	day, tag := ps[0].day, c.tags[ps[0].day]
	for i := range ps {
		p := &ps[i]
		if p.day != day {
			day, tag = p.day, c.tags[p.day]
		}
		if payload, ok := packNarrow(p.interval, p.minutes, p.atten, p.day, tag); ok {
			narrow = append(narrow, tuple{fp: p.fp, payload: payload, check: p.check})
		} else {
			wide = append(wide, wideTuple{fp: p.fp, interval: p.interval, minutes: p.minutes, check: p.check, atten: p.atten, tag: tag})
		}
	}
	return narrow, wide
}

// mergeWide returns a new wide list with the tuples of old and of add,
// sorted. It copies old: wide tuples are rare enough that a list per shard
// suffices.
func mergeWide(old, add []wideTuple) []wideTuple {
	out := append(slices.Clone(old), add...)
	slices.SortFunc(out, func(a, b wideTuple) int {
		return compareTuples(tuple{fp: a.fp}, tuple{fp: b.fp})
	})
	return slices.Clip(out)
}

// assignTags gives a tag to each of days that has none, or fails, changing
// nothing, if there are not enough free tags. The caller holds c.mu.
func (c *Compact) assignTags(days []calendar.Day) error {
	var fresh []calendar.Day
	for _, d := range days {
		if _, ok := c.tags[d]; !ok {
			fresh = append(fresh, d)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if len(fresh) > len(c.free) {
		return fmt.Errorf("%w: it holds %d of at most %d, and the entries add %d more", ErrTooManyDays, len(c.tags), maxDays, len(fresh))
	}
	table := *c.days // copy: published snapshots keep the old table
	for _, d := range fresh {
		t := c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		c.tags[d] = t
		table[t] = d
	}
	c.days = &table
	return nil
}

// Drop removes every contact of day. It rewrites each shard that holds any
// into a single run, one shard at a time, while lookups go on; so after a
// daily Drop every shard is one run again. Add waits until it is done.
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
		removed := 0
		for i := range old.runs {
			removed += old.runs[i].countTag(tag)
		}
		wide := slices.DeleteFunc(slices.Clone(old.wide), func(w wideTuple) bool { return w.tag == tag })
		removed += len(old.wide) - len(wide)
		if removed == 0 && len(old.runs) <= 1 {
			continue
		}
		var runs []run
		if merged := mergeRuns(old.runs, int(tag)); merged.n > 0 {
			runs = []run{merged}
		}
		c.shards[s].Store(&shard{runs: runs, wide: slices.Clip(wide), days: old.days, n: old.n - removed})
		total += removed
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

// runOverhead is the memory of a run besides its slots.
const runOverhead = int64(unsafe.Sizeof(run{}))

// MemBytes returns the memory the index uses: 14 bytes per slot, about
// 15.6 per tuple, plus small per-run and per-shard overheads. Right after
// an Add, Drop or Load, the runs it replaced also use memory until the
// garbage collector frees them.
func (c *Compact) MemBytes() int64 {
	b := int64(unsafe.Sizeof(*c)) + int64(unsafe.Sizeof([maxDays]calendar.Day{}))
	for s := range c.shards {
		sh := c.shards[s].Load()
		b += int64(unsafe.Sizeof(*sh)) + int64(len(sh.wide))*wideBytes
		for i := range sh.runs {
			b += runOverhead + int64(len(sh.runs[i].fp))*slotBytes + int64(len(sh.runs[i].filter))*8
		}
	}
	return b
}
