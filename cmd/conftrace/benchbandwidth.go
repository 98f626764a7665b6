package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/population"
	"github.com/conftrace/conftrace/internal/wirebench"
	"github.com/conftrace/conftrace/policy"
)

// gaenCases is the national rate of positive cases a day at which the
// bandwidth target compares a check with a GAEN phone's download.
const gaenCases = 10_000

// gaenExportKeys is the size of the export whose bytes a key are measured:
// a day's keys at gaenCases.
const gaenExportKeys = gaenCases * population.GAENKeysPerCase

// bandwidth is what bench bandwidth prints for one check: its bytes on the
// wire, protocol v2's, and the GAEN yardstick.
type bandwidth struct {
	Sightings       int `json:"sightings"`
	Keys            int `json:"keys"`
	ReportBytes     int `json:"report_bytes"`
	RequestBytes    int `json:"request_bytes"`
	AnswerBytes     int `json:"answer_bytes"`
	BytesPerCheck   int `json:"bytes_per_check"`
	V2ReportBytes   int `json:"v2_report_bytes"`
	V2RequestBytes  int `json:"v2_request_bytes"`
	V2BytesPerCheck int `json:"v2_bytes_per_check"`
	// GAENBytes10k is what a GAEN phone downloads a day at 10,000
	// positive cases a day; Ratio is BytesPerCheck / GAENBytes10k, at most
	// 0.01 for the target.
	GAENKeysPerCase int     `json:"gaen_keys_per_case"`
	GAENBytesPerKey int     `json:"gaen_bytes_per_key"`
	GAENBytes10k    int     `json:"gaen_bytes_10k"`
	Ratio           float64 `json:"ratio"`
	// CrossoverCases is the rate of positive cases a day from which a
	// GAEN phone's download costs more than the check.
	CrossoverCases float64 `json:"crossover_cases_per_day"`
	// ExportBytesPerKey is what a key costs in a signed, compressed
	// export file of a day's keys at 10,000 cases, measured;
	// ExportBytes10k and ExportRatio compare with that instead.
	ExportBytesPerKey float64 `json:"gaen_export_bytes_per_key"`
	ExportBytes10k    int     `json:"gaen_export_bytes_10k"`
	ExportRatio       float64 `json:"export_ratio"`
}

func newBandwidth(c wirebench.Check, exportPerKey float64) bandwidth {
	gaen := gaenCases * population.GAENKeysPerCase * population.GAENBytesPerKey
	export := int(gaenCases * population.GAENKeysPerCase * exportPerKey)
	return bandwidth{
		Sightings: c.Sightings, Keys: c.Keys, ReportBytes: c.Report,
		RequestBytes: c.Request, AnswerBytes: c.Answer, BytesPerCheck: c.Bytes(),
		V2ReportBytes: c.V2Report, V2RequestBytes: c.V2Request, V2BytesPerCheck: c.V2Bytes(),
		GAENKeysPerCase: population.GAENKeysPerCase, GAENBytesPerKey: population.GAENBytesPerKey, GAENBytes10k: gaen,
		Ratio:             float64(c.Bytes()) / float64(gaen),
		CrossoverCases:    float64(c.Bytes()) / float64(population.GAENKeysPerCase*population.GAENBytesPerKey),
		ExportBytesPerKey: exportPerKey, ExportBytes10k: export, ExportRatio: float64(c.Bytes()) / float64(export),
	}
}

// runBenchBandwidth measures what a phone's daily exposure check costs on
// the wire, beside protocol v2 and a GAEN phone's daily download.
func runBenchBandwidth(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench bandwidth", "bench bandwidth [--sightings 2000[,N...]] [--keys 15] [--json | --markdown]\n\n"+
		"Starts a backend in this process (simulated TEE, temporary directory) and makes a\n"+
		"phone's daily exposure check of each number of sightings through the client SDK,\n"+
		"over attested Oblivious HTTP. Prints what each cost on the wire, request and\n"+
		"answer, padded to their size classes and encapsulated, beside the same check in\n"+
		"protocol v2, and beside what a GAEN phone downloads a day at 10,000 positive\n"+
		"cases a day: 14 keys a case, 28 bytes a key. The target is a check of 2,000\n"+
		"sightings at most 1/100 of that. Beside the 28 bytes a key, the bytes a key of\n"+
		"a signed, compressed GAEN export of a day's keys at that rate are measured.\n\n"+
		"--json prints one object for one number of sightings: bytes_per_check,\n"+
		"gaen_bytes_10k, ratio (the first over the second) and the figures beside them.")
	counts := fs.String("sightings", "2000", "comma-separated `numbers` of sightings")
	keys := fs.Int("keys", 15, "daily `keys` in each check (two weeks and today)")
	asJSON := fs.Bool("json", false, "print one JSON object (one --sightings number)")
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
	switch {
	case *keys < 1 || *keys > contactlog.MaxKeys:
		return usagef("--keys: %d is not in 1..%d", *keys, contactlog.MaxKeys)
	case *asJSON && len(ns) != 1:
		return usagef("--json prints one check: give one --sightings number")
	case *asJSON && *markdown:
		return usagef("--json or --markdown, not both")
	}
	checks, err := measureBandwidth(ctx, ns, *keys)
	if err != nil {
		return err
	}
	perKey, err := wirebench.ExportBytesPerKey(gaenExportKeys)
	if err != nil {
		return err
	}
	var rows []bandwidth
	for _, c := range checks {
		rows = append(rows, newBandwidth(c, perKey))
	}
	if *asJSON {
		return json.NewEncoder(cio.stdout).Encode(rows[0])
	}
	printBandwidth(cio.stdout, rows, *markdown)
	return nil
}

// measureBandwidth starts a local backend that takes checks of up to
// policy.MaxSightingsPerRequest sightings and measures a check of each
// count through it.
func measureBandwidth(ctx context.Context, counts []int, keys int) ([]wirebench.Check, error) {
	dir, err := os.MkdirTemp("", "conftrace-bandwidth-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pol := policy.Default()
	pol.AnswerReleaseMillis = 0
	pol.Limits.MaxCheckSightings = policy.MaxSightingsPerRequest
	b, err := localbackend.Start(ctx, localbackend.Config{Dir: dir, Policy: &pol})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return wirebench.Measure(ctx, client.Config{Server: b.URL, Expectations: b.Expectations()}, counts, keys)
}

// printBandwidth prints rows as a table, then the yardstick.
func printBandwidth(w io.Writer, rows []bandwidth, markdown bool) {
	row := "%10s  %12s  %11s  %10s  %15s  %18s  %7s  %16s\n"
	if markdown {
		row = "| %s | %s | %s | %s | %s | %s | %s | %s |\n"
	}
	fmt.Fprintf(w, row, "sightings", "report bytes", "request B", "answer B", "bytes per check", "v2 bytes per check", "v3 / v2", "of GAEN at 10k/d")
	if markdown {
		fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	}
	for _, r := range rows {
		fmt.Fprintf(w, row, strconv.Itoa(r.Sightings), strconv.Itoa(r.ReportBytes), strconv.Itoa(r.RequestBytes), strconv.Itoa(r.AnswerBytes),
			strconv.Itoa(r.BytesPerCheck), strconv.Itoa(r.V2BytesPerCheck), fmt.Sprintf("%.2f", float64(r.BytesPerCheck)/float64(r.V2BytesPerCheck)),
			fmt.Sprintf("1/%.0f", 1/r.Ratio))
	}
	r := rows[0]
	fmt.Fprintf(w, "\n%d daily keys a check. A GAEN phone downloads %d keys a positive case at %d bytes a key: %d bytes a day at %d cases a day.\n",
		r.Keys, r.GAENKeysPerCase, r.GAENBytesPerKey, r.GAENBytes10k, gaenCases)
	fmt.Fprintf(w, "A signed, compressed export of a day's %d keys measured %.1f bytes a key: %d bytes a day at %d cases a day.\n",
		gaenExportKeys, r.ExportBytesPerKey, r.ExportBytes10k, gaenCases)
	for _, r := range rows {
		fmt.Fprintf(w, "A check of %d sightings (%d bytes) costs less than a GAEN phone's download from %.0f positive cases a day (%.0f with compressed exports); at %d it is 1/%.0f of it (1/%.0f).\n",
			r.Sightings, r.BytesPerCheck, r.CrossoverCases, float64(r.BytesPerCheck)/(float64(r.GAENKeysPerCase)*r.ExportBytesPerKey), gaenCases, 1/r.Ratio, 1/r.ExportRatio)
	}
}
