package gpsbench

import (
	"fmt"
	"hash/fnv"
	"math"
	"testing"

	"github.com/conftrace/conftrace/gps"
)

// traceHash sums a whole trace, to pin more than its ends.
func traceHash(tr gps.Trace) uint64 {
	h := fnv.New64a()
	for _, p := range tr {
		fmt.Fprintf(h, "%d,%x,%x;", p.Time, math.Float64bits(p.Lat), math.Float64bits(p.Lon))
	}
	return h.Sum64()
}

// TestCityUnchanged pins NewCity(1) to the traces it made before there
// were countries, so that benchmark figures stay comparable.
func TestCityUnchanged(t *testing.T) {
	c := NewCity(1)
	for _, tc := range []struct {
		name        string
		tr          gps.Trace
		n           int
		first, last gps.Point
		hash        uint64
	}{
		{"PatientDay(0, 0)", c.PatientDay(0, 0), 1440,
			gps.Point{Time: 1709251200, Lat: 46.5377804, Lon: 6.6620343},
			gps.Point{Time: 1709337540, Lat: 46.5377144, Lon: 6.6621718}, 0x8267b73adab02e96},
		{"Device(0)", c.Device(0), 4032,
			gps.Point{Time: 1709251200, Lat: 46.5318687, Lon: 6.6269508},
			gps.Point{Time: 1710460500, Lat: 46.531858, Lon: 6.6268559}, 0x5e69dc324b34ff02},
	} {
		if len(tc.tr) != tc.n {
			t.Fatalf("%s: %d fixes, want %d", tc.name, len(tc.tr), tc.n)
		}
		if tc.tr[0] != tc.first || tc.tr[len(tc.tr)-1] != tc.last {
			t.Errorf("%s: first %+v, last %+v; want %+v, %+v", tc.name, tc.tr[0], tc.tr[len(tc.tr)-1], tc.first, tc.last)
		}
		if h := traceHash(tc.tr); h != tc.hash {
			t.Errorf("%s: trace hash %#x, want %#x", tc.name, h, tc.hash)
		}
	}
	if h := traceHash(NewCountry(1, 1).Device(0)); h != 0x5e69dc324b34ff02 {
		t.Errorf("NewCountry(1, 1) is not NewCity(1): Device(0) hash %#x", h)
	}
}

func TestCountry(t *testing.T) {
	const towns, devices = 40, 2000
	c := NewCountry(1, towns)
	if len(c.towns) != towns {
		t.Fatalf("%d towns, want %d", len(c.towns), towns)
	}
	for i, a := range c.towns {
		if a.lat < countryLat0 || a.lat > countryLat1 || a.lon < countryLon0 || a.lon > countryLon1 {
			t.Errorf("town %d at %.4f, %.4f: outside the country", i, a.lat, a.lon)
		}
		for j := range i {
			b := c.towns[j]
			if d := gps.Distance(gps.Point{Lat: a.lat, Lon: a.lon}, gps.Point{Lat: b.lat, Lon: b.lon}); d < townGap {
				t.Errorf("towns %d and %d are %.0f m apart", j, i, d)
			}
		}
	}

	count := make([]int, towns)
	for i := range devices {
		count[c.person(deviceID(i)).town]++
	}
	used := 0
	for _, n := range count {
		if n > 0 {
			used++
		}
	}
	if used < 2 {
		t.Errorf("devices live in %d town(s): %v", used, count)
	}
	if count[0] <= count[towns-1] {
		t.Errorf("town 0 has %d devices, town %d has %d: want the first the biggest", count[0], towns-1, count[towns-1])
	}

	// Traces are drawn around their own town: every fix within the 6 km
	// square's half-diagonal (and some noise) of the centre.
	for i := range 8 {
		tw := c.towns[c.person(deviceID(i)).town]
		centre := gps.Point{Lat: tw.lat, Lon: tw.lon}
		for _, p := range c.Device(i) {
			if d := gps.Distance(centre, p); d > math.Sqrt2*cityHalf+50 {
				t.Fatalf("device %d: fix %+v is %.0f m from its town's centre", i, p, d)
			}
		}
	}
}

func TestCountryTooManyTowns(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	NewCountry(1, MaxTowns+1)
}
