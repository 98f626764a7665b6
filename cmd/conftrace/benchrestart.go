package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/conftrace/conftrace/internal/restartbench"
)

// runBenchRestart measures how long the backend takes to start over a
// store of many indexed pairs, beside reading and decrypting the same
// sealed bytes.
func runBenchRestart(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench restart", "bench restart [--pairs N] [--sightings S] [--clients C] [--cpuprofile FILE] [--json | --markdown]\n\n"+
		"Fills a SQLite store in a temporary directory with N contact pairs through the\n"+
		"enclave's upload path (uploads of S sightings over 13 days, each with its lab's\n"+
		"positive result and the phone's poll, while the journal flushes; not timed), closes\n"+
		"it, then times the backend's start over it: opening the store and the enclave, which\n"+
		"rebuilds the match indexes from the sealed journal, until it is ready to answer.\n"+
		"Beside it, the floor reads the same journal rows (the store's scan) and opens them\n"+
		"(AES-256-GCM, with the same keys) on every CPU; ratio is seconds / floor_seconds,\n"+
		"decrypt_ratio the same over the opening alone. In-process only. 10^8 pairs take\n"+
		"about 2.5 GB of disk and some minutes to fill.")
	pairs := countFlag(1e8)
	fs.Var(&pairs, "pairs", "`N` pairs in the store (1e8 or 100000000)")
	sightings := fs.Int("sightings", restartbench.DefaultSightings, "`S` sightings in each upload of the fill")
	clients := fs.Int("clients", 0, "`C` uploads of the fill in flight at once; 0 means twice the CPUs")
	timeout := fs.Duration("timeout", time.Hour, "give up after this `duration`")
	seed := fs.Uint64("seed", 1, "`N` seeds the reports")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the timed start to `file`, for go tool pprof")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	markdown := fs.Bool("markdown", false, "print the result as a Markdown table, as docs/performance.sh records it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if pairs < 1 || pairs > restartbench.MaxPairs {
		return usagef("--pairs %d: want 1 to %d", pairs, restartbench.MaxPairs)
	}
	if *sightings < 1 || *clients < 0 || *timeout <= 0 {
		return usagef("--sightings and --timeout must be positive, --clients not negative")
	}
	cfg := restartbench.Config{Pairs: int(pairs), Sightings: *sightings, Clients: *clients, Seed: *seed}
	setup, err := setUpBench(*profile, "conftrace-restart-")
	if err != nil {
		return err
	}
	defer setup.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cfg.Profile, cfg.Dir = setup.Profile, setup.Dir
	r, err := restartbench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		return json.NewEncoder(cio.stdout).Encode(r)
	case *markdown:
		fmt.Fprintln(cio.stdout, "| pairs | records | MB | seconds (CPU) | floor seconds (CPU) | ratio | decrypt seconds | decrypt ratio | heap MB |")
		fmt.Fprintln(cio.stdout, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		fmt.Fprintf(cio.stdout, "| %.0e | %d | %.0f | %.2f (%.1f) | %.2f (%.1f) | %.2f | %.2f | %.1f | %.0f |\n", float64(r.Pairs), r.Records, float64(r.Bytes)/1e6,
			r.Seconds, r.CPUSeconds, r.FloorSeconds, r.FloorCPUSeconds, r.Ratio, r.DecryptSeconds, r.DecryptRatio, float64(r.HeapBytes)/1e6)
	default:
		fmt.Fprintf(cio.stdout, "%d pairs in %d uploads of %d sightings: %d journal rows (%d filler), %.0f MB; filled in %.1f s\n",
			r.Pairs, r.Uploads, r.Sightings, r.Records, r.Filler, float64(r.Bytes)/1e6, r.FillSeconds)
		fmt.Fprintf(cio.stdout, "restart:        %8.2f s  (%.2f s of CPU; the heap after it %.0f MB)\n", r.Seconds, r.CPUSeconds, float64(r.HeapBytes)/1e6)
		fmt.Fprintf(cio.stdout, "scan + decrypt: %8.2f s  (%.2f s of CPU; decrypt alone %.2f s)\n", r.FloorSeconds, r.FloorCPUSeconds, r.DecryptSeconds)
		fmt.Fprintf(cio.stdout, "ratio:          %8s  (over the decrypt alone %.2f)\n", strconv.FormatFloat(r.Ratio, 'f', 2, 64), r.DecryptRatio)
	}
	return nil
}
