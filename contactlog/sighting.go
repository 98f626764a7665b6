// Package contactlog records, on a device, what it heard of other devices,
// and encodes what it sends the conftrace backend: its own daily keys and
// those sightings.
//
// A [Sighting] records one encounter interval from one side: the Rolling
// Proximity Identifier (RPI, see package enid) this device heard, the
// interval in which it heard it, for how many minutes, and how strong the
// signal was (its attenuation). The RPI this device was broadcasting at the
// time is not recorded: it follows from the device's daily key for that
// interval, so a device proves it rather than claims it. When A hears C and
// C hears A, A records a sighting of C's RPI and C one of A's; the backend,
// given each device's daily keys, derives each side's own RPI and finds the
// mirror pair (reciprocal matching), or, where the attested policy allows,
// finds that a sighted RPI derives from an infected user's daily key
// (one-sided matching, as Google/Apple Exposure Notification phones do).
//
// A [Report] is what a device sends in an upload or an exposure check: its
// daily keys ([DailyKey], GAEN's Temporary Exposure Keys with their rolling
// start and period) and its sightings of the window. Every sighting must
// fall in the validity of one of the report's keys, and no two keys may
// overlap; [Report.Check] and [ParseReport] enforce that, so a device can
// check what it sends with the same code that the backend refuses it with.
//
// A [Log] keeps a device's sightings in one file, encrypted and
// authenticated with a 32-byte device key that the app keeps in the
// platform keystore: the log says who the user met and when, which is
// exactly what an attacker who copies the phone's storage or a backup must
// not learn, and a modified file must not silently change what the app
// sends.
//
//	cl, err := contactlog.Open(ctx, path, deviceKey, nil)
//	...
//	err = cl.Append(ctx, sightings...)
//	err = cl.Prune(ctx, time.Now())
//	r := contactlog.Report{Keys: keys, Sightings: cl.Sightings(from, to)}
//	body, err := r.AppendBinary(nil)
//
// # Wire format
//
// A report (version 3) is
//
//	version (1 byte, = 3) || key count (1) || count × (key || sighting count (2, big-endian)) ||
//	the keys' sightings, key by key in the order of the keys
//
// a key is DailyKeySize (21) bytes:
//
//	TEK (16) || rolling start interval (4, big-endian) || rolling period (1)
//
// and a sighting is ReportSightingSize (11) bytes:
//
//	heard RPI's first RPIPrefixSize (8) bytes || interval, as an offset from its key's rolling start (1) ||
//	minutes (1) || attenuation in dB (1)
//
// A sighting belongs to the key valid in its interval, so the offset is
// less than the key's rolling period and one byte holds it. Only a prefix
// of the heard RPI is sent, which halves a report: the backend compares
// prefixes of the same length on both sides of every match, and a
// collision of two random 8-byte prefixes is too rare to matter (see
// [RPIPrefixSize] for the arithmetic, and why a forged claim still needs
// its victim's identifier). The counts make truncation detectable, and the fixed
// sizes let a receiver check the whole length before it allocates
// anything. Versions 1 (bare own/heard RPI pairs that nothing proved) and
// 2 (whole heard RPIs and intervals, 22 bytes a sighting) were never
// released and are refused.
//
// [Log] files, which never leave the device, keep whole RPIs: a sighting
// there is SightingSize (22) bytes, as [Sighting.MarshalBinary] encodes
// it:
//
//	heard RPI (16) || interval (4, big-endian) || minutes (1) || attenuation in dB (1)
package contactlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/conftrace/conftrace/enid"
)

// SightingSize is the size of one sighting as [Sighting.MarshalBinary]
// encodes it and a [Log] file stores it: with its whole heard RPI and
// interval. A report sends less of it ([ReportSightingSize]).
const SightingSize = 16 + 4 + 1 + 1

// MaxMinutes is the longest a sighting can last, in minutes. A device
// changes its RPI every 10 to 20 minutes, so one RPI cannot be heard for
// long; an hour leaves room for late rotation while refusing nonsense.
const MaxMinutes = 60

// Errors returned when decoding sightings and reports. Each is returned
// wrapped with details; test for them with errors.Is.
var (
	// ErrTruncated means the input ended before the encoding did.
	ErrTruncated = errors.New("contactlog: truncated input")
	// ErrTrailing means bytes followed the end of the encoding.
	ErrTrailing = errors.New("contactlog: trailing bytes")
	// ErrVersion means an encoding version this package does not know.
	ErrVersion = errors.New("contactlog: unsupported version")
	// ErrTooMany means more keys or sightings than the receiver accepts,
	// or than a report can carry.
	ErrTooMany = errors.New("contactlog: too many keys or sightings")
	// ErrInvalid means a field is out of range: a sighting of no minutes
	// or more than MaxMinutes, a rolling period outside 1..144, a
	// report's sighting whose offset lies past its key's rolling period.
	ErrInvalid = errors.New("contactlog: invalid key or sighting")
	// ErrOverlap means two daily keys of one report are valid at the same
	// time, or repeat each other.
	ErrOverlap = errors.New("contactlog: overlapping daily keys")
	// ErrUncovered means a sighting falls in the validity of none of the
	// report's daily keys, so the device's own RPI at that time is unknown.
	ErrUncovered = errors.New("contactlog: sighting covered by no daily key")
)

// Sighting records one interval of an encounter, as seen by the device that
// records it.
type Sighting struct {
	// Heard is the RPI this device heard from the other device. A report
	// carries only its first RPIPrefixSize bytes: in one that ParseReport
	// decoded, the rest are zero (see RPIPrefix).
	Heard enid.RPI
	// Interval is the interval, by this device's clock, in which it heard
	// the RPI; the device's own RPI is the one its daily key gives for it.
	Interval enid.Interval
	// Minutes is how long the devices were in range during the sighting,
	// 1 to MaxMinutes.
	Minutes uint8
	// Attenuation is the signal loss in dB (transmit power minus received
	// signal strength); lower means closer.
	Attenuation uint8
}

// check reports whether the sighting's fields are in range.
func (s Sighting) check() error {
	if s.Minutes == 0 || s.Minutes > MaxMinutes {
		return fmt.Errorf("%w: a sighting of %d minutes, want 1 to %d", ErrInvalid, s.Minutes, MaxMinutes)
	}
	return nil
}

// AppendBinary appends the SightingSize-byte encoding of s to b. It fails
// only if s is invalid.
func (s Sighting) AppendBinary(b []byte) ([]byte, error) {
	if err := s.check(); err != nil {
		return b, err
	}
	b = append(b, s.Heard[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(s.Interval))
	return append(b, s.Minutes, s.Attenuation), nil
}

// MarshalBinary returns the SightingSize-byte encoding of s.
func (s Sighting) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, SightingSize))
}

// UnmarshalBinary decodes exactly one SightingSize-byte sighting into s. On
// error s is unchanged.
func (s *Sighting) UnmarshalBinary(data []byte) error {
	if len(data) < SightingSize {
		return fmt.Errorf("%w: a sighting needs %d bytes, got %d", ErrTruncated, SightingSize, len(data))
	}
	if len(data) > SightingSize {
		return fmt.Errorf("%w: %d bytes after a sighting", ErrTrailing, len(data)-SightingSize)
	}
	u := decodeSighting(data)
	if err := u.check(); err != nil {
		return err
	}
	*s = u
	return nil
}

// decodeSighting decodes the first SightingSize bytes of b, which the
// caller has checked are there.
func decodeSighting(b []byte) Sighting {
	return Sighting{
		Heard:       enid.RPI(b[0:16]),
		Interval:    enid.Interval(binary.BigEndian.Uint32(b[16:20])),
		Minutes:     b[20],
		Attenuation: b[21],
	}
}

// appendSightings appends a sighting count and the sightings.
func appendSightings(b []byte, ss []Sighting) ([]byte, error) {
	if uint64(len(ss)) > math.MaxUint32 {
		return b, fmt.Errorf("%w: %d sightings do not fit a count", ErrTooMany, len(ss))
	}
	orig := b
	b = binary.BigEndian.AppendUint32(b, uint32(len(ss)))
	var err error
	for i, s := range ss {
		if b, err = s.AppendBinary(b); err != nil {
			return orig, fmt.Errorf("%w (sighting %d)", err, i)
		}
	}
	return b, nil
}

// parseSightings decodes a sighting count and at most limit sightings
// from the start of data, and returns them with the rest of data. The count
// is checked against limit and against the length of data before anything
// is allocated.
func parseSightings(data []byte, limit int) ([]Sighting, []byte, error) {
	if len(data) < 4 {
		return nil, nil, fmt.Errorf("%w: the sighting count needs 4 bytes, got %d", ErrTruncated, len(data))
	}
	count := binary.BigEndian.Uint32(data)
	// A negative limit would convert to a huge uint64 and admit any count.
	if limit < 0 || uint64(count) > uint64(limit) {
		return nil, nil, fmt.Errorf("%w: %d sightings, limit %d", ErrTooMany, count, limit)
	}
	// uint64 so that count × SightingSize cannot overflow on 32-bit
	// platforms.
	need := 4 + uint64(count)*SightingSize
	if uint64(len(data)) < need {
		return nil, nil, fmt.Errorf("%w: %d sightings need %d bytes, got %d", ErrTruncated, count, need, len(data))
	}
	ss := make([]Sighting, count)
	for i := range ss {
		ss[i] = decodeSighting(data[4+i*SightingSize:])
		if err := ss[i].check(); err != nil {
			return nil, nil, fmt.Errorf("%w (sighting %d)", err, i)
		}
	}
	return ss, data[need:], nil
}
