package gpsindex

import (
	"math"

	"github.com/conftrace/conftrace/gps"
)

// candidate is an indexed point that passed the lower bound.
type candidate struct {
	m        uint64 // lowerBound2
	lat, lon int32
}

// maxCandidates bounds the scratch space of a query: when that many
// candidates are waiting, they are settled before the scan goes on.
const maxCandidates = 1024

// scan adds the points of pts up to time to that pass the lower bound to
// the candidates. Most points fail it: the loop only computes bounds, and
// take, kept out of line, handles the rest, so that the loop's registers
// hold its own values rather than take's constants.
func (q *query) scan(pts []point, to int64) {
	if q.plain {
		q.scanPlain(pts, to)
		return
	}
	lat, lon := int64(q.pos.Lat), int64(q.pos.Lon)
	for _, pt := range pts {
		if int64(pt.t) > to {
			break
		}
		dLon := abs64(int64(pt.lon) - lon)
		dLon = min(dLon, 360*e7-dLon)
		if m := q.lowerBound2(int64(pt.lat)-lat, dLon); m <= q.skip2 {
			q.take(candidate{m: m, lat: pt.lat, lon: pt.lon})
		}
	}
}

// scanPlain is scan for a plain fix (see plainReach): the differences of
// every point it reads are below clampE7 and do not wrap around the
// antimeridian, so lowerBound2 is the same without its clamps and wrap,
// and this shorter loop computes the same bounds.
func (q *query) scanPlain(pts []point, to int64) {
	lat, lon, cos2, skip2 := int64(q.pos.Lat), int64(q.pos.Lon), q.cos2, q.skip2
	for _, pt := range pts {
		if int64(pt.t) > to {
			break
		}
		dLat, dLon := int64(pt.lat)-lat, int64(pt.lon)-lon
		if m := uint64(dLat*dLat)*boundScale + cos2*uint64(dLon*dLon); m <= skip2 {
			q.take(candidate{m: m, lat: pt.lat, lon: pt.lon})
			skip2 = q.skip2
		}
	}
}

// A fix is plain when every point its search can read is within
// plainReach radians of it, and it lies within plainLat of the equator
// and plainLon of the prime meridian. A point that close differs from
// it by under plainReach (57,296 E7 units) in latitude and by under
// 2·asin(sin(plainReach/2)/cos(80.006°)) < 5.8e-4 rad (330,000 E7 units)
// in longitude: both below clampE7, and the point's longitude is within
// ±179.04°, so the difference does not wrap. The default grid's reach
// is 2.3e-5 rad (149 m).
const (
	plainReach = 1e-4
	plainLat   = 80 * e7
	plainLon   = 179 * e7
)

// searchReach returns an upper bound, in radians, of the angle between
// a fix and any point of the cells a search for points within dist
// metres visits: their boxes are within the bound's chord of the fix
// (see search; the bound never exceeds dist), and a point is within its
// box's diagonal of the box. The angle of a chord c is 2·asin(c/2), at
// most 1.001·c for the chords that matter here (under 0.1).
func searchReach(dist, perCell float64) float64 {
	chord := (dist+skipMargin)/gps.EarthRadius + leafMargin/(leavesPerAxis*perCell) + math.Sqrt(3)/perCell
	return 1.001 * chord
}

// take adds a candidate that passed the lower bound.
//
//go:noinline
func (q *query) take(c candidate) {
	if !q.matched && q.epBest < q.maxDist && q.provenWithin(c) {
		// The episode's closest distance so far is known: the rest of
		// the search looks only for points closer than it.
		q.matched = true
		q.setBound(q.epBest)
		if c.m > q.skip2 {
			return
		}
	}
	q.cands = append(q.cands, c)
	if len(q.cands) == maxCandidates {
		q.settle()
	}
}

// settle computes the exact distances the waiting candidates need and
// updates best and the bounds. Most runs and leaves leave none waiting:
// settle is small enough to be inlined, so that they pay no call.
func (q *query) settle() {
	if len(q.cands) > 0 {
		q.settleCands()
	}
}

func (q *query) settleCands() {
	first := 0
	for i, c := range q.cands {
		if c.m < q.cands[first].m {
			first = i
		}
	}
	// Unless the scan proved the fix matched (and dropped the bound to
	// the episode's closest), the least bound is computed in any case.
	if !q.matched || q.cands[first].m <= q.skip2 {
		q.exact(q.cands[first])
	}
	for i, c := range q.cands {
		if i != first && c.m <= q.skip2 {
			q.exact(c)
		}
	}
	q.cands = q.cands[:0]
}

// exact computes a candidate's distance as the brute force does.
func (q *query) exact(c candidate) {
	if dist := q.pos.Distance(gps.Position{Lat: c.lat, Lon: c.lon}); dist <= q.maxDist && dist < q.best {
		q.best, q.matched = dist, true
		q.setBound(min(dist, q.epBest))
	}
}
