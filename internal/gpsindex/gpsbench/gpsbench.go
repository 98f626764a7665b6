// Package gpsbench measures the GPS index on synthetic but realistic
// traces: the numbers behind "conftrace bench gps" and the gpsindex
// benchmarks.
//
// A synthetic town is 6 km across. Everyone lives somewhere in their town,
// works in one of its 300 workplaces clustered in a 2 km centre, sometimes
// stops at one of its 200 shops on the way home, and travels on foot, by
// bicycle or by car in straight lines. Fixes carry 4 m of GPS noise.
// Patients' traces are sampled every minute for a whole day; devices'
// traces every 5 minutes for 14 days (4,032 points). The indexed points
// are spread evenly over 14 days, and each day is added in one call: one
// generation a day, as the backend's index is after it compacts.
//
// There are two spreads. [NewCity] puts everyone in one town: the worst
// case for the index, every indexed fix in the same few kilometres, so
// that at the national scale, thousands of patients a day, dozens share a
// building. [NewCountry] spreads people over many towns in a France-sized
// region, the biggest towns the most crowded (Zipf), which is closer to a
// national epidemic: as many patients, but most of the country far from
// most of them.
package gpsbench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/gpsindex"
)

// Epoch is the start of the first synthetic day: 2024-03-01T00:00:00Z.
const Epoch = 1_709_251_200

// Days is the number of days the synthetic data spans.
const Days = 14

// Sampling of the synthetic traces.
const (
	PatientStep = 60  // seconds
	DeviceStep  = 300 // seconds
	// DevicePoints is the length of a device trace: 14 days every 5 minutes.
	DevicePoints = Days * 86400 / DeviceStep
	patientDay   = 86400 / PatientStep
)

const (
	cityHalf   = 3000.0 // metres
	centreHalf = 1000.0
	workplaces = 300
	shops      = 200
	building   = 20.0 // half-width of a workplace, metres
	gpsNoise   = 4.0  // metres, standard deviation per axis
	lat0, lon0 = 46.52, 6.63
	mPerDegLat = 111_195.08
)

// The country of [NewCountry].
const (
	// MaxTowns is the most towns [NewCountry] makes: centres drawn at
	// random 20 km apart grow slow to place not far beyond it.
	MaxTowns                 = 1000
	countryLat0, countryLat1 = 43.0, 51.0
	countryLon0, countryLon1 = -1.0, 9.0
	townGap                  = 20_000.0 // metres between centres, at least
	townSalt, centreSalt     = 0x7042, 0xce7
	maxCentreTries           = 1_000_000
)

// City is the synthetic population: one town, or a country of them.
type City struct {
	seed  uint64
	towns []town
	// zipf holds the cumulative weights 1/(k+1) of the towns; nil with a
	// single town.
	zipf []float64
}

// town is one 6 km town.
type town struct {
	lat, lon   float64                        // centre, degrees
	mPerDegLon float64                        // at the centre's latitude
	places     [workplaces + shops][2]float64 // east, north of the centre in metres
}

// newTown lays out a town centred at lat, lon from r.
func newTown(lat, lon, mPerDegLon float64, r *rand.Rand) town {
	t := town{lat: lat, lon: lon, mPerDegLon: mPerDegLon}
	for i := range t.places {
		h := centreHalf
		if i >= workplaces {
			h = cityHalf
		}
		t.places[i] = [2]float64{(r.Float64()*2 - 1) * h, (r.Float64()*2 - 1) * h}
	}
	return t
}

// NewCity returns the city of a seed: everyone in one dense town.
func NewCity(seed uint64) *City {
	// lat0*math.Pi/180 stays a constant expression, as it was before there
	// were countries: computed in float64 it could differ in the last bit,
	// and so could the traces.
	return &City{seed: seed, towns: []town{
		newTown(lat0, lon0, mPerDegLat*math.Cos(lat0*math.Pi/180), rand.New(rand.NewPCG(seed, 0))),
	}}
}

// NewCountry returns the country of a seed: towns towns, each laid out
// like the city of [NewCity], with centres drawn uniformly over latitudes
// 43..51 and longitudes -1..9 at least 20 km apart, and everyone living
// and working in town k with a probability proportional to 1/(k+1). With
// towns <= 1 it is NewCity(seed). It panics if towns > [MaxTowns].
func NewCountry(seed uint64, towns int) *City {
	if towns <= 1 {
		return NewCity(seed)
	}
	if towns > MaxTowns {
		panic(fmt.Sprintf("gpsbench: %d towns, at most %d", towns, MaxTowns))
	}
	c := &City{seed: seed, towns: make([]town, 0, towns), zipf: make([]float64, towns)}
	r := rand.New(rand.NewPCG(seed^centreSalt, 0))
	for tries := 0; len(c.towns) < towns; tries++ {
		if tries == maxCentreTries {
			// MaxTowns fits in far fewer tries: a guard against an
			// endless loop, not a limit.
			panic(fmt.Sprintf("gpsbench: no room for %d towns 20 km apart", towns))
		}
		centre := gps.Point{
			Lat: countryLat0 + r.Float64()*(countryLat1-countryLat0),
			Lon: countryLon0 + r.Float64()*(countryLon1-countryLon0),
		}
		if !c.farFromTowns(centre) {
			continue
		}
		// Each town has its own stream, so that its layout does not depend
		// on how many towns there are; salted so as not to share a person's.
		tr := rand.New(rand.NewPCG(seed^townSalt, uint64(len(c.towns))))
		c.towns = append(c.towns, newTown(centre.Lat, centre.Lon, mPerDegLat*math.Cos(centre.Lat*math.Pi/180), tr))
	}
	sum := 0.0
	for k := range c.zipf {
		sum += 1 / float64(k+1)
		c.zipf[k] = sum
	}
	return c
}

// farFromTowns reports whether p is at least townGap from every town.
func (c *City) farFromTowns(p gps.Point) bool {
	for i := range c.towns {
		t := &c.towns[i] // not a copy of its places
		// A great circle is no shorter than its difference in latitude
		// (1 m covers rounding): most haversines are skipped.
		if math.Abs(p.Lat-t.lat)*mPerDegLat > townGap+1 {
			continue
		}
		if gps.Distance(p, gps.Point{Lat: t.lat, Lon: t.lon}) < townGap {
			return false
		}
	}
	return true
}

// person is where someone spends their days.
type person struct {
	town             int
	home, work, shop [2]float64 // east, north of the town's centre in metres
	speed            float64    // metres per second
}

func (c *City) person(id uint64) person {
	r := rand.New(rand.NewPCG(c.seed, id+1))
	k := 0
	if len(c.zipf) > 1 {
		// Only with several towns, so that a single city draws what it
		// always has.
		k = sort.SearchFloat64s(c.zipf, r.Float64()*c.zipf[len(c.zipf)-1])
	}
	t := &c.towns[k]
	w := t.places[r.IntN(workplaces)]
	return person{
		town:  k,
		home:  [2]float64{(r.Float64()*2 - 1) * cityHalf, (r.Float64()*2 - 1) * cityHalf},
		work:  [2]float64{w[0] + (r.Float64()*2-1)*building, w[1] + (r.Float64()*2-1)*building},
		shop:  t.places[workplaces+r.IntN(shops)],
		speed: []float64{1.4, 4, 10}[r.IntN(3)],
	}
}

// leg is a part of a day: from a to b between times t0 and t1 (seconds of
// the day); a == b when staying.
type leg struct {
	t0, t1 float64
	a, b   [2]float64
}

// day appends p's fixes on day d, every step seconds, to tr.
func (c *City) day(tr gps.Trace, p person, r *rand.Rand, d int, step int) gps.Trace {
	tw := &c.towns[p.town]
	var legs []leg
	t := 7*3600 + r.Float64()*2*3600
	legs = append(legs, leg{0, t, p.home, p.home})
	move := func(to [2]float64, stay float64) {
		from := legs[len(legs)-1].b
		dt := math.Hypot(to[0]-from[0], to[1]-from[1]) / p.speed
		legs = append(legs, leg{t, t + dt, from, to}, leg{t + dt, t + dt + stay, to, to})
		t += dt + stay
	}
	move(p.work, 8*3600+r.Float64()*2*3600)
	if r.IntN(2) == 0 {
		move(p.shop, 1200+r.Float64()*2400)
	}
	move(p.home, 0)
	legs[len(legs)-1].t1 = 86400
	k := 0
	for s := 0; s < 86400; s += step {
		for k < len(legs)-1 && float64(s) >= legs[k].t1 {
			k++
		}
		l := legs[k]
		f := 0.0
		if l.t1 > l.t0 {
			f = min(max((float64(s)-l.t0)/(l.t1-l.t0), 0), 1)
		}
		e := l.a[0] + f*(l.b[0]-l.a[0]) + r.NormFloat64()*gpsNoise
		n := l.a[1] + f*(l.b[1]-l.a[1]) + r.NormFloat64()*gpsNoise
		lat := tw.lat + n/mPerDegLat
		pos := gps.Point{Lat: lat, Lon: tw.lon + e/tw.mPerDegLon}.Position()
		tr = append(tr, gps.Point{
			Time: Epoch + int64(d)*86400 + int64(s),
			Lat:  float64(pos.Lat) / 1e7,
			Lon:  float64(pos.Lon) / 1e7,
		})
	}
	return tr
}

// PatientDay returns patient i's trace on day d: one fix a minute.
func (c *City) PatientDay(d, i int) gps.Trace {
	id := uint64(d)<<32 | uint64(i)
	r := rand.New(rand.NewPCG(c.seed^0x9a7, id))
	return c.day(make(gps.Trace, 0, patientDay), c.person(id), r, d, PatientStep)
}

// deviceID is device i's person.
func deviceID(i int) uint64 { return uint64(1)<<63 | uint64(i) }

// Device returns device i's trace: 14 days, one fix every 5 minutes.
func (c *City) Device(i int) gps.Trace {
	id := deviceID(i)
	p := c.person(id)
	r := rand.New(rand.NewPCG(c.seed^0xde5, id))
	tr := make(gps.Trace, 0, DevicePoints)
	for d := range Days {
		tr = c.day(tr, p, r, d, DeviceStep)
	}
	return tr
}

// Infected returns the traces of day d that make up n indexed points over
// 14 days, concatenated in time order of each patient (the index does not
// need the whole in order); the last patient of a day may be cut short.
func (c *City) Infected(d, n int) gps.Trace {
	perDay := n / Days
	if d < n%Days {
		perDay++
	}
	tr := make(gps.Trace, 0, perDay)
	for i := 0; len(tr) < perDay; i++ {
		pd := c.PatientDay(d, i)
		tr = append(tr, pd[:min(len(pd), perDay-len(tr))]...)
	}
	return tr
}

// Build makes an index of n points of the city for p, one Add per day.
func (c *City) Build(ctx context.Context, n int, p gps.Params) (*gpsindex.Index, error) {
	x, err := gpsindex.New(p)
	if err != nil {
		return nil, err
	}
	for d := range Days {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := x.Add(calendar.DayOfUnix(Epoch+int64(d)*86400), c.Infected(d, n)); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// Config is what Run measures.
type Config struct {
	// Points is the number of indexed points.
	Points int
	// Checks is the number of device checks timed on the index; at least
	// one per worker.
	Checks int
	// BruteForceMax is the largest number of points at which the brute
	// force is timed too (it compares every fix with every indexed point,
	// so a check takes long at large sizes).
	BruteForceMax int
	// BruteForceChecks is the number of brute-force checks timed.
	BruteForceChecks int
	// Seed makes the city.
	Seed uint64
	// Towns is the number of towns of a [NewCountry] spread, at most
	// [MaxTowns]; 0 or 1 means the single dense city of [NewCity].
	Towns int
	// Params are the matching parameters; zero means gps.DefaultParams.
	Params gps.Params
	// CheckProfile, if set, receives a CPU profile (pprof format) of the
	// index checks alone, without the build or the brute force.
	CheckProfile io.Writer
}

// Result is one row of measurements.
type Result struct {
	// Points is the number of indexed points.
	Points int
	// HeapBytesPerPoint is the growth of the Go heap over the build,
	// divided by Points: what the index really costs.
	HeapBytesPerPoint float64
	// BytesPerPoint is the index's own account of its arrays.
	BytesPerPoint float64
	// Build is the time to build the index (including generating the
	// synthetic traces).
	Build time.Duration
	// IndexRate is device checks (Query, Episodes, Exposed) a second, on
	// all CPUs.
	IndexRate float64
	// BruteRate is brute-force checks a second on all CPUs; 0 when not
	// measured.
	BruteRate float64
	// Exposed is the fraction of the checked devices found exposed, to
	// show the data is not trivially empty.
	Exposed float64
	// Workers is the number of goroutines that ran checks.
	Workers int
}

// devicePool is how many distinct device traces the checks cycle through.
const devicePool = 64

// Run builds an index of cfg.Points points and measures it, and the brute
// force if cfg.Points <= cfg.BruteForceMax, in this one run.
func Run(ctx context.Context, cfg Config) (Result, error) {
	p := cfg.Params
	if p == (gps.Params{}) {
		p = gps.DefaultParams()
	}
	if cfg.Points < Days {
		return Result{}, fmt.Errorf("gpsbench: %d points, want at least %d", cfg.Points, Days)
	}
	if cfg.Towns < 0 || cfg.Towns > MaxTowns {
		return Result{}, fmt.Errorf("gpsbench: %d towns, want 0..%d", cfg.Towns, MaxTowns)
	}
	c := NewCountry(cfg.Seed, cfg.Towns) // the city for 0 or 1 towns
	devices := make([]gps.Trace, devicePool)
	for i := range devices {
		devices[i] = c.Device(i)
	}
	workers := runtime.GOMAXPROCS(0)
	res := Result{Points: cfg.Points, Workers: workers}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	x, err := c.Build(ctx, cfg.Points, p)
	if err != nil {
		return Result{}, err
	}
	res.Build = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	res.HeapBytesPerPoint = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(cfg.Points)
	st := x.Stats()
	res.BytesPerPoint = float64(st.Bytes) / float64(st.Points)

	var exposed atomic.Int64
	check := func(i int) error {
		m, err := x.Query(devices[i%devicePool], p)
		if err != nil {
			return err
		}
		if gps.Exposed(gps.Episodes(devices[i%devicePool], m, p), p) {
			exposed.Add(1)
		}
		return nil
	}
	checks := max(cfg.Checks, workers)
	if cfg.CheckProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CheckProfile); err != nil {
			return Result{}, fmt.Errorf("gpsbench: %w", err)
		}
	}
	elapsed, err := parallel(ctx, workers, checks, check)
	if cfg.CheckProfile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return Result{}, err
	}
	res.IndexRate = float64(checks) / elapsed.Seconds()
	res.Exposed = float64(exposed.Load()) / float64(checks)

	if cfg.Points <= cfg.BruteForceMax {
		var infected []gps.Trace
		for d := range Days {
			infected = append(infected, c.Infected(d, cfg.Points))
		}
		n := max(cfg.BruteForceChecks, workers)
		elapsed, err := parallel(ctx, workers, n, func(i int) error {
			m := gps.BruteForceMatches(devices[i%devicePool], infected, p)
			gps.Exposed(gps.Episodes(devices[i%devicePool], m, p), p)
			return nil
		})
		if err != nil {
			return Result{}, err
		}
		res.BruteRate = float64(n) / elapsed.Seconds()
	}
	runtime.KeepAlive(x)
	return res, nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the time taken.
func parallel(ctx context.Context, workers, n int, f func(int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return elapsed, nil
}
