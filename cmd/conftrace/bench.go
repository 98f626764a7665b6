package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/gpsindex/gpsbench"
	"github.com/conftrace/conftrace/internal/wirebench"
	"github.com/conftrace/conftrace/policy"
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

// runBenchWire measures the bytes of a daily exposure check on the wire,
// beside protocol v1's encoding of the same number of contacts.
func runBenchWire(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench wire", "bench wire [--sightings 100,700,2000,10000] [--keys N] [--markdown]\n\n"+
		"Encodes a daily exposure check of each number of sightings under a phone's daily\n"+
		"keys, encapsulates it as Oblivious HTTP to a post-quantum hybrid key, and prints\n"+
		"the bytes on the wire beside the same check in protocol v1's encoding (bare\n"+
		"own/heard tuples, base64 in JSON). Requests are padded to size classes, so the\n"+
		"wire shows only the class.")
	counts := fs.String("sightings", "100,700,2000,10000", "comma-separated `numbers` of sightings")
	keys := fs.Int("keys", 15, "daily `keys` in each check (two weeks and today)")
	markdown := fs.Bool("markdown", false, "print the table in Markdown, as docs/performance.sh records it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var ns []int
	for f := range strings.SplitSeq(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > policy.MaxSightingsPerRequest {
			return usagef("--sightings: %q is not a number of sightings in 0..%d", f, policy.MaxSightingsPerRequest)
		}
		ns = append(ns, n)
	}
	if *keys < 1 || *keys > contactlog.MaxKeys {
		return usagef("--keys: %d is not in 1..%d", *keys, contactlog.MaxKeys)
	}
	row := "%10s  %5s  %12s  %15s  %15s  %18s  %9s\n"
	if *markdown {
		row = "| %s | %s | %s | %s | %s | %s | %s |\n"
	}
	fmt.Fprintf(cio.stdout, row, "sightings", "keys", "report bytes", "bytes on wire", "v1 body bytes", "v1 bytes on wire", "v2 / v1")
	if *markdown {
		fmt.Fprintln(cio.stdout, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	}
	for _, n := range ns {
		r, err := wirebench.Measure(n, *keys)
		if err != nil {
			return err
		}
		fmt.Fprintf(cio.stdout, row, strconv.Itoa(n), strconv.Itoa(r.Keys), strconv.Itoa(r.Body), strconv.Itoa(r.Wire),
			strconv.Itoa(r.V1Body), strconv.Itoa(r.V1Wire), fmt.Sprintf("%.2f", float64(r.Wire)/float64(r.V1Wire)))
	}
	return nil
}
