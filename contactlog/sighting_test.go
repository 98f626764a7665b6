package contactlog

import (
	"bytes"
	"encoding"
	"encoding/hex"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/enid"
)

var (
	_ encoding.BinaryAppender    = Sighting{}
	_ encoding.BinaryMarshaler   = Sighting{}
	_ encoding.BinaryUnmarshaler = (*Sighting)(nil)
)

func randomSighting(r *rand.Rand) Sighting {
	var s Sighting
	for i := range s.Heard {
		s.Heard[i] = byte(r.Uint32())
	}
	s.Interval = enid.Interval(r.Uint32())
	s.Minutes = uint8(1 + r.IntN(MaxMinutes))
	s.Attenuation = uint8(r.Uint32())
	return s
}

// randomSightings returns n valid sightings, the same for the same seed.
func randomSightings(seed uint64, n int) []Sighting {
	r := rand.New(rand.NewPCG(seed, 1))
	ss := make([]Sighting, n)
	for i := range ss {
		ss[i] = randomSighting(r)
	}
	return ss
}

// allErrors lists the decoding errors, to check that each failure matches
// its own error and no other.
var allErrors = []error{ErrTruncated, ErrTrailing, ErrVersion, ErrTooMany, ErrInvalid, ErrOverlap, ErrUncovered}

func checkOnly(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	for _, other := range allErrors {
		if other != want && errors.Is(err, other) {
			t.Errorf("error %v also matches %v", err, other)
		}
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSightingEncoding(t *testing.T) {
	s := Sighting{
		Heard:       enid.RPI{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f},
		Interval:    2642976,
		Minutes:     MaxMinutes,
		Attenuation: 73,
	}
	// Written out by hand from the package doc, so that a change of the
	// layout, which other implementations rely on, fails here.
	want := unhex(t, "000102030405060708090a0b0c0d0e0f"+ // heard RPI
		"00285420"+ // interval 2642976, big-endian
		"3c"+ // 60 minutes
		"49") // 73 dB
	if SightingSize != len(want) || MaxMinutes != 60 {
		t.Fatalf("SightingSize %d, MaxMinutes %d: the documented format says 22 and 60", SightingSize, MaxMinutes)
	}
	b, err := s.MarshalBinary()
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("MarshalBinary = %x, %v; want %x", b, err, want)
	}
	var got Sighting
	if err := got.UnmarshalBinary(want); err != nil || got != s {
		t.Fatalf("UnmarshalBinary = %+v, %v; want %+v", got, err, s)
	}
	prefix := []byte("xy")
	app, err := s.AppendBinary(prefix)
	if err != nil || !bytes.Equal(app[:2], prefix) || !bytes.Equal(app[2:], want) {
		t.Errorf("AppendBinary(%q) = %x, %v; want the prefix then the encoding", prefix, app, err)
	}
}

func TestSightingRoundTrip(t *testing.T) {
	edges := []Sighting{
		{Minutes: 1},
		{Heard: enid.RPI{0: 0xff, 15: 0xff}, Interval: math.MaxUint32, Minutes: MaxMinutes, Attenuation: math.MaxUint8},
	}
	for _, s := range append(edges, randomSightings(1, 100)...) {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary(%+v): %v", s, err)
		}
		var got Sighting
		if err := got.UnmarshalBinary(b); err != nil || got != s {
			t.Fatalf("%+v round-tripped to %+v, %v", s, got, err)
		}
	}
}

func TestSightingErrors(t *testing.T) {
	good, err := randomSightings(2, 1)[0].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	withMinutes := func(m byte) []byte {
		b := slices.Clone(good)
		b[20] = m
		return b
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"one short", good[:SightingSize-1], ErrTruncated},
		{"one long", append(slices.Clone(good), 0), ErrTrailing},
		{"two sightings", append(slices.Clone(good), good...), ErrTrailing},
		{"zero minutes", withMinutes(0), ErrInvalid},
		{"one minute too many", withMinutes(MaxMinutes + 1), ErrInvalid},
		{"255 minutes", withMinutes(math.MaxUint8), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := Sighting{Attenuation: 9}
			s := orig
			checkOnly(t, s.UnmarshalBinary(tt.data), tt.want)
			if s != orig {
				t.Error("UnmarshalBinary changed the sighting despite an error")
			}
		})
	}
	for _, m := range []uint8{0, MaxMinutes + 1} {
		s := Sighting{Minutes: m}
		if _, err := s.MarshalBinary(); !errors.Is(err, ErrInvalid) {
			t.Errorf("MarshalBinary of %d minutes: %v, want ErrInvalid", m, err)
		}
		prefix := []byte("keep")
		if b, err := s.AppendBinary(prefix); !errors.Is(err, ErrInvalid) || !bytes.Equal(b, prefix) {
			t.Errorf("AppendBinary of %d minutes = %q, %v; want the input %q and ErrInvalid", m, b, err, prefix)
		}
	}
}

func FuzzSightingUnmarshalBinary(f *testing.F) {
	good, _ := randomSightings(5, 1)[0].MarshalBinary()
	f.Add(good)
	f.Add(good[:20])
	f.Add(append(slices.Clone(good), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Sighting
		err := s.UnmarshalBinary(data)
		// The length alone decides between the three refusals.
		switch {
		case len(data) < SightingSize:
			checkOnly(t, err, ErrTruncated)
		case len(data) > SightingSize:
			checkOnly(t, err, ErrTrailing)
		case data[20] == 0 || data[20] > MaxMinutes:
			checkOnly(t, err, ErrInvalid)
		case err != nil:
			t.Fatalf("a well-formed sighting %x refused: %v", data, err)
		}
		if err != nil {
			if s != (Sighting{}) {
				t.Fatal("UnmarshalBinary changed the sighting despite an error")
			}
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding a decoded sighting: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("decode then encode changed %x into %x", data, again)
		}
	})
}
