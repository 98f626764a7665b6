// Package matchindex keeps, in enclave memory, the contact tuples that
// infected users uploaded, and finds the ones that mirror a polling
// device's tuples.
//
// A contact tuple records one encounter from one side: the RPI a device was
// broadcasting, the RPI it heard, the interval, how many minutes and at what
// attenuation. When A (broadcasting a1) meets C (broadcasting c1), A logs
// (a1, c1, …) and C logs (c1, a1, …). If C tests positive and uploads, the
// backend adds C's tuples under the [Key] own||heard = c1||a1. When A polls
// with its own tuple a1||c1, the backend looks up the mirror, c1||a1, and
// finds C's record of the encounter: a reciprocal match. [Match] does that
// lookup and keeps only the contacts whose interval agrees with the polling
// device's within a clock-skew tolerance; [Index.LookupBatch] does it for a
// whole poll at once ([MatchQuery] makes its queries). A device that merely
// heard c1 without being heard back holds no tuple whose mirror was
// uploaded, so replaying overheard RPIs claims nothing.
//
//	idx := matchindex.NewCompact()
//	err := idx.Add(upload)                     // one upload: []Entry
//	found := idx.LookupBatch(nil, queries, 1)  // one poll: []Query
//	removed := idx.Drop(expiredDay)            // retention
//
// # Two implementations
//
// [Map] is the obvious baseline, a Go map from the full 32-byte key to its
// contacts, which costs over 100 bytes per tuple. [Compact] is the one to
// deploy: at national scale the index holds up to about 10^9 tuples (14
// days of uploads) in enclave memory, where every byte counts, and Compact
// keeps about 15.6 bytes per tuple. Both are safe for lookups concurrent
// with adds and drops, and give the same answers. `conftrace bench index`
// compares them on polls of random keys at 10^8 tuples (the map at the
// largest size that fits), BenchmarkLookup, BenchmarkAdd and BenchmarkDrop
// one operation at a time; docs/performance.md records the last runs.
//
// # How Compact stores a tuple
//
// Compact does not keep the key. It keeps an 88-bit fingerprint of it, the
// first 11 bytes of a MAC under random AES keys that each index draws when
// it is made and that never leave it: 8 bits choose one of 256 shards, 64
// are the sort key and 16 more (the check) must match too. The MAC is
// AES-128(k1, own[:8]||heard[:8]) for a key whose halves are zero past
// their first 8 bytes, as every key the enclave makes (RPI prefixes), and
// AES-128-CBC-MAC(k2, own||heard) for any other. The contact is packed into 32 bits: the
// interval's offset from the first interval of its day (8), the minutes
// (8), the attenuation (8) and an 8-bit tag standing for the day. A slot
// thus costs 8 + 2 + 4 = 14 bytes, in three parallel arrays, so that a
// lookup's scan reads the sort keys alone. Contacts that do not pack (an
// interval outside its day, more than 255 minutes: the enclave stores
// none) are kept apart in a small sorted list per shard, so that any
// contact round-trips.
//
// Each shard is a short list of immutable runs, oldest and largest first.
// A run holds its tuples sorted by sort key, one slot in ten left free (9/10
// full: 14 × 10/9 ≈ 15.6 bytes per tuple), laid out by ordered linear
// probing built from sorted input: the tuple with sort key x sits at its
// home slot ⌊x·slots/2^64⌋ or, when the tuple before it took that, at the
// next free slot after. Fingerprints being uniform, a tuple lies a few
// slots from home (within 15 for 96% of lookups), so a lookup computes
// where to read and reads two or three adjacent cache lines at once, with
// no directory or search in between. Every [Compact.Add]
// sorts its tuples into a new run and merges runs whose sizes come within
// a factor of 8 (a log-structured merge, each merge in one pass), which
// keeps a few runs per shard; [Compact.Drop] rewrites every shard it
// touches into a single run,
// and a [Loader], what a restart uses, sorts all its tuples once and
// leaves each shard a single run.
//
// Every run but a shard's oldest also has a small Bloom filter of its sort
// keys, 12 bits a tuple in one 64-bit word per key, which rules out about
// 99% of the keys the run does not hold. The young runs, the day's
// uploads, hold at most about a seventh of the tuples, so their filters
// cost at most about 0.2 bytes a tuple and mostly stay in cache; a lookup
// between two drops thus reads, from memory, the oldest run and seldom
// another, rather than every run of the shard. (The oldest, read by every
// lookup anyway, has none.)
//
// [Compact.LookupBatch] answers a poll 128 queries at a time: it computes
// their fingerprints, then the slot of each query in each run of its shard
// that the filters leave, then reads those slots in a loop of a few
// instructions each, reads that do not depend on each other, so that the
// processor overlaps their cache and TLB misses; then it scans from those
// slots, now in cache. Looking keys up one by one waits for each miss in turn.
// Lookups take no lock: they read an atomically published snapshot of the
// shard.
//
// # False matches
//
// A lookup of a key that was never added returns a contact only if some
// stored tuple's fingerprint equals the key's in all 88 bits. AES of one
// block and CBC-MAC over a fixed two-block input, under independent keys,
// are each a pseudorandom function of the whole key (both RPIs: a tuple
// that shares one RPI with a stored one is no closer than any other),
// so with n tuples stored that happens with probability about n·2^-88
// per lookup: 3.2·10^-18 at n = 10^9 (a check of 1 instead of 0,
// which marks free slots, makes one check value twice as likely, a factor
// of 1+2^-15 on that). A country of 60 million phones polling 2,000 tuples
// a day makes 4.4·10^13 lookups a year, so expects about 1.4·10^-4 false
// fingerprint hits a year at 10^9 tuples; [Match] also requires the
// intervals to agree, which a false hit does with probability about
// 3/2016 at skew 1 over 14 days, leaving about 2·10^-7 false matches a
// year. No full-key confirmation removes them: the key is not stored. The
// key's halves enter the MAC in different positions, so a key and its
// mirror have unrelated fingerprints: an infected device that polls does
// not match its own upload.
//
// # Limits
//
// Compact holds tuples of at most 256 distinct days at a time (retention
// keeps 14); beyond that Add and Load fail with [ErrTooManyDays] and add
// nothing. Add, Drop and Load are serialized. Drop rewrites every shard
// that holds the day while lookups continue, in time proportional to the
// index size (BenchmarkDrop), during which uploads wait. Right after an
// Add, Drop or Load, the runs it replaced use memory until the garbage
// collector frees them, and a Loader's pending entries take 16 bytes each
// until Load.
//
// # Side channels
//
// Lookups are not oblivious. Which shard, which runs and which memory
// addresses a lookup reads depend on the queried key's fingerprint, and a
// hit reads more than a miss. A host that observes the enclave's memory
// access pattern (page faults, cache timing) can therefore link a poll to
// the upload that wrote the same locations, and so learn that a device was
// exposed, though not the RPIs involved (the fingerprint key is secret).
// The TEE does not hide this, and this package does nothing against it
// beyond keeping the answers themselves inside the enclave; an oblivious
// index (ORAM, or a linear scan per poll) is future work.
package matchindex

import (
	"errors"

	"github.com/conftrace/conftrace/internal/calendar"
)

// Key identifies an uploaded contact tuple: the uploader's own RPI followed
// by the RPI it heard.
type Key [32]byte

// NewKey returns the key of a tuple logged by the device broadcasting own
// that heard heard.
func NewKey(own, heard [16]byte) Key {
	var k Key
	copy(k[:16], own[:])
	copy(k[16:], heard[:])
	return k
}

// Own returns the RPI the tuple's device was broadcasting.
func (k Key) Own() [16]byte { return [16]byte(k[:16]) }

// Heard returns the RPI the tuple's device heard.
func (k Key) Heard() [16]byte { return [16]byte(k[16:]) }

// Mirror returns the key under which the other device of the encounter
// logged it: heard||own.
func (k Key) Mirror() Key { return NewKey(k.Heard(), k.Own()) }

// Contact is what the index stores about one uploaded tuple besides its key.
type Contact struct {
	// Interval is the 10-minute interval (ENIntervalNumber: Unix time / 600)
	// in which the uploader logged the encounter.
	Interval uint32
	// Minutes is how long the uploader heard the other device.
	Minutes uint16
	// Attenuation is the uploader's signal attenuation in dB.
	Attenuation uint8
	// Day is the retention day the tuple belongs to.
	Day calendar.Day
}

// Entry is one uploaded tuple: the key it is found under and its contact.
type Entry struct {
	Key     Key
	Contact Contact
}

// Query is one lookup of a batch: the key to look up and the interval the
// contacts found under it must be near.
type Query struct {
	Key      Key
	Interval uint32
}

// MatchQuery returns the query [Match] makes for a polling device's tuple:
// the mirror of own, near interval.
func MatchQuery(own Key, interval uint32) Query {
	return Query{Key: own.Mirror(), Interval: interval}
}

// Found is a contact that a batch lookup found, and which of the batch's
// queries it answers.
type Found struct {
	// Query is the index of the query in the batch.
	Query   int
	Contact Contact
}

// Index is a set of uploaded tuples. Implementations are safe for
// concurrent use; lookups may run while tuples are added or dropped.
type Index interface {
	// Add stores the entries of one upload. It stores all of them or,
	// returning an error, none; lookups concurrent with Add may see some
	// of them, and lookups after it all. Entries are not deduplicated.
	Add(entries []Entry) error
	// Lookup appends to dst the contacts stored under k, in no particular
	// order, and returns the extended slice.
	Lookup(dst []Contact, k Key) []Contact
	// LookupBatch answers many lookups at once, which lets an
	// implementation overlap their memory accesses. For each query qs[i],
	// in the order of i, it appends to dst the contacts stored under
	// qs[i].Key whose interval is within skew of qs[i].Interval, each as a
	// Found with Query i, and returns the extended slice. With skew
	// math.MaxUint32 it keeps every contact, as Lookup does.
	LookupBatch(dst []Found, qs []Query, skew uint32) []Found
	// Drop removes every contact of day and returns how many it removed.
	// Contacts of day added concurrently with Drop may survive it.
	Drop(day calendar.Day) int
	// Len returns the number of contacts stored.
	Len() int
	// MemBytes returns approximately how many bytes of memory the index
	// uses, for reporting.
	MemBytes() int64
}

// ErrTooManyDays is returned by [Compact.Add] when storing the entries
// would leave contacts of more than 256 distinct days in the index.
var ErrTooManyDays = errors.New("matchindex: too many distinct days in the index")

// Match answers one tuple of an exposure poll. own is the key of a tuple
// as the polling device logged it (its own RPI, then the RPI it heard) and
// interval the interval it logged. Match looks up the mirror of own and
// appends to dst the contacts whose interval is within skew intervals of
// interval (skew 1 tolerates the devices' clocks straddling an interval
// boundary), returning the extended slice.
func Match(idx Index, dst []Contact, own Key, interval, skew uint32) []Contact {
	return Near(idx, dst, own.Mirror(), interval, skew)
}

// Near appends to dst the contacts stored under key whose interval is
// within skew of interval: the lookup Match makes for the mirror key, for
// indexes whose keys are not pairs (one-sided matching keys them by the
// identifier alone).
func Near(idx Index, dst []Contact, key Key, interval, skew uint32) []Contact {
	start := len(dst)
	dst = idx.Lookup(dst, key)
	kept := dst[:start]
	for _, c := range dst[start:] {
		if within(c.Interval, interval, skew) {
			kept = append(kept, c)
		}
	}
	return kept
}

// within reports whether a and b differ by at most skew, without
// overflowing near 0 or 2^32.
func within(a, b, skew uint32) bool {
	if a < b {
		a, b = b, a
	}
	return a-b <= skew
}
