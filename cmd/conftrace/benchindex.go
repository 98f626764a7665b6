package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/conftrace/conftrace/internal/indexbench"
)

// runBenchIndex measures exposure checks on the compact match index,
// beside a Go map answering the same kind of checks.
func runBenchIndex(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench index", "bench index [--pairs N] [--map-pairs N] [--sightings S] [--hit-rate F] [--duration D] [--adds] [--cpuprofile FILE] [--json | --markdown]\n\n"+
		"Bulk-loads N contact pairs (random keys, uploads of 5,000 over 14 days) into the\n"+
		"compact index, and adds --map-pairs of them to a Go map, the baseline. Then times,\n"+
		"on one goroutine, checks of S lookups of fresh keys, a fraction F of them of\n"+
		"stored pairs: half of --duration on such checks, a quarter on checks of stored\n"+
		"pairs only and a quarter on random keys only, for the time of a hit and of a\n"+
		"miss, on each side, the sides taking turns. bytes_per_pair is the heap's\n"+
		"growth over the build; ratio is checks_per_s / map_checks_per_s. 10^8 pairs\n"+
		"need about 4 GB while they load and 1.6 GB after; a map of 2*10^7 pairs about\n"+
		"2.5 GB. A map smaller than the index favours the map (a smaller table, more of\n"+
		"it in cache). --adds fills the index an upload at a time instead, the state of a\n"+
		"day of uploads (several runs a shard) rather than a restart's (one run a shard).")
	pairs := countFlag(1e8)
	fs.Var(&pairs, "pairs", "`N` pairs in the compact index (1e8 or 100000000)")
	mapPairs := countFlag(0)
	fs.Var(&mapPairs, "map-pairs", "`N` pairs in the map; 0 means the smaller of --pairs and 2e7")
	sightings := fs.Int("sightings", indexbench.DefaultSightings, "`S` lookups in a check")
	hitRate := fs.Float64("hit-rate", indexbench.DefaultHitRate, "the `fraction` of a check's lookups that are of stored pairs")
	duration := fs.Duration("duration", 20*time.Second, "how long each side's checks are timed")
	adds := fs.Bool("adds", false, "fill the compact index an upload at a time (a day of uploads) instead of bulk-loading it (a restart)")
	seed := fs.Uint64("seed", 1, "`N` seeds the pairs and the queries")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the timed checks (both sides) to `file`, for go tool pprof")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	markdown := fs.Bool("markdown", false, "print the result as a Markdown table, as docs/performance.sh records it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := indexbench.Config{Pairs: int(pairs), MapPairs: int(mapPairs), Sightings: *sightings, HitRate: *hitRate, Duration: *duration, Seed: *seed, Adds: *adds}
	if pairs < 1 || pairs > indexbench.MaxPairs || mapPairs > indexbench.MaxPairs {
		return usagef("--pairs %d --map-pairs %d: want 1 to %d", pairs, mapPairs, indexbench.MaxPairs)
	}
	if *sightings < 1 || !(*hitRate >= 0 && *hitRate <= 1) || *duration <= 0 {
		return usagef("--sightings and --duration must be positive, --hit-rate from 0 to 1")
	}
	setup, err := setUpBench(*profile, "")
	if err != nil {
		return err
	}
	defer setup.close()
	cfg.Profile = setup.Profile
	r, err := indexbench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		return json.NewEncoder(cio.stdout).Encode(r)
	case *markdown:
		fmt.Fprintln(cio.stdout, "| pairs | filled by | bytes/pair | checks/s | map pairs | map bytes/pair | map checks/s | ratio | ns/hit (map) | ns/miss (map) |")
		fmt.Fprintln(cio.stdout, "| ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		fmt.Fprintf(cio.stdout, "| %.0e | %s | %.1f | %.0f | %.0e | %.1f | %.0f | %.2f | %.0f (%.0f) | %.0f (%.0f) |\n",
			float64(r.Pairs), r.Fill, r.BytesPerPair, r.ChecksPerS, float64(r.MapPairs), r.MapBytesPerPair, r.MapChecksPerS, r.Ratio,
			r.NsPerHit, r.MapNsPerHit, r.NsPerMiss, r.MapNsPerMiss)
	default:
		fmt.Fprintf(cio.stdout, "checks of %d lookups, %.2f%% of stored pairs; one goroutine, %s a side\n", r.Sightings, 100*r.HitRate, *duration)
		fmt.Fprintf(cio.stdout, "compact: %11d pairs (%s)  %6.1f B/pair  %9.1f checks/s  hit %6.0f ns  miss %6.0f ns  (built in %.1f s)\n",
			r.Pairs, r.Fill, r.BytesPerPair, r.ChecksPerS, r.NsPerHit, r.NsPerMiss, r.BuildSeconds)
		fmt.Fprintf(cio.stdout, "map:     %11d pairs  %6.1f B/pair  %9.1f checks/s  hit %6.0f ns  miss %6.0f ns  (built in %.1f s)\n",
			r.MapPairs, r.MapBytesPerPair, r.MapChecksPerS, r.MapNsPerHit, r.MapNsPerMiss, r.MapBuildSeconds)
		fmt.Fprintf(cio.stdout, "ratio:   %s (hits %.2f, misses %.2f)\n", strconv.FormatFloat(r.Ratio, 'f', 2, 64), r.HitRatio, r.MissRatio)
	}
	if r.MapSmaller && !*asJSON {
		fmt.Fprintf(cio.stdout, "\nThe map held %d pairs, fewer than the index's %d: that favours the map, whose smaller table is more cached.\n", r.MapPairs, r.Pairs)
	}
	return nil
}
