package gpsindex_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/gpsindex"
	"github.com/conftrace/conftrace/internal/gpsindex/gpsbench"
)

// Index sizes are a flag because an index of 10^7 points takes a while
// to build and 10^8 gigabytes (use "conftrace bench gps" for that):
//
//	go test -run='^$' -bench=. -args -size=1e6,1e7
var sizeFlag = flag.String("size", "1e6", "comma-separated `sizes` (indexed points) for BenchmarkQuery; BenchmarkBruteForce uses 1e4 and 1e5")

func sizes(b *testing.B) []int {
	var out []int
	for f := range strings.SplitSeq(*sizeFlag, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < gpsbench.Days {
			b.Fatalf("-size: %q is not a number of points", f)
		}
		out = append(out, int(v))
	}
	return out
}

// BenchmarkQuery measures device checks (4,032-point traces, Query then
// Episodes and Exposed) against an index of each size, on all CPUs, and
// reports the index's heap per point. Compare with BenchmarkBruteForce.
func BenchmarkQuery(b *testing.B) {
	p := gps.DefaultParams()
	for _, n := range append([]int{1e4, 1e5}, sizes(b)...) {
		b.Run(fmt.Sprintf("points=%.0e", float64(n)), func(b *testing.B) {
			city := gpsbench.NewCity(1)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			x, err := city.Build(context.Background(), n, p)
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			devices := make([]gps.Trace, 16)
			for i := range devices {
				devices[i] = city.Device(i)
			}
			b.ResetTimer()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d := devices[int(next.Add(1))%len(devices)]
					m, err := x.Query(d, p)
					if err != nil {
						b.Error(err)
						return
					}
					gps.Exposed(gps.Episodes(d, m, p), p)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
			// After the loop: ResetTimer discards reported metrics.
			b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/float64(n), "heap-B/point")
			b.ReportMetric(float64(x.Stats().Bytes)/float64(n), "B/point")
		})
	}
}

// BenchmarkBruteForce is the baseline: gps.BruteForce over every indexed
// trace, at the sizes where it finishes.
func BenchmarkBruteForce(b *testing.B) {
	p := gps.DefaultParams()
	for _, n := range []int{1e4, 1e5} {
		b.Run(fmt.Sprintf("points=%.0e", float64(n)), func(b *testing.B) {
			city := gpsbench.NewCity(1)
			var infected []gps.Trace
			for d := range gpsbench.Days {
				infected = append(infected, city.Infected(d, n))
			}
			devices := make([]gps.Trace, 16)
			for i := range devices {
				devices[i] = city.Device(i)
			}
			b.ResetTimer()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d := devices[int(next.Add(1))%len(devices)]
					gps.Exposed(gps.BruteForce(d, infected, p), p)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
		})
	}
}

// BenchmarkQueryLive compares, on one core at the first -size, an index
// built one day at a time (as the backend does when it starts) with one
// fed one patient-day at a time (as uploads arrive while it runs), which
// leaves each day in several generations that every query reads.
func BenchmarkQueryLive(b *testing.B) {
	p := gps.DefaultParams()
	n := sizes(b)[0]
	city := gpsbench.NewCity(1)
	whole, err := city.Build(context.Background(), n, p)
	if err != nil {
		b.Fatal(err)
	}
	live, err := gpsindex.New(p)
	if err != nil {
		b.Fatal(err)
	}
	for d := range gpsbench.Days {
		per := n / gpsbench.Days
		for i, got := 0, 0; got < per; i++ {
			tr := city.PatientDay(d, i)
			tr = tr[:min(len(tr), per-got)]
			got += len(tr)
			if err := live.Add(calendar.DayOfUnix(gpsbench.Epoch+int64(d)*86400), tr); err != nil {
				b.Fatal(err)
			}
		}
	}
	devices := make([]gps.Trace, 16)
	for i := range devices {
		devices[i] = city.Device(i)
	}
	for _, c := range []struct {
		name string
		x    *gpsindex.Index
	}{{"whole-days", whole}, {"uploads", live}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := c.x.Query(devices[i%16], p); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
			b.ReportMetric(float64(c.x.Stats().Segments), "segments")
		})
	}
}
