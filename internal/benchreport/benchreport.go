// Package benchreport makes what the benchmarks upload: a phone's report
// of random daily keys and sightings, reproducible from a seed, so that
// bench ingest, bench restart and bench load measure the same workload.
package benchreport

import (
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
)

// Days is how many daily keys a report carries: the day of its time and
// the days before it, whose sightings it holds.
const Days = 14

// Seed expands a seed and a stream number into a ChaCha8 seed, so that
// each stream (an upload, a worker) draws its own reproducible numbers.
func Seed(s, stream uint64) [32]byte {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(s >> (8 * i))
		k[8+i] = byte(stream >> (8 * i))
	}
	return k
}

// Random returns the encoded report of a phone at time at: random daily
// keys of the Days days up to at's, and n sightings of other phones at
// random intervals of the days before at's, for random minutes (1 to 10)
// and attenuations (40 to 79 dB).
func Random(rng *mrand.Rand, at time.Time, n int) ([]byte, error) {
	today := enid.IntervalOf(at).RollingStart()
	r := contactlog.Report{Keys: make([]contactlog.DailyKey, Days), Sightings: make([]contactlog.Sighting, n)}
	for d := range r.Keys {
		var tek enid.TEK
		for i := range tek {
			tek[i] = byte(rng.Uint32())
		}
		r.Keys[d] = contactlog.DailyKey{TEK: tek, Start: today - enid.Interval((Days-1-d)*enid.RollingPeriod), Period: enid.RollingPeriod}
	}
	first := today - enid.Interval((Days-1)*enid.RollingPeriod)
	for i := range r.Sightings {
		s := &r.Sightings[i]
		for j := range s.Heard {
			s.Heard[j] = byte(rng.Uint32())
		}
		s.Interval = first + enid.Interval(rng.IntN((Days-1)*enid.RollingPeriod))
		s.Minutes = uint8(1 + rng.IntN(10))
		s.Attenuation = uint8(40 + rng.IntN(40))
	}
	body, err := r.AppendBinary(nil)
	if err != nil {
		return nil, fmt.Errorf("benchreport: encoding a report: %w", err)
	}
	return body, nil
}
