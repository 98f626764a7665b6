package gpsindex_test

import (
	"fmt"
	"testing"

	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/gpsindex"
	"github.com/conftrace/conftrace/internal/gpsindex/gpsbench"
)

// BenchmarkGrid compares slot widths (seconds), cell sizes (metres) and
// the length from which runs are split by leaf, on one core, at the first
// -size; New's defaults come from it.
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
	type grid struct {
		slot     int64
		cell     float64
		denseMin int
	}
	grids := []grid{{1800, 80, 128}, {7200, 80, 128}, {3600, 64, 128}, {3600, 128, 128}}
	for _, dense := range []int{32, 64, 128, 256, 1 << 30} {
		grids = append(grids, grid{3600, 80, dense})
	}
	for _, g := range grids {
		// Built outside b.Run, which calls its function more than once.
		x := gpsindex.NewGrid(g.slot, g.cell, g.denseMin)
		for d, tr := range days {
			if err := x.Add(calendar.Day(d), tr); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("slot=%d/cell=%v/dense=%d", g.slot, g.cell, g.denseMin), func(b *testing.B) {
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
