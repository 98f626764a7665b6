package contactlog

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/conftrace/conftrace/enid"
)

// ReportVersion is the version byte that starts a report.
const ReportVersion = 3

// DailyKeySize is the size of one encoded daily key.
const DailyKeySize = 16 + 4 + 1

// MaxKeys is the most daily keys a report can hold (its count is one byte).
const MaxKeys = math.MaxUint8

// MaxKeySightings is the most sightings a report can hold under one daily
// key (their count is two bytes).
const MaxKeySightings = math.MaxUint16

// RPIPrefixSize is how many leading bytes of a heard RPI a report carries,
// and so how much of an RPI the backend compares in a match: reciprocally,
// the first RPIPrefixSize bytes of both phones' RPIs (each derived from one
// phone's daily key, and heard by the other), 2·RPIPrefixSize bytes in all;
// one-sidedly, those of the heard RPI and of an infected user's derived
// one.
//
// Eight bytes keep false matches out of reach at national scale. With
// 10^9 indexed pairs and 6·10^7 checks of 2,000 sightings a day (1.2·10^11
// lookups), a reciprocal pair of 128 random bits falsely matches about
// 1.2·10^20 × 2^-128 = 3.5·10^-19 times a day. One-sided, against the
// 2·10^7 identifiers of 10^4 cases' 14 keys of 144 intervals, a 64-bit
// prefix would collide 0.13 times a day; but a match also needs the
// intervals to agree within the clock-skew tolerance (±1: 3 of the 2,016
// intervals of 14 days), which leaves 2·10^-4 a day, and a whole window of
// such uploads (7 times the identifiers) 1.4·10^-3: one false one-sided
// sighting in two years, less than a notification's threshold by itself.
//
// Prefixes do not weaken what a match proves. Both sides' RPIs still
// derive inside the backend from daily keys; a forged upload or check
// still needs its victim's RPI prefix, which only hearing the victim
// gives (a guess succeeds with probability 2^-64), and claiming another
// phone's own identifier means finding a daily key whose RPI has its
// prefix, about 2^64 key derivations.
const RPIPrefixSize = 8

// ReportSightingSize is the size of one sighting in a report: the heard
// RPI's prefix, the interval's offset within its key, minutes and
// attenuation.
const ReportSightingSize = RPIPrefixSize + 1 + 1 + 1

// reportKeySize is the size of a key in a report: the key and the count of
// its sightings.
const reportKeySize = DailyKeySize + 2

// RPIPrefix returns rpi with every byte after its first RPIPrefixSize
// zeroed: what a report carries of a heard RPI, and what a receiver
// compares of every RPI it matches.
func RPIPrefix(rpi enid.RPI) enid.RPI {
	clear(rpi[RPIPrefixSize:])
	return rpi
}

// DailyKey is a device's Temporary Exposure Key with its validity, in the
// form GAEN phones and key servers exchange it: the device's RPIs of every
// interval from Start for Period intervals derive from TEK.
type DailyKey struct {
	TEK enid.TEK
	// Start is the first interval the key is valid for (its rolling start
	// interval number).
	Start enid.Interval
	// Period is the number of intervals the key is valid for, 1 to
	// enid.RollingPeriod (144, a day).
	Period uint8
}

// End returns the first interval after the key's validity.
func (k DailyKey) End() enid.Interval { return k.Start + enid.Interval(k.Period) }

// Contains reports whether the key is valid during interval i.
func (k DailyKey) Contains(i enid.Interval) bool { return i >= k.Start && i < k.End() }

// Key returns the enid key that derives the RPIs; it fails if the rolling
// period or start is out of range.
func (k DailyKey) Key() (*enid.Key, error) {
	return enid.NewKey(k.TEK, k.Start, int(k.Period))
}

func (k DailyKey) check() error {
	if k.Period == 0 || int(k.Period) > enid.RollingPeriod {
		return fmt.Errorf("%w: rolling period %d, want 1 to %d", ErrInvalid, k.Period, enid.RollingPeriod)
	}
	if uint64(k.Start)+uint64(k.Period) > math.MaxUint32 {
		return fmt.Errorf("%w: a key starting at interval %d cannot last %d intervals", ErrInvalid, k.Start, k.Period)
	}
	return nil
}

// Report is what a device sends in an upload or an exposure check: its
// daily keys and its sightings. On the wire each sighting goes with the
// key valid in its interval and carries only its heard RPI's prefix, so a
// report comes back from ParseReport with its sightings grouped by key
// and their Heard cut to RPIPrefix.
type Report struct {
	Keys      []DailyKey
	Sightings []Sighting
}

// Limits bound what ParseReport accepts.
type Limits struct {
	// MaxKeys is the most daily keys accepted, at most MaxKeys.
	MaxKeys int
	// MaxSightings is the most sightings accepted.
	MaxSightings int
}

// Check reports whether r is well formed: every key and sighting in range,
// no two keys valid at the same time, every sighting in the validity of a
// key, and at most MaxKeySightings sightings under any key. It sorts
// r.Keys by Start.
func (r Report) Check() error {
	_, err := r.check()
	return err
}

// check is Check, and returns how many sightings each key covers.
func (r Report) check() ([]int, error) {
	if len(r.Keys) > MaxKeys {
		return nil, fmt.Errorf("%w: %d daily keys, at most %d", ErrTooMany, len(r.Keys), MaxKeys)
	}
	for i, k := range r.Keys {
		if err := k.check(); err != nil {
			return nil, fmt.Errorf("%w (key %d)", err, i)
		}
	}
	slices.SortFunc(r.Keys, func(a, b DailyKey) int { return cmp.Compare(a.Start, b.Start) })
	for i := 1; i < len(r.Keys); i++ {
		if r.Keys[i].Start < r.Keys[i-1].End() {
			return nil, fmt.Errorf("%w: a key valid from interval %d overlaps one valid from %d to %d", ErrOverlap, r.Keys[i].Start, r.Keys[i-1].Start, r.Keys[i-1].End())
		}
	}
	counts := make([]int, len(r.Keys))
	k := 0
	for i, s := range r.Sightings {
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("%w (sighting %d)", err, i)
		}
		k = r.coveringNear(k, s.Interval)
		if k < 0 {
			return nil, fmt.Errorf("%w: sighting %d at interval %d", ErrUncovered, i, s.Interval)
		}
		if counts[k]++; counts[k] > MaxKeySightings {
			return nil, fmt.Errorf("%w: more than %d sightings under the daily key valid from interval %d", ErrTooMany, MaxKeySightings, r.Keys[k].Start)
		}
	}
	return counts, nil
}

// Covering returns the index of the key valid at interval i, or -1. The
// keys must be sorted by Start and not overlap, as Check leaves them.
func (r Report) Covering(i enid.Interval) int {
	n, _ := slices.BinarySearchFunc(r.Keys, i, func(k DailyKey, i enid.Interval) int {
		switch {
		case k.End() <= i:
			return -1
		case k.Start > i:
			return 1
		}
		return 0
	})
	if n < len(r.Keys) && r.Keys[n].Contains(i) {
		return n
	}
	return -1
}

// coveringNear is Covering, looking first at key k and the one after it:
// sightings grouped by key, as ParseReport leaves them and as devices
// record them in time order, then cost no binary search each (which
// showed in profiles of exposure checks).
func (r Report) coveringNear(k int, i enid.Interval) int {
	switch {
	case k >= 0 && k < len(r.Keys) && r.Keys[k].Contains(i):
		return k
	case k >= -1 && k+1 < len(r.Keys) && r.Keys[k+1].Contains(i):
		return k + 1
	}
	return r.Covering(i)
}

// AppendBinary appends the encoding of r to b. It fails if r is not well
// formed (see Check), and, like Check, sorts r.Keys in place. Each
// sighting goes with the key valid in its interval, the keys' groups in
// the order of the keys and the sightings of a group in the order of
// r.Sightings; of each heard RPI only its prefix is sent.
func (r Report) AppendBinary(b []byte) ([]byte, error) {
	counts, err := r.check()
	if err != nil {
		return b, err
	}
	// next[k] is where key k's next sighting goes, in sightings from the
	// start of the first group.
	next := make([]int, len(r.Keys))
	b = slices.Grow(b, 2+len(r.Keys)*reportKeySize+len(r.Sightings)*ReportSightingSize)
	b = append(b, ReportVersion, byte(len(r.Keys)))
	total := 0
	for k, dk := range r.Keys {
		b = appendKey(b, dk)
		b = binary.BigEndian.AppendUint16(b, uint16(counts[k]))
		next[k] = total
		total += counts[k]
	}
	base := len(b)
	b = b[:base+total*ReportSightingSize]
	k := 0
	for _, s := range r.Sightings {
		k = r.coveringNear(k, s.Interval)
		o := b[base+next[k]*ReportSightingSize:]
		next[k]++
		copy(o, s.Heard[:RPIPrefixSize])
		o[RPIPrefixSize] = byte(s.Interval - r.Keys[k].Start)
		o[RPIPrefixSize+1], o[RPIPrefixSize+2] = s.Minutes, s.Attenuation
	}
	return b, nil
}

// appendKey appends the DailyKeySize-byte encoding of k.
func appendKey(b []byte, k DailyKey) []byte {
	b = append(b, k.TEK[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(k.Start))
	return append(b, k.Period)
}

// decodeKey decodes the first DailyKeySize bytes of b, which the caller
// has checked are there.
func decodeKey(b []byte) DailyKey {
	return DailyKey{TEK: enid.TEK(b[0:16]), Start: enid.Interval(binary.BigEndian.Uint32(b[16:20])), Period: b[20]}
}

// ParseReport decodes a report and checks that it is well formed. data must
// be exactly one report: truncated input (ErrTruncated), trailing bytes
// (ErrTrailing), another version (ErrVersion), more keys or sightings than
// lim allows (ErrTooMany), a field out of range (ErrInvalid) and
// overlapping keys (ErrOverlap) are each refused with their own error.
// Nothing is allocated before the counts are checked against lim and the
// length of data, so lim bounds the memory an untrusted sender can make
// the caller use. The keys come back sorted by Start, each key's sightings
// after the previous key's, and each sighting's Heard holds the RPI prefix
// that was sent, then zeros.
func ParseReport(data []byte, lim Limits) (Report, error) {
	if len(data) < 2 {
		return Report{}, fmt.Errorf("%w: a report needs at least 2 bytes, got %d", ErrTruncated, len(data))
	}
	if data[0] != ReportVersion {
		return Report{}, fmt.Errorf("%w: report version %d, want %d", ErrVersion, data[0], ReportVersion)
	}
	nk := int(data[1])
	if nk > lim.MaxKeys {
		return Report{}, fmt.Errorf("%w: %d daily keys, limit %d", ErrTooMany, nk, lim.MaxKeys)
	}
	table := data[2:]
	if len(table) < nk*reportKeySize {
		return Report{}, fmt.Errorf("%w: %d daily keys need %d bytes, got %d", ErrTruncated, nk, nk*reportKeySize, len(table))
	}
	rest := table[nk*reportKeySize:]
	// Each key's group of sightings follows the previous key's, in the
	// keys' order on the wire; a key moves with its group when the keys
	// are sorted.
	type group struct {
		key          DailyKey
		first, count int // in sightings from the first group's start
	}
	groups := make([]group, nk)
	defer clear(groups)
	ns := 0 // at most 255 × 65,535: no overflow
	for k := range groups {
		b := table[k*reportKeySize:]
		groups[k] = group{decodeKey(b), ns, int(binary.BigEndian.Uint16(b[DailyKeySize:]))}
		ns += groups[k].count
	}
	// A negative limit would admit any count if compared as unsigned.
	if lim.MaxSightings < 0 || ns > lim.MaxSightings {
		return Report{}, fmt.Errorf("%w: %d sightings, limit %d", ErrTooMany, ns, lim.MaxSightings)
	}
	switch need := ns * ReportSightingSize; {
	case len(rest) < need:
		return Report{}, fmt.Errorf("%w: %d sightings need %d bytes, got %d", ErrTruncated, ns, need, len(rest))
	case len(rest) > need:
		return Report{}, fmt.Errorf("%w: %d bytes after a report", ErrTrailing, len(rest)-need)
	}
	slices.SortStableFunc(groups, func(a, b group) int { return cmp.Compare(a.key.Start, b.key.Start) })
	r := Report{Keys: make([]DailyKey, 0, nk), Sightings: make([]Sighting, 0, ns)}
	for _, g := range groups {
		r.Keys = append(r.Keys, g.key)
		if err := g.key.check(); err != nil {
			r.Clear()
			return Report{}, fmt.Errorf("%w (key %d)", err, len(r.Keys)-1)
		}
		for j := range g.count {
			b := rest[(g.first+j)*ReportSightingSize:]
			off := b[RPIPrefixSize]
			if off >= g.key.Period {
				r.Clear()
				return Report{}, fmt.Errorf("%w: a sighting at offset %d under a key valid for %d intervals", ErrInvalid, off, g.key.Period)
			}
			s := Sighting{Interval: g.key.Start + enid.Interval(off), Minutes: b[RPIPrefixSize+1], Attenuation: b[RPIPrefixSize+2]}
			copy(s.Heard[:], b[:RPIPrefixSize])
			r.Sightings = append(r.Sightings, s)
		}
	}
	if err := r.Check(); err != nil {
		r.Clear()
		return Report{}, err
	}
	return r, nil
}

// Clear overwrites the report's keys and sightings with zeros: they say
// who the device met and let anyone derive its identifiers, and should not
// linger in memory once used.
func (r Report) Clear() {
	clear(r.Keys)
	clear(r.Sightings)
}

// AppendKeys appends a key count (4 bytes, big-endian) and the keys. Unlike
// a report's, the keys of such a list may overlap: they are different
// devices' (the keys of an imported GAEN export, say).
func AppendKeys(b []byte, keys []DailyKey) ([]byte, error) {
	if uint64(len(keys)) > math.MaxUint32 {
		return b, fmt.Errorf("%w: %d daily keys do not fit a count", ErrTooMany, len(keys))
	}
	orig := b
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for i, k := range keys {
		if err := k.check(); err != nil {
			return orig, fmt.Errorf("%w (key %d)", err, i)
		}
		b = appendKey(b, k)
	}
	return b, nil
}

// ParseKeys decodes exactly one list that AppendKeys wrote, of at most
// limit keys, each in range; the count is checked against limit and the
// length of data before anything is allocated.
func ParseKeys(data []byte, limit int) ([]DailyKey, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("%w: the key count needs 4 bytes, got %d", ErrTruncated, len(data))
	}
	count := binary.BigEndian.Uint32(data)
	if limit < 0 || uint64(count) > uint64(limit) {
		return nil, fmt.Errorf("%w: %d daily keys, limit %d", ErrTooMany, count, limit)
	}
	need := 4 + uint64(count)*DailyKeySize
	switch {
	case uint64(len(data)) < need:
		return nil, fmt.Errorf("%w: %d daily keys need %d bytes, got %d", ErrTruncated, count, need, len(data))
	case uint64(len(data)) > need:
		return nil, fmt.Errorf("%w: %d bytes after %d daily keys", ErrTrailing, uint64(len(data))-need, count)
	}
	keys := make([]DailyKey, count)
	for i := range keys {
		b := data[4+i*DailyKeySize:]
		keys[i] = decodeKey(b)
		if err := keys[i].check(); err != nil {
			clear(keys)
			return nil, fmt.Errorf("%w (key %d)", err, i)
		}
	}
	return keys, nil
}
