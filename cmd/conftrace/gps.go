package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/gps"
)

// errEmptyTrace is returned when a trace file holds no fixes, or none the
// backend still keeps data for.
var errEmptyTrace = errors.New("the trace holds no fixes")

// traceFlags are the --trace and --format flags of the GPS commands.
type traceFlags struct {
	file, format string
}

func (t *traceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.file, "trace", "", "the trace `file`: CSV (time,lat,lon[,accuracy]) or GPX (required)")
	fs.StringVar(&t.format, "format", "", "the trace file's `format`, csv or gpx (default: from the file's extension)")
}

// check refuses a missing --trace and a format that cannot be told, so
// that these fail before any network traffic.
func (t *traceFlags) check() error {
	if t.file == "" {
		return usagef("--trace is required")
	}
	_, err := t.kind()
	return err
}

// kind returns "csv" or "gpx": --format if given, else the extension.
func (t *traceFlags) kind() (string, error) {
	if t.format != "" {
		switch f := strings.ToLower(t.format); f {
		case "csv", "gpx":
			return f, nil
		}
		return "", usagef("--format %q: want csv or gpx", t.format)
	}
	switch ext := strings.ToLower(filepath.Ext(t.file)); ext {
	case ".csv", ".gpx":
		return ext[1:], nil
	}
	return "", usagef("cannot tell the format of %s from its extension: give --format csv or gpx", t.file)
}

// read reads and validates the trace. The file's bytes are cleared once
// parsed: a device's own trace is as personal as data gets, and the copy
// in memory should not outlive its use.
func (t *traceFlags) read() (gps.Trace, error) {
	kind, err := t.kind()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(t.file)
	if err != nil {
		return nil, fmt.Errorf("reading trace: %w", err)
	}
	defer clear(data)
	parse := gps.ParseCSV
	if kind == "gpx" {
		parse = gps.ParseGPX
	}
	// Limits{} bounds the file's size and points and refuses fixes from
	// the future; the backend applies its policy's own bound on top.
	tr, err := parse(bytes.NewReader(data), gps.Limits{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.file, err)
	}
	if len(tr) == 0 {
		return nil, fmt.Errorf("%s: %w", t.file, errEmptyTrace)
	}
	return tr, nil
}

// checkTraceSize refuses locally a trace the backend's policy would refuse,
// with a message that says what to do.
func checkTraceSize(c *client.Client, tr gps.Trace) error {
	if n := c.Policy().GPS.MaxTracePoints; len(tr) > n {
		return fmt.Errorf("the trace has %d fixes; the backend's policy accepts at most %d: split it or sample it more sparsely", len(tr), n)
	}
	return nil
}

// runAuthorityGPS signs an infected patient's GPS trace and submits it to
// a backend whose attestation the authority verified.
func runAuthorityGPS(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority gps", "authority gps --server URL --key FILE --trace FILE [--format csv|gpx]\n"+
		"    [--measurement HEX ...] [--allow-simulated]\n\n"+
		"Reads an infected patient's GPS trace, signs it with the authority's key and\n"+
		"submits it to the backend after verifying the backend's attestation. The\n"+
		"backend keeps it sealed for its retention window; devices that check their own\n"+
		"traces learn whether they were near it. Prints how many fixes were stored.")
	var backend backendFlags
	backend.register(fs)
	keyFile := fs.String("key", "", "the authority's private key `file`, from authority keygen (required)")
	var trace traceFlags
	trace.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *backend.server == "":
		return usagef("--server is required")
	case *keyFile == "":
		return usagef("--key is required")
	}
	if err := trace.check(); err != nil {
		return err
	}
	// Local mistakes (key, trace) first, before any network traffic.
	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("reading key: %w", err)
	}
	key, err := authority.ParsePrivateKeyPEM(pem)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	tr, err := trace.read()
	if err != nil {
		return err
	}
	c, err := backend.client(ctx)
	if err != nil {
		return err
	}
	if err := checkTraceSize(c, tr); err != nil {
		return err
	}
	signed, err := key.SignTrace(tr, time.Now())
	if err != nil {
		return err
	}
	n, err := c.SubmitTrace(ctx, signed)
	if err != nil {
		return refused("the trace", err)
	}
	fmt.Fprintf(cio.stdout, "stored %d points\n", n)
	return nil
}

// runDeviceGPSCheck sends the device's own GPS trace to its backend and
// prints whether, and when, it came near an infected patient.
func runDeviceGPSCheck(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device gps-check", "device gps-check --state DIR --trace FILE [--format csv|gpx] [--json]\n\n"+
		"Sends the fixes of the device's own GPS trace that fall in the backend's\n"+
		"retention window to the backend, which compares them with infected patients'\n"+
		"traces and forgets them. Prints exposed or not exposed, then one line per\n"+
		"episode near a patient:\n"+
		"<start RFC3339> <end RFC3339> <minutes> min, closest <metres> m\n"+
		"With --json, prints the backend's whole answer.")
	var trace traceFlags
	trace.register(cmd.FlagSet)
	asJSON := cmd.Bool("json", false, "print the backend's answer as JSON")
	d, err := cmd.open(ctx, args, trace.check)
	if err != nil {
		return err
	}
	tr, err := trace.read()
	if err != nil {
		return err
	}
	defer clear(tr)
	c, err := deviceClient(ctx, cio, d)
	if err != nil {
		return err
	}
	resp, err := c.CheckTrace(ctx, tr)
	if errors.Is(err, client.ErrNoRecentFixes) {
		return fmt.Errorf("%s: %w", trace.file, err)
	}
	if err != nil {
		return refused("the trace check", err)
	}
	if *asJSON {
		b, err := json.MarshalIndent(resp, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding answer: %w", err)
		}
		_, err = cio.stdout.Write(append(b, '\n'))
		return err
	}
	return printTraceCheck(cio, resp)
}

// printTraceCheck prints the answer: the verdict on the first line, for
// scripts, then one line per episode.
func printTraceCheck(cio cmdIO, resp api.TraceCheckResponse) error {
	var b strings.Builder
	if resp.Exposed {
		b.WriteString("exposed\n")
	} else {
		b.WriteString("not exposed\n")
	}
	num := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	for _, e := range resp.Episodes {
		fmt.Fprintf(&b, "%s %s %s min, closest %s m\n",
			time.Unix(e.Start, 0).UTC().Format(time.RFC3339), time.Unix(e.End, 0).UTC().Format(time.RFC3339),
			num(e.Minutes), num(e.ClosestMeters))
	}
	if _, err := io.WriteString(cio.stdout, b.String()); err != nil {
		return err
	}
	if resp.Truncated {
		fmt.Fprintf(cio.stderr, "the backend lists only the first %d episodes\n", api.MaxEpisodes)
	}
	return nil
}
