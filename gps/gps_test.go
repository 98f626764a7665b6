package gps

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// chordDistance computes the great-circle distance another way: from the
// chord between unit vectors.
func chordDistance(a, b Position) float64 {
	v := func(p Position) [3]float64 {
		lat, lon := float64(p.Lat)*radPerE7, float64(p.Lon)*radPerE7
		return [3]float64{math.Cos(lat) * math.Cos(lon), math.Cos(lat) * math.Sin(lon), math.Sin(lat)}
	}
	u, w := v(a), v(b)
	c := math.Sqrt((u[0]-w[0])*(u[0]-w[0]) + (u[1]-w[1])*(u[1]-w[1]) + (u[2]-w[2])*(u[2]-w[2]))
	return 2 * EarthRadius * math.Asin(min(c/2, 1))
}

func TestDistanceKnown(t *testing.T) {
	arc := func(deg float64) float64 { return deg * math.Pi / 180 * EarthRadius }
	tests := []struct {
		name string
		a, b Point
		want float64
	}{
		{"same point", Point{Lat: 46.5, Lon: 6.6}, Point{Lat: 46.5, Lon: 6.6}, 0},
		{"one degree of meridian", Point{Lat: 10, Lon: 20}, Point{Lat: 11, Lon: 20}, arc(1)},
		{"one degree of equator", Point{Lat: 0, Lon: 20}, Point{Lat: 0, Lon: 21}, arc(1)},
		{"across the antimeridian", Point{Lat: 0, Lon: 179.9999999}, Point{Lat: 0, Lon: -179.9999999}, arc(2e-7)},
		{"180 and -180 are one meridian", Point{Lat: 12.3, Lon: 180}, Point{Lat: 12.3, Lon: -180}, 0},
		{"north pole, any longitude", Point{Lat: 90, Lon: 0}, Point{Lat: 90, Lon: 123.4}, 0},
		{"south pole, any longitude", Point{Lat: -90, Lon: -170}, Point{Lat: -90, Lon: 45}, 0},
		{"over the north pole", Point{Lat: 89.9999999, Lon: 0}, Point{Lat: 89.9999999, Lon: 180}, arc(2e-7)},
		{"pole to equator", Point{Lat: 90, Lon: 0}, Point{Lat: 0, Lon: 77}, arc(90)},
		{"antipodes", Point{Lat: 0, Lon: 0}, Point{Lat: 0, Lon: 180}, arc(180)},
		{"antipodes off the equator", Point{Lat: 30, Lon: 10}, Point{Lat: -30, Lon: -170}, arc(180)},
	}
	for _, tt := range tests {
		got := Distance(tt.a, tt.b)
		if math.Abs(got-tt.want) > 1e-6*max(1, tt.want/1e3) {
			t.Errorf("%s: Distance = %.9f m, want %.9f m", tt.name, got, tt.want)
		}
		if back := Distance(tt.b, tt.a); back != got {
			t.Errorf("%s: not symmetric: %v and %v", tt.name, got, back)
		}
	}
}

func TestDistanceAgreesWithChord(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		a := Position{Lat: int32(r.Int64N(180e7+1) - 90e7), Lon: int32(r.Int64N(360e7+1) - 180e7)}
		b := a
		// Mostly short distances, where matching happens, some long.
		switch r.IntN(3) {
		case 0:
			b.Lat += int32(r.IntN(2001) - 1000)
			b.Lon += int32(r.IntN(2001) - 1000)
			b.Lat = max(min(b.Lat, 90e7), -90e7)
			b.Lon = max(min(b.Lon, 180e7), -180e7)
		default:
			b = Position{Lat: int32(r.Int64N(180e7+1) - 90e7), Lon: int32(r.Int64N(360e7+1) - 180e7)}
		}
		got, want := a.Distance(b), chordDistance(a, b)
		// The chord form loses precision near antipodes; haversine near 0.
		if math.Abs(got-want) > 1e-6+1e-6*want && math.Abs(got-math.Pi*EarthRadius) > 10 {
			t.Fatalf("%v %v: haversine %v, chord %v", a, b, got, want)
		}
	}
}

func TestPositionRounds(t *testing.T) {
	tests := []struct {
		lat, lon float64
		want     Position
	}{
		{46.51234564, 6.6, Position{465123456, 66000000}},
		{46.51234565, -6.6, Position{465123457, -66000000}}, // half away from zero
		{-90, 180, Position{-900000000, 1800000000}},
		{0.00000004, -0.00000005, Position{0, -1}},
	}
	for _, tt := range tests {
		if got := (Point{Lat: tt.lat, Lon: tt.lon}).Position(); got != tt.want {
			t.Errorf("(%v, %v).Position() = %v, want %v", tt.lat, tt.lon, got, tt.want)
		}
	}
}

// TestRoundE7 checks roundE7 against math.Round (half away from zero)
// at and next to every kind of tie, and at random.
func TestRoundE7(t *testing.T) {
	want := func(deg float64) int32 {
		v := math.Round(deg * e7)
		if !(v >= math.MinInt32 && v <= math.MaxInt32) {
			return 0
		}
		return int32(v)
	}
	var degs []float64
	for _, v := range []float64{0, 0.5, 1.5, 2.5, 0.49999999999999994, 1 << 52, 1<<52 + 1, 1 << 53, 2147483647.5, 2147483648, 1e300} {
		for _, s := range []float64{1, -1} {
			x := s * v / e7
			degs = append(degs, x, math.Nextafter(x, math.Inf(1)), math.Nextafter(x, math.Inf(-1)))
		}
	}
	degs = append(degs, math.Inf(1), math.Inf(-1), math.NaN(), math.Copysign(0, -1))
	r := rand.New(rand.NewPCG(9, 9))
	for range 1_000_000 {
		x := (r.Float64()*2 - 1) * 180
		degs = append(degs, x, float64(int64(x*e7))/e7+0.5/e7)
	}
	for _, d := range degs {
		if got := roundE7(d); got != want(d) {
			t.Fatalf("roundE7(%v) = %d, math.Round gives %d", d, got, want(d))
		}
	}
}

func TestParamsValidate(t *testing.T) {
	if err := DefaultParams().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Params)
	}{
		{"zero distance", func(p *Params) { p.DistanceMeters = 0 }},
		{"NaN distance", func(p *Params) { p.DistanceMeters = math.NaN() }},
		{"huge distance", func(p *Params) { p.DistanceMeters = 1e6 }},
		{"negative tolerance", func(p *Params) { p.TimeTolerance = -time.Second }},
		{"tolerance over an hour", func(p *Params) { p.TimeTolerance = 2 * time.Hour }},
		{"negative minutes", func(p *Params) { p.MinMinutes = -1 }},
		{"infinite minutes", func(p *Params) { p.MinMinutes = math.Inf(1) }},
		{"zero gap", func(p *Params) { p.MaxGap = 0 }},
	}
	for _, tt := range tests {
		p := DefaultParams()
		tt.edit(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", tt.name, p)
		}
	}
}
