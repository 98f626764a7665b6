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
const ReportVersion = 2

// DailyKeySize is the size of one encoded daily key.
const DailyKeySize = 16 + 4 + 1

// MaxKeys is the most daily keys a report can hold (its count is one byte).
const MaxKeys = math.MaxUint8

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
// daily keys and its sightings.
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
// no two keys valid at the same time, and every sighting in the validity of
// a key. It sorts r.Keys by Start.
func (r Report) Check() error {
	if len(r.Keys) > MaxKeys {
		return fmt.Errorf("%w: %d daily keys, at most %d", ErrTooMany, len(r.Keys), MaxKeys)
	}
	for i, k := range r.Keys {
		if err := k.check(); err != nil {
			return fmt.Errorf("%w (key %d)", err, i)
		}
	}
	slices.SortFunc(r.Keys, func(a, b DailyKey) int { return cmp.Compare(a.Start, b.Start) })
	for i := 1; i < len(r.Keys); i++ {
		if r.Keys[i].Start < r.Keys[i-1].End() {
			return fmt.Errorf("%w: a key valid from interval %d overlaps one valid from %d to %d", ErrOverlap, r.Keys[i].Start, r.Keys[i-1].Start, r.Keys[i-1].End())
		}
	}
	for i, s := range r.Sightings {
		if err := s.check(); err != nil {
			return fmt.Errorf("%w (sighting %d)", err, i)
		}
		if r.Covering(s.Interval) < 0 {
			return fmt.Errorf("%w: sighting %d at interval %d", ErrUncovered, i, s.Interval)
		}
	}
	return nil
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

// AppendBinary appends the encoding of r to b. It fails if r is not well
// formed (see Check), and, like Check, sorts r.Keys in place.
func (r Report) AppendBinary(b []byte) ([]byte, error) {
	if err := r.Check(); err != nil {
		return b, err
	}
	orig := b
	b = append(b, ReportVersion, byte(len(r.Keys)))
	for _, k := range r.Keys {
		b = append(b, k.TEK[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(k.Start))
		b = append(b, k.Period)
	}
	b, err := appendSightings(b, r.Sightings)
	if err != nil {
		return orig, err
	}
	return b, nil
}

// ParseReport decodes a report and checks that it is well formed. data must
// be exactly one report: truncated input (ErrTruncated), trailing bytes
// (ErrTrailing), another version (ErrVersion), more keys or sightings than
// lim allows (ErrTooMany), a field out of range (ErrInvalid), overlapping
// keys (ErrOverlap) and a sighting no key covers (ErrUncovered) are each
// refused with their own error. Nothing is allocated before the counts are
// checked against lim and the length of data, so lim bounds the memory an
// untrusted sender can make the caller use. The keys come back sorted by
// Start.
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
	rest := data[2:]
	if len(rest) < nk*DailyKeySize {
		return Report{}, fmt.Errorf("%w: %d daily keys need %d bytes, got %d", ErrTruncated, nk, nk*DailyKeySize, len(rest))
	}
	r := Report{Keys: make([]DailyKey, nk)}
	for i := range r.Keys {
		b := rest[i*DailyKeySize:]
		r.Keys[i] = DailyKey{
			TEK:    enid.TEK(b[0:16]),
			Start:  enid.Interval(binary.BigEndian.Uint32(b[16:20])),
			Period: b[20],
		}
	}
	ss, rest, err := parseSightings(rest[nk*DailyKeySize:], lim.MaxSightings)
	if err != nil {
		clear(r.Keys)
		return Report{}, err
	}
	r.Sightings = ss
	if len(rest) > 0 {
		r.Clear()
		return Report{}, fmt.Errorf("%w: %d bytes after a report", ErrTrailing, len(rest))
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
		b = append(b, k.TEK[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(k.Start))
		b = append(b, k.Period)
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
		keys[i] = DailyKey{TEK: enid.TEK(b[0:16]), Start: enid.Interval(binary.BigEndian.Uint32(b[16:20])), Period: b[20]}
		if err := keys[i].check(); err != nil {
			clear(keys)
			return nil, fmt.Errorf("%w (key %d)", err, i)
		}
	}
	return keys, nil
}
