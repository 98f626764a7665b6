package gpsindex

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/conftrace/conftrace/gps"
)

// TestLowerBound checks what the scan relies on: a point within d metres
// of a device point never has a lower bound above skip2For(d), anywhere
// on the sphere, and the integer sum cannot overflow.
func TestLowerBound(t *testing.T) {
	if c := smallAngle / radPerE7; !(clampE7 <= c && c < clampE7+1) {
		t.Fatalf("clampE7 = %d, want smallAngle/radPerE7 = %v rounded down", clampE7, c)
	}
	if smallAngle*gps.EarthRadius < 2*gps.MaxDistance {
		t.Fatalf("smallAngle is %v m, below twice the largest distance", smallAngle*gps.EarthRadius)
	}
	hi, lo := bits.Mul64(clampE7*clampE7, boundScale)
	if _, carry := bits.Add64(lo, lo, 0); hi != 0 || carry != 0 {
		t.Fatal("2·clampE7²·boundScale overflows a uint64")
	}
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 300_000 {
		a := somewhere(r, i)
		b := away(r, a, r.Float64()*gps.MaxDistance)
		d := a.Distance(b)
		if d > gps.MaxDistance {
			continue
		}
		q := query{pos: a, cos2: bandCos2(abs32(a.Lat)/bandWidth, latBoundFor(d))}
		dl := abs64(int64(b.Lon) - int64(a.Lon))
		if m, skip := q.lowerBound2(int64(b.Lat)-int64(a.Lat), min(dl, 360*e7-dl)), skip2For(d); m > skip {
			t.Fatalf("%v to %v: %v m apart, bound %d above %d", a, b, d, m, skip)
		}
	}
}

// TestUpperBound checks what a fix within an episode relies on to skip the
// haversine: a candidate provenWithin is within the threshold by
// gps.Position.Distance, anywhere on the sphere, down to a hair beyond
// the threshold; and the bound is tight enough to prove most matches.
func TestUpperBound(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	proven, near := 0, 0
	for i := range 300_000 {
		a := somewhere(r, i)
		maxDist := 1 + r.Float64()*(gps.MaxDistance-1)
		// Half the points within a centimetre of the threshold.
		dist := r.Float64() * maxDist * 1.01
		if i%2 == 0 {
			dist = maxDist + (r.Float64()*2-1)*0.01
		}
		b := away(r, a, dist)
		latBound := latBoundFor(maxDist)
		band := abs32(a.Lat) / bandWidth
		q := query{pos: a, maxDist: maxDist, cos2: bandCos2(band, latBound), cosMax2: bandCosMax2(band, latBound)}
		q.setBound(maxDist)
		dl := abs64(int64(b.Lon) - int64(a.Lon))
		m := q.lowerBound2(int64(b.Lat)-int64(a.Lat), min(dl, 360*e7-dl))
		if m > q.skip2 {
			continue // never a candidate
		}
		d := a.Distance(b)
		if q.provenWithin(candidate{m: m, lat: b.Lat, lon: b.Lon}) {
			proven++
			if d > maxDist {
				t.Fatalf("%v to %v: %v m apart, proven within %v m", a, b, d, maxDist)
			}
		} else if d < maxDist*0.99 && abs32(a.Lat) < 80*e7 {
			t.Logf("%v to %v: %v m apart, not proven within %v m", a, b, d, maxDist)
			near++
		}
	}
	// Below 80°, where cos φ changes little over a band, only points
	// within a percent of the threshold may go unproven.
	if proven < 50_000 || near > 0 {
		t.Errorf("%d candidates proven within, %d within 99%% of the threshold not proven", proven, near)
	}
}

// somewhere returns a random position: for i a multiple of 3 near a
// pole, for i one more than a multiple of 3 near the antimeridian.
func somewhere(r *rand.Rand, i int) gps.Position {
	lat := r.Float64()*180 - 90
	lon := r.Float64()*360 - 180
	switch i % 3 {
	case 0:
		lat = math.Copysign(90-r.Float64()*0.05, lat)
	case 1:
		lon = math.Copysign(180-r.Float64()*0.05, lon)
	}
	return gps.Point{Lat: lat, Lon: lon}.Position()
}

// away returns a position about dist metres from a in a random
// direction: roughly, as its exact distance is what the tests use.
func away(r *rand.Rand, a gps.Position, dist float64) gps.Position {
	bearing := r.Float64() * 2 * math.Pi
	dLat := dist * math.Cos(bearing) / gps.EarthRadius / radPerE7
	dLon := dist * math.Sin(bearing) / gps.EarthRadius / radPerE7 / max(math.Cos(float64(a.Lat)*radPerE7), 1e-3)
	bLat := min(max(float64(a.Lat)+dLat, -90*e7), 90*e7)
	bLon := math.Mod(float64(a.Lon)+dLon+540*e7, 360*e7) - 180*e7
	return gps.Position{Lat: int32(bLat), Lon: int32(bLon)}
}
