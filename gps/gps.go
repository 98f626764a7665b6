// Package gps reads location traces and defines, exactly, when two traces
// count as an exposure.
//
// A hospital uploads the GPS trace of an infected patient; a phone sends its
// own trace and learns whether, and when, it was near one of those patients
// at about the same time. This package is what both sides share: the
// [Point] and [Trace] types, parsers for the files people actually have
// (CSV with [ParseCSV], GPX with [ParseGPX]), a compact binary form for the
// wire ([Trace.MarshalBinary], [ParseBinary]), the validation every trace
// goes through ([Trace.Validate]), and the matching rule itself
// ([BruteForce]).
//
//	tr, err := gps.ParseCSV(f, gps.Limits{})       // time,lat,lon[,accuracy]
//	wire, err := tr.MarshalBinary()                // about 6 bytes a point
//	eps := gps.BruteForce(tr, infected, gps.DefaultParams())
//	exposed := gps.Exposed(eps, gps.DefaultParams())
//
// # The matching rule
//
// Positions are compared at a resolution of 1e-7 degree (about 1.1 cm,
// far below GPS accuracy): every parser rounds coordinates to it, and
// matching rounds again ([Point.Position]), so every implementation sees
// the same integers. A device point p matches an infected point q when
//
//	|p.Time − q.Time| ≤ Params.TimeTolerance  and  Distance(p, q) ≤ Params.DistanceMeters
//
// where [Position.Distance] is the haversine great-circle distance on a
// sphere of radius [EarthRadius] (6,371,008.8 m, the mean radius of the
// WGS 84 ellipsoid), computed from exact integer coordinate differences so
// that it stays accurate at the poles and across the antimeridian. The
// spherical model is off by up to 0.5 % from the ellipsoid, 5 cm at 10 m:
// negligible beside GPS error. The reported positions are compared as they
// are; a point's Accuracy is checked at input (see [Limits]) but does not
// widen or narrow the threshold, because an accuracy radius is a
// confidence estimate, not a bound, and inflating distances by it would
// turn a 10 m rule into a 60 m one indoors.
//
// [BruteForceMatches] applies the rule to every pair of points: it is the
// reference that the backend's index must reproduce bit for bit. [Episodes]
// then groups matched device points into episodes (maximal runs of
// consecutive matched points of the device trace, no two more than
// Params.MaxGap apart), and [Exposed] says whether they add up to an
// exposure: Params.MinMinutes within 24 hours, the way public-health
// agencies define a close contact ("a cumulative total of 15 minutes or
// more over a 24-hour period").
//
// # Defaults
//
// [DefaultParams] is 10 m, ±5 minutes, 15 cumulative minutes, with gaps
// up to 10 minutes inside an episode. 10 m is about the accuracy of a
// phone's GPS in a street (consumer receivers achieve 3 to 5 m under open
// sky, much worse between buildings); a tighter threshold such as the
// decentriq prototype's ±3 m only measures noise and misses real
// encounters, a wider one flags whole buildings. ±5 minutes lets a phone
// that records one fix every 5 minutes be compared with a patient trace
// sampled every minute, and covers air that lingers after someone leaves;
// the decentriq prototype's ±30 s would need both phones to sample every
// few seconds. PathCheck Safe Paths used the same 10 m and 5-minute scale,
// but approximately (8-character geohash cells of about 38 m × 19 m and
// fixed 5-minute buckets, which both miss pairs that straddle a cell or
// bucket edge and admit pairs 40 m apart); here the thresholds are exact.
// 15 minutes is the close-contact duration of the CDC and ECDC.
package gps

import (
	"math"
	"time"
)

// EarthRadius is the radius, in metres, of the sphere on which distances
// are computed: the mean radius of the WGS 84 ellipsoid.
const EarthRadius = 6_371_008.8

// Point is one location fix.
type Point struct {
	// Time is when the fix was taken, in Unix seconds (UTC). GPS fixes
	// are taken at most about once a second; parsers truncate finer times.
	Time int64
	// Lat and Lon are the WGS 84 latitude in [-90, 90] and longitude in
	// [-180, 180], in degrees. Parsers round them to 1e-7 degree.
	Lat, Lon float64
	// Accuracy is the radius of the fix's 68 % confidence circle in
	// metres, as phones report it; 0 means unknown.
	Accuracy float64
}

// Trace is a sequence of fixes in time order. Equal timestamps are
// allowed (several sources reporting the same second); decreasing ones
// are not.
type Trace []Point

// Position is a location in units of 1e-7 degree (E7), the resolution at
// which traces are compared.
type Position struct {
	Lat, Lon int32
}

// e7 is the number of E7 units in a degree.
const e7 = 1e7

// radPerE7 converts E7 units to radians.
const radPerE7 = math.Pi / 180 / e7

// Position returns p's coordinates rounded to the nearest 1e-7 degree.
// The coordinates must be within range (see [Trace.Validate]); out-of-range
// or non-finite values give an unspecified Position.
func (p Point) Position() Position {
	return Position{Lat: roundE7(p.Lat), Lon: roundE7(p.Lon)}
}

func roundE7(deg float64) int32 {
	// math.Round, by way of Trunc, which compiles to one instruction on
	// CPUs with SSE4.1 where Round takes a dozen: every fix of every
	// check is rounded (callgrind: 66 to 50 instructions a fix's Position).
	// v−t is exact, and Trunc(2(v−t)) is ±1 exactly when |v−t| ≥ ½.
	v := deg * e7
	t := math.Trunc(v)
	v = t + math.Trunc(2*(v-t))
	if !(v >= math.MinInt32 && v <= math.MaxInt32) { // also catches NaN
		return 0
	}
	return int32(v)
}

// round7 rounds degrees to the nearest 1e-7, the value Position gives back.
func round7(deg float64) float64 { return float64(roundE7(deg)) / e7 }

// Distance returns the great-circle distance between a and b in metres,
// computed with the haversine formula on a sphere of radius [EarthRadius].
// The coordinate differences are taken exactly, in integers, before any
// rounding, so two points a few centimetres apart on either side of the
// antimeridian or near a pole are a few centimetres apart.
//
// Distance is the one function every matcher must use: the rule "within
// DistanceMeters" is defined on its result.
func (a Position) Distance(b Position) float64 {
	dLat := float64(int64(b.Lat)-int64(a.Lat)) * radPerE7
	dLon := float64(int64(b.Lon)-int64(a.Lon)) * radPerE7
	s1 := math.Sin(dLat / 2)
	s2 := math.Sin(dLon / 2) // sin² has period π: a 360° difference is 0
	h := s1*s1 + math.Cos(float64(a.Lat)*radPerE7)*math.Cos(float64(b.Lat)*radPerE7)*s2*s2
	// Rounding can push h a hair outside [0, 1] near antipodes.
	h = min(max(h, 0), 1)
	return 2 * EarthRadius * math.Asin(math.Sqrt(h))
}

// Distance returns the great-circle distance between p and q in metres:
// p.Position().Distance(q.Position()).
func Distance(p, q Point) float64 { return p.Position().Distance(q.Position()) }

// At returns the fix's time as a [time.Time] in UTC.
func (p Point) At() time.Time { return time.Unix(p.Time, 0).UTC() }
