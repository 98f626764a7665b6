package enclave

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
)

// BenchmarkCheck times a daily check of 2,000 sightings under 15 daily
// keys against an index of 2*10^5 uploaded pairs, from the report's bytes
// to the answer: parsing, the phone's own identifiers, the queries, the
// lookups and the scores. The index is small enough to stay mostly in
// cache, so that the figure is the check's own work; bench load measures
// it at national sizes. Allocations are the point as much as the time:
// each costs the garbage collector again, which sets the tail latency.
func BenchmarkCheck(b *testing.B) {
	v := newEnv(b)
	rng := rand.New(rand.NewPCG(5, 6))
	today := enid.IntervalOf(v.now())
	sightings := func(d *device, n int) []contactlog.Sighting {
		ss := make([]contactlog.Sighting, n)
		for i := range ss {
			at := today - enid.Interval(rng.IntN(13*enid.RollingPeriod))
			d.key(at)
			ss[i] = contactlog.Sighting{Heard: newRPI(), Interval: at, Minutes: 5, Attenuation: 50}
		}
		return ss
	}
	for range 40 {
		d := newDevice()
		v.mustUpload(d.report(sightings(d, 5000)...))
	}
	reports := make([][]byte, 32)
	for i := range reports {
		d := newDevice()
		d.key(today)
		reports[i] = encode(b, d.report(sightings(d, 2000)...))
	}
	ctx := context.Background()
	b.ReportAllocs()
	buf := make([]byte, len(reports[0])+1024)
	i := 0
	for b.Loop() {
		r := reports[i%len(reports)]
		i++
		req := api.ExposureRequest{Report: append(buf[:0], r...)}
		if _, err := v.e.CheckExposure(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
