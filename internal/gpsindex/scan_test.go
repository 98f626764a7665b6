package gpsindex

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/gps"
)

// TestWindow checks span.window against a plain search: the first point
// at or after from, whether from moves forward a little (the cached
// gallop), far, or back (a fresh search), on spans with repeated times.
func TestWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for range 2000 {
		n := r.IntN(300)
		pts := make([]point, n+2)
		for i := range pts {
			pts[i].t = uint32(r.IntN(3600))
		}
		slices.SortFunc(pts, func(a, b point) int { return int(a.t) - int(b.t) })
		// The span is pts[1:n+1] of a longer slice, as runs are slices
		// of a segment's points.
		s := newSpan(1, uint32(n+1))
		from := int64(r.IntN(200)) - 100
		for range 20 {
			switch r.IntN(4) {
			case 0:
				from -= int64(r.IntN(600))
			case 1:
				from += int64(r.IntN(3600))
			default:
				from += int64(r.IntN(300))
			}
			got := s.window(pts, from)
			want := uint32(1)
			for want < uint32(n+1) && int64(pts[want].t) < from {
				want++
			}
			if got != want {
				t.Fatalf("window of %d points from %d: %d, want %d", n, from, got, want)
			}
		}
	}
}

// TestPlainReach checks what scanPlain relies on. Every point of a cell
// that a search for points within dist visits is within searchReach of
// the fix; from a plain fix, such a point's latitude and longitude
// differ by less than clampE7 without wrapping, so the plain bound is
// lowerBound2. The default grid's searches are plain.
func TestPlainReach(t *testing.T) {
	def := gps.DefaultParams()
	x, err := New(def)
	if err != nil {
		t.Fatal(err)
	}
	if reach := searchReach(def.DistanceMeters, x.perCell); reach > plainReach {
		t.Fatalf("default grid reaches %v rad, beyond plainReach", reach)
	}
	r := rand.New(rand.NewPCG(4, 4))
	visited, plain := 0, 0
	for i := range 200_000 {
		dist := 1 + r.Float64()*79
		perCell := gps.EarthRadius / max(8*dist, minCellSize)
		reach := searchReach(dist, perCell)
		a := plainFix(r, i)
		b := away(r, a, r.Float64()*1.5*reach*gps.EarthRadius)
		q := query{pos: a, perLeaf: leavesPerAxis * perCell}
		q.setBound(dist)
		ua, ub := unit(a), unit(b)
		var cell [3]int64
		for k := range 3 {
			q.leaf[k] = ua[k] * perCell * leavesPerAxis
			cell[k] = int64(math.Floor(ub[k] * perCell)) // as item computes it
		}
		if q.boxGap2(cell, leavesPerAxis) > q.chord2 {
			continue // the search does not read b's cell
		}
		visited++
		if d := a.Distance(b); d > reach*gps.EarthRadius {
			t.Fatalf("%v to %v: %v m apart, beyond the reach of %v m (distance %v m, cells %v m)", a, b, d, reach*gps.EarthRadius, dist, gps.EarthRadius/perCell)
		}
		if reach > plainReach {
			continue
		}
		plain++
		dLat, dLon := int64(b.Lat)-int64(a.Lat), int64(b.Lon)-int64(a.Lon)
		if abs64(dLat) >= clampE7 || abs64(dLon) >= clampE7 {
			t.Fatalf("%v to %v: differences %d, %d reach clampE7", a, b, dLat, dLon)
		}
		q.cos2 = bandCos2(abs32(a.Lat)/bandWidth, latBoundFor(dist))
		dl := abs64(dLon)
		if got, want := uint64(dLat*dLat)*boundScale+q.cos2*uint64(dLon*dLon), q.lowerBound2(dLat, min(dl, 360*e7-dl)); got != want {
			t.Fatalf("%v to %v: plain bound %d, lowerBound2 %d", a, b, got, want)
		}
	}
	if visited < 40_000 || plain < 10_000 || plain == visited {
		t.Fatalf("only %d points in visited cells, %d of them with a plain grid", visited, plain)
	}
}

// plainFix returns a random position where fixes are plain: for i a
// multiple of 3 near plainLat, for i one more than a multiple of 3 near
// plainLon.
func plainFix(r *rand.Rand, i int) gps.Position {
	lat := (r.Float64()*2 - 1) * plainLat
	lon := (r.Float64()*2 - 1) * plainLon
	switch i % 3 {
	case 0:
		lat = float64(plainLat) - r.Float64()*5e5
	case 1:
		lon = -float64(plainLon) + r.Float64()*5e5
	}
	return gps.Position{Lat: int32(lat), Lon: int32(lon)}
}
