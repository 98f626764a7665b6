package population

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/gps"
)

// sameTraceAnswer reports whether the backend's answer resp is what the
// brute force's episodes eps say, with thresholds p, in everything the
// answer carries: whether the device was exposed and on which UTC day the
// last episode at which 24 hours of episodes reach the minimum began, and,
// only if the answers are detailed, the episodes themselves.
func sameTraceAnswer(resp api.TraceCheckResponse, eps []gps.Episode, p gps.Params, detailed bool) bool {
	last := ""
	if e, ok := gps.LastExposure(eps, p); ok {
		last = time.Unix(e.Start, 0).UTC().Format(api.DateLayout)
	}
	if resp.Exposed != (last != "") || resp.LastExposure != last {
		return false
	}
	if !detailed {
		return len(resp.Episodes) == 0 && !resp.Truncated
	}
	return sameEpisodes(resp, eps)
}

// sameEpisodes reports whether the backend's episodes are the brute
// force's, at the backend's rounding to 0.1 and its MaxEpisodes cap.
func sameEpisodes(resp api.TraceCheckResponse, eps []gps.Episode) bool {
	n := min(len(eps), api.MaxEpisodes)
	if len(resp.Episodes) != n || resp.Truncated != (len(eps) > n) {
		return false
	}
	for k, e := range resp.Episodes {
		want := eps[k]
		if e.Start != want.Start || e.End != want.End ||
			e.Minutes != math.Round(want.Minutes*10)/10 || e.ClosestMeters != math.Round(want.Closest*10)/10 {
			return false
		}
	}
	return true
}

// truth computes gps.BruteForce of device traces against the uploaded
// fixes of the retention window. Calling it on whole traces would compare
// every device fix with a million patient fixes; instead it hands
// gps.BruteForceMatches, per device fix, only the patient fixes of the
// grid cells around it within the time tolerance. The cells are wider than
// the distance threshold by a safety factor, so the fixes left out are
// all farther than the threshold and the result is the brute force's
// exactly (TestTruthIsBruteForce checks it). The grid is a plain
// latitude/longitude grid: fine for a city far from the poles and the
// antimeridian, which is all the simulator has.
type truth struct {
	params           gps.Params
	tol              int64
	latHalf          float64 // E7 units of latitude that the threshold spans, with margin
	latCell, lonCell int64   // E7 units
	cells            map[[2]int64][]gps.Point
}

// metresPerE7 is the length of 1e-7 degree of latitude, in metres.
const metresPerE7 = metresPerDegree / 1e7

// newTruth indexes the fixes of days first and later, for a city around
// latitude lat.
func newTruth(params gps.Params, days map[int][]gps.Point, first int, lat float64) *truth {
	t := &truth{params: params, tol: params.ToleranceSeconds(), cells: map[[2]int64][]gps.Point{}}
	t.latHalf = (params.DistanceMeters*1.001 + 0.01) / metresPerE7
	t.latCell = int64(math.Ceil(4 * t.latHalf))
	t.lonCell = int64(math.Ceil(4 * t.lonHalf(lat)))
	for k, pts := range days {
		if k < first {
			continue
		}
		for _, p := range pts {
			key := t.cell(p.Position())
			t.cells[key] = append(t.cells[key], p)
		}
	}
	for _, pts := range t.cells {
		slices.SortStableFunc(pts, func(a, b gps.Point) int { return cmp.Compare(a.Time, b.Time) })
	}
	return t
}

// lonHalf returns the E7 units of longitude that the threshold can span
// around latitude lat (degrees): the latitude span over the cosine of the
// highest latitude the span reaches, with margin.
func (t *truth) lonHalf(lat float64) float64 {
	top := min(89.9, math.Abs(lat)+t.latHalf/1e7)
	return t.latHalf / math.Cos(top*math.Pi/180) * 1.001
}

func (t *truth) cell(p gps.Position) [2]int64 {
	return [2]int64{floorDiv(int64(p.Lat), t.latCell), floorDiv(int64(p.Lon), t.lonCell)}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// episodes returns gps.BruteForce(device, uploaded fixes, params).
func (t *truth) episodes(device gps.Trace) []gps.Episode {
	matches := make([]gps.Match, len(device))
	var cands gps.Trace
	for j, p := range device {
		pos := p.Position()
		lonHalf := t.lonHalf(p.Lat)
		lo := t.cell(gps.Position{Lat: int32(math.Floor(float64(pos.Lat) - t.latHalf)), Lon: int32(math.Floor(float64(pos.Lon) - lonHalf))})
		hi := t.cell(gps.Position{Lat: int32(math.Ceil(float64(pos.Lat) + t.latHalf)), Lon: int32(math.Ceil(float64(pos.Lon) + lonHalf))})
		cands = cands[:0]
		for a := lo[0]; a <= hi[0]; a++ {
			for b := lo[1]; b <= hi[1]; b++ {
				pts := t.cells[[2]int64{a, b}]
				k, _ := slices.BinarySearchFunc(pts, p.Time-t.tol, func(q gps.Point, tm int64) int { return cmp.Compare(q.Time, tm) })
				for ; k < len(pts) && pts[k].Time <= p.Time+t.tol; k++ {
					cands = append(cands, pts[k])
				}
			}
		}
		if len(cands) > 0 {
			matches[j] = gps.BruteForceMatches(device[j:j+1], []gps.Trace{cands}, t.params)[0]
		}
	}
	return gps.Episodes(device, matches, t.params)
}
