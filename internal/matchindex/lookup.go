package matchindex

import (
	"cmp"
	"math"
	"slices"
)

const (
	// batchChunk is how many queries LookupBatch resolves together: enough
	// to keep the memory system busy (a core has 10 to 20 cache misses in
	// flight at most), few enough that what they read is still in the
	// core's caches when it is scanned.
	batchChunk = 128
	// lookahead is how far past its home slot a lookup reads ahead in the
	// first pass: the slots from home to home+lookahead span two or three
	// cache lines, those of the home slot, of 8 slots on (midAhead) and of
	// the last. At 9/10 full the key belongs within 15 slots of home for
	// 96% of lookups, within 7 (two lines) for only 80%, and each of the
	// rest waits for one more miss, one that depends on the first.
	lookahead = 15
	midAhead  = 8
)

// probe is one query's read of one run, between the two passes of a batch.
type probe struct {
	near, far uint64 // the sort keys at slot and at slot+lookahead (or the last slot)
	// nearAt, midAt and farAt point at the sort keys of the slot,
	// slot+midAhead and slot+lookahead (or the last slot), for read to
	// load: one in each cache line between.
	nearAt, midAt, farAt *uint64
	slot                 int32  // the query's home slot in the run
	query                uint16 // the query's index in its chunk
	run                  uint8  // the run's index in the query's shard
}

// Lookup appends the contacts stored under k to dst. It takes no lock.
func (c *Compact) Lookup(dst []Contact, k Key) []Contact {
	var buf [4]Found
	for _, f := range c.LookupBatch(buf[:0], []Query{{Key: k}}, math.MaxUint32) {
		dst = append(dst, f.Contact)
	}
	return dst
}

// LookupBatch appends, for each query qs[i] in order, the contacts stored
// under qs[i].Key whose interval is within skew of qs[i].Interval. It
// takes no lock.
//
// It works through the queries a chunk at a time, in three passes. The
// first computes the chunk's fingerprints. The second computes, for each
// query and each run of its shard that the filters leave, the slot to
// read, and then reads them all: the reads do not depend on each other,
// and nothing depends on what they return but a store, so the processor
// overlaps their cache and TLB misses instead of waiting for each in turn,
// as it must when each lookup's next step depends on its last read. The
// third pass scans from those slots, now in cache.
func (c *Compact) LookupBatch(dst []Found, qs []Query, skew uint32) []Found {
	var (
		fps   [batchChunk]fingerprint
		snaps [batchChunk]*shard
		first [batchChunk + 1]int // query i's probes are probes[first[i]:first[i+1]]
	)
	probes := make([]probe, 0, 4*batchChunk)
	buf := new([16]byte)
	for base := 0; base < len(qs); base += batchChunk {
		chunk := qs[base:min(base+batchChunk, len(qs))]
		for i := range chunk {
			fps[i] = c.fingerprint(buf, &chunk[i].Key)
		}
		probes = c.locate(probes[:0], fps[:len(chunk)], snaps[:len(chunk)], first[:len(chunk)+1])
		for i := range chunk {
			dst = scanProbes(dst, probes[first[i]:first[i+1]], snaps[i], &fps[i], chunk[i].Interval, skew, base+i)
		}
	}
	clear(buf[:])
	clear(fps[:])
	return dst
}

// locate is the second pass of LookupBatch: it loads each query's shard
// into snaps, appends a probe for each of its runs whose filter, if it
// has one, does not rule the query out, then reads (read) the first and
// last slot each probe's scan is likely to need.
func (c *Compact) locate(probes []probe, fps []fingerprint, snaps []*shard, first []int) []probe {
	for i := range fps {
		f := &fps[i]
		sh := c.shards[f.shard].Load()
		snaps[i] = sh
		first[i] = len(probes)
		for k := range sh.runs {
			r := &sh.runs[k]
			if r.filter != nil && !r.filter.mayHold(f.fp) {
				continue
			}
			h := home(f.fp, r.slots)
			probes = append(probes, probe{
				nearAt: &r.fp[h],
				midAt:  &r.fp[min(h+midAhead, len(r.fp)-1)],
				farAt:  &r.fp[min(h+lookahead, len(r.fp)-1)],
				slot:   int32(h),
				query:  uint16(i),
				run:    uint8(k),
			})
		}
	}
	first[len(fps)] = len(probes)
	read(probes)
	return probes
}

// read loads the sort keys each probe points at. It is a loop of a few
// instructions a probe, apart from the work of finding the slots, so that
// the processor's window holds the loads of dozens of probes at once and
// overlaps their cache and TLB misses; with that work in the same loop it
// held only a few.
func read(probes []probe) {
	for j := range probes {
		p := &probes[j]
		// The middle key is no larger than the far one: max only makes
		// sure that it is loaded.
		p.near, p.far = *p.nearAt, max(*p.midAt, *p.farAt)
	}
}

// scanProbes is the third pass of LookupBatch for one query: it appends
// the contacts the query's probes find, and those in the shard's wide
// list, as Found with Query q.
func scanProbes(dst []Found, probes []probe, sh *shard, f *fingerprint, interval, skew uint32, q int) []Found {
	for _, p := range probes {
		if p.near > f.fp {
			continue // the home slot is already past the key: not there
		}
		r := &sh.runs[p.run]
		var lo, hi int
		if start := int(p.slot); p.far >= f.fp && start+lookahead < len(r.fp) {
			lo, hi = r.equalNear(start, f.fp) // most lookups
		} else {
			if p.far < f.fp {
				start = min(start+lookahead+1, len(r.fp))
			}
			lo, hi = r.equal(start, f.fp)
		}
		for s := lo; s < hi; s++ {
			if r.check[s] != f.check {
				continue
			}
			if ct := unpackNarrow(r.payload[s], sh.days); within(ct.Interval, interval, skew) {
				dst = append(dst, Found{Query: q, Contact: ct})
			}
		}
	}
	if len(sh.wide) == 0 {
		return dst
	}
	j, _ := slices.BinarySearchFunc(sh.wide, f.fp, func(w wideTuple, x uint64) int { return cmp.Compare(w.fp, x) })
	for ; j < len(sh.wide) && sh.wide[j].fp == f.fp; j++ {
		w := &sh.wide[j]
		if w.check != f.check {
			continue
		}
		if ct := w.contact(sh.days); within(ct.Interval, interval, skew) {
			dst = append(dst, Found{Query: q, Contact: ct})
		}
	}
	return dst
}
