package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/internal/gpsindex/gpsbench"
)

// runBenchGPS measures the GPS index against the brute force on synthetic
// traces, in one city or spread over a country, and prints one table row
// per index size.
func runBenchGPS(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench gps", "bench gps [--sizes 1e6,1e7] [--checks N] [--seed N] [--towns N] [--cpuprofile FILE] [--markdown]\n\n"+
		"Builds GPS indexes of the given sizes (indexed points of synthetic patients in a\n"+
		"city, spread over 14 days) and times device checks (14-day traces, one fix every\n"+
		"5 minutes: 4,032 points) on all CPUs, beside the brute force where it finishes.\n"+
		"10^8 points take gigabytes of memory and minutes to build:\n"+
		"  conftrace bench gps --sizes 1e6,1e7,1e8\n\n"+
		"By default everyone lives in one dense 6 km city, the worst case for the index.\n"+
		"--towns N spreads patients and devices over N such towns across a France-sized\n"+
		"region instead, town k weighted 1/(k+1) (Zipf), closer to a national epidemic.\n\n"+
		"--cpuprofile writes a CPU profile of the last size's index checks (not the\n"+
		"build) for go tool pprof.")
	sizesFlag := fs.String("sizes", "1e6,1e7", "comma-separated index `sizes` in points")
	checks := fs.Int("checks", 400, "device checks timed on each index")
	bruteMax := fs.Float64("brute-max", 1e5, "largest size at which the brute force is timed too")
	bruteChecks := fs.Int("brute-checks", 4, "brute-force checks timed")
	seed := fs.Uint64("seed", 1, "seed of the synthetic city or country")
	towns := fs.Int("towns", 1, "`number` of towns people are spread over; 1 is a single dense city")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the last size's index checks to `file`")
	markdown := fs.Bool("markdown", false, "print the table in Markdown, as docs/performance.sh records it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var sizes []int
	for f := range strings.SplitSeq(*sizesFlag, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < gpsbench.Days || v > 1e9 {
			return usagef("--sizes: %q is not a number of points in %d..1e9", f, gpsbench.Days)
		}
		sizes = append(sizes, int(v))
	}
	if *checks < 1 || *bruteChecks < 1 {
		return usagef("--checks and --brute-checks must be positive")
	}
	if *towns < 1 || *towns > gpsbench.MaxTowns {
		return usagef("--towns: %d is not a number of towns in 1..%d", *towns, gpsbench.MaxTowns)
	}
	var prof *os.File
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		prof = f
	}
	spread := "one city"
	if *towns > 1 {
		spread = fmt.Sprintf("%d towns (Zipf)", *towns)
	}
	// Fixed widths rather than a tabwriter: rows are printed as they are
	// measured, minutes apart at large sizes.
	row := "%14s  %11s  %8s  %14s  %20s  %8s  %7s\n"
	if *markdown {
		row = "| %s | %s | %s | %s | %s | %s | %s |\n"
	}
	fmt.Fprintf(cio.stdout, row, "indexed points", "bytes/point", "build", "index checks/s", "brute-force checks/s", "speed-up", "exposed")
	if *markdown {
		fmt.Fprintln(cio.stdout, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	}
	for i, n := range sizes {
		cfg := gpsbench.Config{
			Points:           n,
			Checks:           *checks,
			BruteForceMax:    int(*bruteMax),
			BruteForceChecks: *bruteChecks,
			Seed:             *seed,
			Towns:            *towns,
		}
		if prof != nil && i == len(sizes)-1 {
			cfg.CheckProfile = prof
		}
		r, err := gpsbench.Run(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%d points: %w", n, err)
		}
		brute, ratio := "—", "—"
		if r.BruteRate > 0 {
			brute = fmt.Sprintf("%.2f", r.BruteRate)
			ratio = fmt.Sprintf("%.0f×", r.IndexRate/r.BruteRate)
		}
		fmt.Fprintf(cio.stdout, row, fmt.Sprintf("%.0e", float64(n)), fmt.Sprintf("%.1f", r.HeapBytesPerPoint),
			fmt.Sprintf("%.1fs", r.Build.Seconds()), fmt.Sprintf("%.0f", r.IndexRate), brute, ratio,
			fmt.Sprintf("%.0f%%", 100*r.Exposed))
	}
	fmt.Fprintf(cio.stdout, "\n%d CPUs; spread: %s; devices: %d-point traces; bytes/point: heap growth over the build.\n",
		runtime.GOMAXPROCS(0), spread, gpsbench.DevicePoints)
	if prof != nil {
		if err := prof.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	return nil
}
