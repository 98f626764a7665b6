package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/conftrace/conftrace/internal/ingestbench"
)

// runBenchIngest measures how fast uploads become durable, beside bare
// SQLite writing the same rows in the same transactions.
func runBenchIngest(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench ingest", "bench ingest [--uploads N] [--sightings S] [--clients C] [--cpuprofile FILE] [--json | --markdown]\n\n"+
		"Opens the enclave over a SQLite store in a temporary directory, registers N\n"+
		"positive tests, then times C goroutines sending the N uploads of S sightings (over\n"+
		"13 days, with 14 daily keys) with their authorizations (alone, or with --exchanges\n"+
		"in daily exchanges that also check them, as phones send them), while\n"+
		"the journal flushes back to back, until the last upload is durable. The HTTP and\n"+
		"Oblivious HTTP layers are left out (bench wire and the OHTTP benchmark measure\n"+
		"them). Beside it, bare SQLite (same driver, pragmas and schema) writes the same\n"+
		"rows in the same transactions; ratio is uploads_per_s / floor_uploads_per_s.\n"+
		"In-process only: a backend behind a URL flushes on its policy's real clock, which\n"+
		"a measurement of it would measure instead of its capacity.")
	uploads := fs.Int("uploads", 2000, "`N` uploads, each by its own phone")
	sightings := fs.Int("sightings", 5000, "`S` sightings in each upload")
	clients := fs.Int("clients", 0, "`C` uploads in flight at once; 0 means twice the CPUs")
	exchanges := fs.Bool("exchanges", false, "send each upload in a daily exchange, which also checks it, as a phone does")
	rows := fs.Int("flush-rows", ingestbench.DefaultFlushRows, "the policy's store_flush_rows")
	maxRows := fs.Int("flush-max-rows", ingestbench.DefaultFlushMaxRows, "the policy's store_flush_max_rows")
	hold := fs.Int("flush-hold", ingestbench.DefaultFlushHold, "the policy's store_flush_hold, in flushes")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this `duration`")
	seed := fs.Uint64("seed", 1, "`N` seeds the reports")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the timed part to `file`, for go tool pprof")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	markdown := fs.Bool("markdown", false, "print the result as a Markdown table, as docs/performance.sh records it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *uploads < 1 || *sightings < 1 || *uploads**sightings > ingestbench.MaxSightingsTotal {
		return usagef("--uploads %d --sightings %d: want at least one of one, at most %d sightings in all", *uploads, *sightings, ingestbench.MaxSightingsTotal)
	}
	if *clients < 0 || *timeout <= 0 {
		return usagef("--clients and --timeout must not be negative")
	}
	cfg := ingestbench.Config{Uploads: *uploads, Sightings: *sightings, Clients: *clients,
		FlushRows: *rows, FlushMaxRows: *maxRows, FlushHold: *hold, Seed: *seed, Exchanges: *exchanges}
	setup, err := setUpBench(*profile, "conftrace-ingest-")
	if err != nil {
		return err
	}
	defer setup.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cfg.Profile, cfg.Dir = setup.Profile, setup.Dir
	r, err := ingestbench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		return json.NewEncoder(cio.stdout).Encode(r)
	case *markdown:
		fmt.Fprintln(cio.stdout, "| uploads | sightings | clients | uploads/s | floor uploads/s | ratio | flushes | rows | exchange p50 / p99 ms |")
		fmt.Fprintln(cio.stdout, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		fmt.Fprintf(cio.stdout, "| %d | %d | %d | %.1f | %.1f | %.2f | %d | %d | %.1f / %.1f |\n", r.Uploads, r.Sightings, r.Clients,
			r.UploadsPerS, r.FloorUploadsPerS, r.Ratio, r.Flushes, r.Rows, r.ExchangeP50Millis, r.ExchangeP99Millis)
	default:
		fmt.Fprintf(cio.stdout, "%d uploads of %d sightings, %d clients; flushes of %d rows, up to %d, held %d\n",
			r.Uploads, r.Sightings, r.Clients, r.FlushRows, r.FlushMaxRows, r.FlushHold)
		fmt.Fprintf(cio.stdout, "durable:      %8.1f uploads/s  (%.2f s, the last answered at %.2f s; exchanges p50 %.1f ms, p99 %.1f ms)\n",
			r.UploadsPerS, r.Seconds, r.SentSeconds, r.ExchangeP50Millis, r.ExchangeP99Millis)
		fmt.Fprintf(cio.stdout, "bare SQLite:  %8.1f uploads/s  (%.2f s for the same %d rows in %d transactions; the store committed for %.2f s)\n",
			r.FloorUploadsPerS, r.FloorSeconds, r.Rows, r.Flushes, r.CommitSeconds)
		fmt.Fprintf(cio.stdout, "ratio:        %8s\n", strconv.FormatFloat(r.Ratio, 'f', 2, 64))
	}
	return nil
}
