package gpsindex

import (
	"math"

	"github.com/conftrace/conftrace/gps"
)

// The exact distance (a haversine: four trigonometric functions, a square
// root and an arcsine) is the expensive step, so the scan computes only a
// lower bound for each point, in integer arithmetic and without
// unpredictable branches, and keeps the points that pass. For angles of
// at most smallAngle (radians), sin x ≥ x(1 − x²/6), so with
// hav(d) = hav(Δφ) + cos φ1 cos φ2 hav(Δλ), cos φ1 cos φ2 ≥ cos2, and
// hav increasing on [0, π] (which allows clamping Δφ and Δλ at
// smallAngle):
//
//	d² ≥ (1 − boundSlack)·(min(Δφ, smallAngle)² + cos2·min(Δλ, smallAngle)²)
//
// The scan computes the right-hand side's sum in units of
// radPerE7²/boundScale, from the differences in E7 units clamped at
// clampE7 (below smallAngle) and cos2 rounded down to a multiple of
// 1/boundScale: a lower bound of the sum, exactly, with no rounding.
// settle then computes the exact distance of the candidate with the least
// bound first, which is almost always the closest, and of the others only
// when their bound does not exclude them: usually none. The skip test adds
// skipMargin metres for the rounding of the haversine, so a point is
// dropped only when its computed distance could not have been within
// min(best, maxDist).
const (
	smallAngle = 0.001 // radians, about 6.4 km: above gps.MaxDistance
	boundSlack = 1e-4
	skipMargin = 1e-3 // metres
	// clampE7 is smallAngle in E7 units, rounded down.
	clampE7 = 572_957
	// boundScale keeps the sum within a uint64: 2·clampE7²·boundScale < 2^64.
	boundScale = 1 << 24
)

// skip2For returns the bound above which lowerBound2 excludes a point
// from being within bound metres, rounded up.
func skip2For(bound float64) uint64 {
	// Constant factors, which the compiler computes exactly and rounds
	// once: a division costs more than the rest of a setBound.
	const perMetre = 1 / gps.EarthRadius / radPerE7
	r := (bound + skipMargin) * perMetre
	return uint64(math.Ceil(r*r*(boundScale/(1-boundSlack)*(1+1e-9)))) + 1
}

// setBound sets skip2 and chord2 for points within bound metres. A leaf
// is skipped when the straight-line distance between unit vectors (the
// chord, never longer than the arc) from the point to the leaf's box
// exceeds the bound plus skipMargin plus leafMargin (which covers the
// rounding of unit vectors and leaf coordinates).
func (q *query) setBound(bound float64) {
	q.skip2 = skip2For(bound)
	r := (bound+skipMargin)*(1/gps.EarthRadius)*q.perLeaf + leafMargin
	q.chord, q.chord2 = r, r*r
}

// leafMargin is a distance in leaf edges (about 2e-7 m at the default
// grid) that absorbs the rounding of unit vectors and leaf coordinates:
// at most a few times 1e-10 leaf edges, as leaf coordinates are below
// 10^6 and computed with relative errors of about 1e-16.
const leafMargin = 1e-8

// lowerBound2 returns the lower bound of a point dLat and dLon (E7
// units, dLon wrapped into [0, 180°]) away from q, in units of
// radPerE7²/boundScale, provided the point's latitude is within the band
// cos2 was computed for; a point outside it has a bound above skip2
// through its latitude alone.
func (q *query) lowerBound2(dLat, dLon int64) uint64 {
	a := uint64(min(abs64(dLat), clampE7))
	b := uint64(min(dLon, clampE7))
	return a*a*boundScale + q.cos2*(b*b)
}

// provenWithin reports whether candidate c is certainly within maxDist:
// whether its computed distance would be at most maxDist. With
// hav(d) = sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2), sin x ≤ x and
// asin x ≤ x(1 + x²), d ≤ R·√(Δφ² + cosMax2·Δλ²)·(1 + 1e-6) at these
// distances; the test keeps skipMargin for the rounding of the
// haversine, and a relative 1e-6 for its own.
func (q *query) provenWithin(c candidate) bool {
	dLat := float64(int64(c.lat) - int64(q.pos.Lat))
	dl := abs64(int64(c.lon) - int64(q.pos.Lon))
	dLon := float64(min(dl, 360*e7-dl))
	lim := (q.maxDist - skipMargin) / gps.EarthRadius / radPerE7 / (1 + 2e-6)
	return dLat*dLat+q.cosMax2*dLon*dLon <= lim*lim
}

// latBoundFor returns how far, in E7 units of latitude, a point can be
// and still pass the lower bound for points within dist metres.
func latBoundFor(dist float64) int64 {
	delta := (dist + skipMargin) / gps.EarthRadius / math.Sqrt(1-boundSlack) * (1 + 1e-9)
	return int64(math.Ceil(delta/radPerE7)) + 1
}

// bandWidth is the width, in E7 units, of the latitude bands over which
// Query shares one cos².
const bandWidth = 100_000

// bandCos2 returns the cos2 of lowerBound2 for points in latitude band
// band (|latitude| / bandWidth), in units of 1/boundScale rounded down.
func bandCos2(band int32, latBound int64) uint64 {
	return uint64(cosFar2(min((band+1)*bandWidth, 90*e7), latBound) * boundScale)
}

// bandCosMax2 returns an upper bound of cos φ1·cos φ2 for a point in
// latitude band band and one at most latBound E7 units from it: cos² at
// the latitude nearest the equator either can have.
func bandCosMax2(band int32, latBound int64) float64 {
	near := float64(int64(band)*bandWidth-latBound) * radPerE7
	if near <= 0 {
		return 1
	}
	c := math.Cos(near)
	return c * c * (1 + 1e-12)
}

// cosFar2 returns cos² of the most poleward latitude a point at most
// latBound E7 units from the band edge can have, or 0 past the pole.
func cosFar2(edge int32, latBound int64) float64 {
	far := float64(int64(edge)+latBound) * radPerE7
	if far >= math.Pi/2 {
		return 0
	}
	c := math.Cos(far)
	return c * c
}
