package gps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// BinaryVersion is the version byte of the binary trace encoding.
const BinaryVersion = 1

// Errors of [ParseBinary] about the encoding itself; invalid values in a
// well-formed encoding are reported with the errors of [Trace.Validate].
var (
	ErrVersion      = errors.New("gps: unknown binary trace version")
	ErrTruncated    = errors.New("gps: binary trace truncated")
	ErrTrailing     = errors.New("gps: trailing bytes after binary trace")
	ErrNonCanonical = errors.New("gps: binary trace not in canonical form")
)

// maxEncodedAccuracy bounds the accuracy MarshalBinary encodes, in metres.
const maxEncodedAccuracy = 1e6

// MarshalBinary encodes t compactly, about 6 bytes a point for a trace
// sampled every minute or so:
//
//	version  byte (1)
//	count    uvarint
//	each point:
//	  time      first: zigzag varint of Unix seconds; then: uvarint of the increase
//	  lat, lon  zigzag varints of the change in 1e-7 degrees from the previous point (from 0 for the first)
//	  accuracy  uvarint, in decimetres
//
// Coordinates are rounded to 1e-7 degree and accuracy to 0.1 m, the
// resolution the parsers produce, so parsed traces survive a round trip
// exactly. It fails for traces that no parser would produce: coordinates
// out of range or not finite, decreasing times, negative or absurd
// accuracy.
func (t Trace) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+6*len(t))
	b = append(b, BinaryVersion)
	b = binary.AppendUvarint(b, uint64(len(t)))
	var prev Position
	for i, p := range t {
		if err := checkPoint(p, maxEncodedAccuracy); err != nil {
			return nil, &PointError{Index: i, Err: err}
		}
		if i == 0 {
			b = binary.AppendVarint(b, p.Time)
		} else {
			if p.Time < t[i-1].Time {
				return nil, &PointError{Index: i, Err: ErrOrder}
			}
			b = binary.AppendUvarint(b, uint64(p.Time-t[i-1].Time))
		}
		pos := p.Position()
		b = binary.AppendVarint(b, int64(pos.Lat)-int64(prev.Lat))
		b = binary.AppendVarint(b, int64(pos.Lon)-int64(prev.Lon))
		b = binary.AppendUvarint(b, uint64(math.Round(p.Accuracy*10)))
		prev = pos
	}
	return b, nil
}

// ParseBinary decodes a trace that [Trace.MarshalBinary] encoded and
// validates it against l. It refuses anything else: other versions,
// truncated input, trailing bytes, varints not in their shortest form,
// more than l.MaxPoints points.
func ParseBinary(b []byte, l Limits) (Trace, error) {
	l = l.withDefaults()
	d := decoder{b: b}
	if len(b) == 0 {
		return nil, ErrTruncated
	}
	if b[0] != BinaryVersion {
		return nil, fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	d.b = b[1:]
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(l.MaxPoints) {
		return nil, fmt.Errorf("%w: %d, at most %d", ErrTooManyPoints, n, l.MaxPoints)
	}
	// Every point takes at least 4 bytes: refuse before allocating.
	if n > uint64(len(d.b)/4) {
		return nil, fmt.Errorf("%w: %d points in %d bytes", ErrTruncated, n, len(d.b))
	}
	t := make(Trace, n)
	var lat, lon int64
	for i := range t {
		var tm int64
		if i == 0 {
			tm, err = d.varint()
		} else {
			var dt uint64
			dt, err = d.uvarint()
			tm = t[i-1].Time + int64(dt)
			if err == nil && (dt > math.MaxInt64/2 || tm < t[i-1].Time) {
				err = &PointError{Index: i, Err: fmt.Errorf("%w: time overflows", ErrTime)}
			}
		}
		var dLat, dLon int64
		var acc uint64
		if err == nil {
			dLat, err = d.varint()
		}
		if err == nil {
			dLon, err = d.varint()
		}
		if err == nil {
			acc, err = d.uvarint()
		}
		if err != nil {
			return nil, err
		}
		// Bound the sums so they cannot overflow; validation names the
		// out-of-range value.
		lat = max(min(lat+max(min(dLat, 1<<40), -1<<40), 1<<40), -1<<40)
		lon = max(min(lon+max(min(dLon, 1<<40), -1<<40), 1<<40), -1<<40)
		t[i] = Point{
			Time:     tm,
			Lat:      float64(lat) / e7,
			Lon:      float64(lon) / e7,
			Accuracy: float64(min(acc, 1<<53)) / 10,
		}
	}
	if len(d.b) > 0 {
		return nil, fmt.Errorf("%w: %d", ErrTrailing, len(d.b))
	}
	if err := t.validate(l, nil); err != nil {
		return nil, err
	}
	return t, nil
}

type decoder struct{ b []byte }

func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		return 0, ErrTruncated
	case n < 0:
		return 0, fmt.Errorf("%w: varint overflows 64 bits", ErrNonCanonical)
	case n > 1 && d.b[n-1] == 0:
		// A final zero byte adds nothing: a longer form than needed.
		return 0, fmt.Errorf("%w: varint not in shortest form", ErrNonCanonical)
	}
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) varint() (int64, error) {
	u, err := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x, err
}
