package matchindex

import (
	"math"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
)

// fuzzKey turns a selector byte into one of a few related keys, so that
// fuzzed operations hit the same keys, their mirrors and keys sharing one
// RPI with them: base key sel&7, mirrored if sel&8, with the heard RPI of
// key sel>>5 if sel&16.
func fuzzKey(sel byte) Key {
	base := func(i byte) Key {
		return NewKey([16]byte{0: i, 15: 0xaa}, [16]byte{0: i + 100, 15: 0x55})
	}
	k := base(sel & 7)
	if sel&8 != 0 {
		k = k.Mirror()
	}
	if sel&16 != 0 {
		k = NewKey(k.Own(), base(sel>>5).Heard())
	}
	return k
}

// FuzzIndex runs a fuzzed sequence of adds, bulk loads, drops, lookups
// and batch lookups on Compact and Map and checks that they agree. Each
// operation is a byte and its operands:
//
//	0 mod 3: add n = 1+(op>>2)%8 entries of 4 bytes (key, day, interval,
//	         minutes), through a Loader if op >= 128; the interval is in
//	         the entry's day (as the enclave stores them) if minutes is
//	         odd, else anything
//	1 mod 3: drop the day in the next byte
//	2 mod 3: look up the key selected by the next byte; if op >= 128, a
//	         batch: the next byte gives the skew (bits 0-1) and the number
//	         of queries (1+(b>>2)), each a key selector and an interval byte
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 2, 1})
	f.Add([]byte{4, 1, 2, 3, 4, 9, 2, 3, 4, 1, 2, 2, 9})
	f.Add([]byte{0, 8, 1, 1, 1, 0, 8, 2, 1, 1, 1, 1, 2, 8, 0, 16, 1, 1, 1, 2, 16})
	f.Add([]byte{28, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 1, 0, 2, 7})
	f.Add([]byte{132, 0, 5, 9, 3, 8, 5, 9, 3, 0, 8, 7, 1, 1, 131, 9, 8, 7, 0, 8, 9, 9, 1, 5, 131, 7, 0, 7, 8, 8, 9, 16, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		compact, baseline := NewCompact(), NewMap()
		check := func(k Key) {
			t.Helper()
			got, want := sorted(compact.Lookup(nil, k)), sorted(baseline.Lookup(nil, k))
			if !slices.Equal(got, want) {
				t.Fatalf("Lookup(%x): compact %v, map %v", k[:2], got, want)
			}
		}
		checkBatch := func(qs []Query, skew uint32) {
			t.Helper()
			got, want := compact.LookupBatch(nil, qs, skew), baseline.LookupBatch(nil, qs, skew)
			checkGrouped(t, got)
			if got, want := sortedFound(got), sortedFound(want); !slices.Equal(got, want) {
				t.Fatalf("LookupBatch(%d queries, skew %d): compact %v, map %v", len(qs), skew, got, want)
			}
		}
	run:
		for len(ops) > 0 {
			op := ops[0]
			ops = ops[1:]
			switch op % 3 {
			case 0:
				n := 1 + int(op>>2)%8
				if len(ops) < 4*n {
					break run
				}
				var batch []Entry
				for range n {
					d := calendar.Day(ops[1])
					iv := uint32(ops[2]) << 24
					if ops[3]&1 == 1 {
						iv = uint32(d)*intervalsPerDay + uint32(ops[2])
					}
					batch = append(batch, Entry{Key: fuzzKey(ops[0]), Contact: Contact{
						Interval:    iv,
						Minutes:     uint16(ops[3]),
						Attenuation: ops[3] ^ ops[2],
						Day:         d,
					}})
					ops = ops[4:]
				}
				// At most 256 days can be named, so Compact has room.
				if op >= 128 {
					l := compact.NewLoader()
					l.Add(batch)
					if err := l.Load(); err != nil {
						t.Fatal(err)
					}
				} else if err := compact.Add(batch); err != nil {
					t.Fatal(err)
				}
				if err := baseline.Add(batch); err != nil {
					t.Fatal(err)
				}
			case 1:
				if len(ops) < 1 {
					break run
				}
				d := calendar.Day(ops[0])
				ops = ops[1:]
				if got, want := compact.Drop(d), baseline.Drop(d); got != want {
					t.Fatalf("Drop(%d): compact removed %d, map %d", d, got, want)
				}
			case 2:
				if len(ops) < 1 {
					break run
				}
				if op < 128 {
					check(fuzzKey(ops[0]))
					ops = ops[1:]
					continue
				}
				skew := []uint32{0, 1, 200, math.MaxUint32}[ops[0]&3]
				n := 1 + int(ops[0]>>2)
				ops = ops[1:]
				var qs []Query
				for ; n > 0 && len(ops) >= 2; n-- {
					qs = append(qs, Query{Key: fuzzKey(ops[0]), Interval: uint32(ops[1]) << 24})
					ops = ops[2:]
				}
				checkBatch(qs, skew)
			}
			if compact.Len() != baseline.Len() {
				t.Fatalf("Len: compact %d, map %d", compact.Len(), baseline.Len())
			}
		}
		var all []Query
		for sel := range 256 {
			check(fuzzKey(byte(sel)))
			all = append(all, Query{Key: fuzzKey(byte(sel))})
		}
		checkBatch(all, math.MaxUint32)
	})
}
