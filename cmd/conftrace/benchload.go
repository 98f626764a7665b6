package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/conftrace/conftrace/internal/loadbench"
)

// runBenchLoad measures daily exposure checks end to end against a backend
// holding many indexed pairs, beside the Oblivious HTTP floor of the same
// sizes.
func runBenchLoad(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench load", "bench load [--pairs N] [--duration D] [--clients C] [--rate R | --at F] [--server URL] [--cpuprofile FILE] [--json | --markdown]\n\n"+
		"Without --server, starts the backend in this process as conftraced assembles it\n"+
		"(service, gateway, enclave, sealed SQLite store in a temporary directory) on a\n"+
		"loopback port, answers released at once, and fills its index with N pairs through\n"+
		"the enclave's upload path (uploads of 5,000 sightings over 14 days, not timed).\n"+
		"Then C clients send pre-built daily exchanges (2,000 sightings, 15 daily keys, a\n"+
		"fresh phone and encapsulation each; 2% by phones that met an uploader) back to\n"+
		"back for D: the peak. --rate R sends R checks a second instead (open loop,\n"+
		"latency counted from when each was due, after 2 s of warm-up not counted); --at F\n"+
		"follows the peak by an open loop at F times it. Beside it, the floor: C\n"+
		"goroutines only opening a request and sealing an answer of the same sizes\n"+
		"(Oblivious HTTP), in half-second slices between the peak's one-second slices;\n"+
		"ratio is checks_per_s / floor_checks_per_s, cpu_ratio the same per CPU-second\n"+
		"this process used.\n"+
		"Server and generator share this process's GOMAXPROCS; with --server, run\n"+
		"conftraced apart (for example under taskset) to split the cores. The CPU\n"+
		"profile labels the floor part=floor and the generator part=generator.")
	pairs := countFlag(1_000_000)
	fs.Var(&pairs, "pairs", "`N` indexed pairs (sightings uploaded) in the started backend (1e7 or 10000000)")
	duration := fs.Duration("duration", 10*time.Second, "each phase lasts `D`, at most 2m")
	clients := fs.Int("clients", 8, "`C` checks in flight in the closed loop")
	rate := fs.Float64("rate", 0, "send `R` checks a second (open loop) instead of the closed loop")
	at := fs.Float64("at", 0, "after the closed loop, an open loop at `F` times its peak (0.8 for the target)")
	checks := fs.Int("checks", 0, "`N` checks built for the closed loop; 0 means enough for 3,000 a second")
	server := fs.String("server", "", "load the backend at `URL` instead of starting one (not filled)")
	release := fs.Int("answer-release-ms", 0, "the started backend's answer_release_ms (`ms`); 0 answers at once")
	seed := fs.Uint64("seed", 1, "`N` seeds the uploads")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the first phase to `file`, for go tool pprof")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	markdown := fs.Bool("markdown", false, "print the result as a Markdown table, as docs/performance.sh records it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *duration <= 0 || *duration > loadbench.MaxPhase || *clients < 1 || *rate < 0 || *at < 0 || *at > 1 || *checks < 0 || (*rate > 0 && *at > 0) {
		return usagef("want 0 < --duration <= %v, --clients >= 1, --rate >= 0, 0 <= --at <= 1, not both --rate and --at", loadbench.MaxPhase)
	}
	if *server == "" && pairs < 1 {
		return usagef("--pairs %d: want at least 1", pairs)
	}
	cfg := loadbench.Config{Pairs: int(pairs), Duration: *duration, Clients: *clients, Rate: *rate, AtFraction: *at,
		Checks: *checks, Server: *server, AnswerReleaseMillis: *release, Seed: *seed}
	scratch := "conftrace-load-"
	if *server != "" {
		scratch = ""
	}
	setup, err := setUpBench(*profile, scratch)
	if err != nil {
		return err
	}
	defer setup.close()
	cfg.Profile, cfg.Dir = setup.Profile, setup.Dir
	r, err := loadbench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		return json.NewEncoder(cio.stdout).Encode(r)
	case *markdown:
		printLoadMarkdown(cio.stdout, r)
	default:
		printLoadText(cio.stdout, r)
	}
	return nil
}

func printLoadMarkdown(w io.Writer, r *loadbench.Result) {
	fmt.Fprintln(w, "| pairs | clients | checks/s | floor checks/s | ratio | ratio per CPU-s | p50 / p99 ms | errors | at 80%: checks/s, p50 / p99 ms | CPUs used: load, floor | bytes/check | GAEN bytes at 10k cases |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	at := "—"
	if r.AtRate != nil {
		at = fmt.Sprintf("%.0f (of %.0f), %.1f / %.1f", r.AtRate.ChecksPerS, r.AtRate.Rate, r.AtRate.P50Millis, r.AtRate.P99Millis)
	}
	fmt.Fprintf(w, "| %d | %d | %.0f | %.0f | %.2f | %.2f | %.1f / %.1f | %d | %s | %.2f, %.2f | %d | %d |\n", r.Pairs, r.Clients, r.ChecksPerS, r.FloorChecksPerS,
		r.Ratio, r.CPURatio, r.P50Millis, r.P99Millis, r.Errors, at, r.Load.CPUs, r.FloorCPUs, r.BytesPerCheck, r.GAENBytes10k)
}

func printLoadText(w io.Writer, r *loadbench.Result) {
	if r.Filled {
		fmt.Fprintf(w, "%d pairs in %d uploads of up to %d sightings, filled in %.1f s\n", r.Pairs, r.Uploads, r.UploadSightings, r.FillSeconds)
	}
	fmt.Fprintf(w, "checks of %d sightings under %d keys, %d clients, %.1f s a phase; %s\n", r.Sightings, r.Keys, r.Clients, r.DurationSeconds, r.Cores)
	phase := func(name string, p loadbench.Phase) {
		loop := "closed loop"
		if p.Rate > 0 {
			loop = fmt.Sprintf("open loop at %.0f/s", p.Rate)
		}
		fmt.Fprintf(w, "%-10s %8.1f checks/s  (%s; %d sent, %d errors; p50 %.1f ms, p99 %.1f ms; %d of %d met phones exposed; %.2f CPUs)\n",
			name+":", p.ChecksPerS, loop, p.Sent, p.Errors, p.P50Millis, p.P99Millis, p.Exposed, p.Met, p.CPUs)
		if p.Exhausted {
			fmt.Fprintln(w, "           the pre-built checks ran out before the duration: build more with --checks")
		}
		if p.FirstError != "" {
			fmt.Fprintf(w, "           first error: %s\n", p.FirstError)
		}
	}
	phase("load", r.Load)
	if r.AtRate != nil {
		phase(fmt.Sprintf("at %.0f%%", 100*r.AtFraction), *r.AtRate)
	}
	fmt.Fprintf(w, "%-10s %8.1f checks/s  (Oblivious HTTP open + seal alone, same sizes, %d goroutines; %.1f s between the peak's slices, %.2f CPUs)\n",
		"floor:", r.FloorChecksPerS, r.Clients, r.FloorSeconds, r.FloorCPUs)
	fmt.Fprintf(w, "%-10s %8.2f  (per CPU-second: %.2f)\n", "ratio:", r.Ratio, r.CPURatio)
	fmt.Fprintf(w, "%-10s %8d bytes  (request %d + answer %d; a GAEN phone's day at 10,000 cases: %d)\n", "wire:", r.BytesPerCheck, r.RequestBytes, r.AnswerBytes, r.GAENBytes10k)
}
