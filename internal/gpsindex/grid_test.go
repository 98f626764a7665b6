package gpsindex_test

import (
	"fmt"
	"testing"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/gpsindex"
	"github.com/conftrace/conftrace/internal/gpsindex/gpsbench"
)

// BenchmarkGrid compares slot widths (seconds) and cell sizes (metres) on
// one core, at the first -size; New's defaults come from it.
func BenchmarkGrid(b *testing.B) {
	p := gps.DefaultParams()
	n := float64(sizes(b)[0])
	city := gpsbench.NewCity(1)
	var days []gps.Trace
	for d := range gpsbench.Days {
		days = append(days, city.Infected(d, int(n)))
	}
	devices := make([]gps.Trace, 16)
	for i := range devices {
		devices[i] = city.Device(i)
	}
	for _, slot := range []int64{600, 1800, 3600, 7200} {
		for _, cell := range []float64{64, 80, 128} {
			b.Run(fmt.Sprintf("slot=%d/cell=%v", slot, cell), func(b *testing.B) {
				x := gpsindex.NewGrid(slot, cell)
				for d, tr := range days {
					if err := x.Add(gpsindex.Day(d), tr); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := x.Query(devices[i%16], p); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
				b.ReportMetric(float64(x.Stats().Bytes)/n, "B/point")
			})
		}
	}
}
