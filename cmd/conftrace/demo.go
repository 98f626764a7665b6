package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/population"
)

// runDemo runs the whole system on a simulated population: a real backend
// (simulated TEE, SQLite in a temporary directory) on loopback, whose clock
// follows the simulation, or a running one (--server), driven by simulated
// phones and a health authority through the client SDK over Oblivious HTTP.
func runDemo(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "demo", "demo [--people N] [--days N] [--seed N] [--gps [--gps-check-every N]] [--json] [--out DIR]\n"+
		"       conftrace demo --server URL --authority-key FILE [--measurement HEX ...] [--allow-simulated] [flags as above]\n\n"+
		"Runs the whole system on a simulated population and reports what it did beside\n"+
		"the ground truth. Fails if any exposure answer differs from the protocol's.\n\n"+
		"With --gps, the health authority also uploads positive patients' GPS traces and\n"+
		"app users' phones check their own traces; every answer is compared with the\n"+
		"brute-force matching rule. The Bluetooth figures stay the same.\n\n"+
		"With --server, the demo drives a backend that is already running, whose policy\n"+
		"lists the authority of --authority-key. Its clock is real, so the simulated days\n"+
		"end yesterday and must fit in its retention window (at most retention_days-1;\n"+
		"that is the default). Every identifier the backend sees is drawn from the seed\n"+
		"and a fresh random run nonce, so that runs do not see each other's data. The\n"+
		"counts of --server runs are not reproducible from the seed: the dates follow the\n"+
		"calendar, and the GPS city moves with the nonce. The demo adds data to that\n"+
		"backend: use a test one.")
	people := fs.Int("people", 2000, "the population `size`")
	days := fs.Int("days", 21, "the simulated `days` (with --server: default and most the backend's retention_days-1)")
	seed := fs.Uint64("seed", 1, "the random `seed`; the same seed gives the same summary (apart from timing; not with --server)")
	adoption := fs.Float64("adoption", 0.6, "the `fraction` of people running the app")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	out := fs.String("out", "", "write summary.json and report.html to this `directory`")
	server := fs.String("server", "", "drive an already running backend at this `URL` instead of starting one")
	keyFile := fs.String("authority-key", "", "with --server: the health authority's private key `file` (authority keygen), listed in the backend's policy")
	var exp expectFlags
	exp.register(fs)
	withGPS := fs.Bool("gps", false, "add GPS traces: patients' uploads and devices' trace checks")
	gpsEvery := fs.Int("gps-check-every", 3, "with --gps: each phone checks its GPS trace every `N` days")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *server != "" && *keyFile == "":
		return usagef("--server needs --authority-key: the running backend's policy must list that authority")
	case *server == "" && (*keyFile != "" || isSet(fs, "measurement") || isSet(fs, "allow-simulated")):
		return usagef("--authority-key, --measurement and --allow-simulated need --server")
	case *people < 2 || *people > 1_000_000:
		return usagef("--people %d: want 2 to 1000000", *people)
	case *days < 1 || *days > 365:
		return usagef("--days %d: want 1 to 365", *days)
	case *adoption <= 0 || *adoption > 1:
		return usagef("--adoption %v: want more than 0, at most 1", *adoption)
	case *gpsEvery < 1 || *gpsEvery > 14:
		return usagef("--gps-check-every %d: want 1 to 14 days", *gpsEvery)
	case isSet(fs, "gps-check-every") && !*withGPS:
		return usagef("--gps-check-every needs --gps")
	}
	cfg := population.Config{People: *people, Days: *days, Seed: *seed, Adoption: *adoption, GPS: *withGPS, GPSCheckEvery: *gpsEvery}
	var (
		s   *population.Summary
		err error
	)
	if *server != "" {
		if !isSet(fs, "days") {
			cfg.Days = 0 // as many as the backend's retention window holds
		}
		s, err = demoServer(ctx, cfg, *server, *keyFile, exp.expectations(), progressBar(cio.stderr))
	} else {
		s, err = demo(ctx, cfg, progressBar(cio.stderr))
	}
	if err != nil {
		return err
	}
	if *out != "" {
		if err := writeDemoOutput(*out, s); err != nil {
			return err
		}
	}
	if *asJSON {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(cio.stdout, "%s\n", b)
	} else {
		population.WriteTable(cio.stdout, s)
		if *out != "" {
			fmt.Fprintf(cio.stdout, "\nreport: %s\n", filepath.Join(*out, "report.html"))
		}
	}
	if err := s.Check(); err != nil {
		fmt.Fprintf(cio.stderr, "\n!!! PROTOCOL MISMATCH: %v. The backend did not answer as the protocol requires. This is a bug. !!!\n\n", err)
		return err
	}
	return nil
}

// demo starts a backend on loopback and runs the simulation against it.
func demo(ctx context.Context, cfg population.Config, progress func(day, days int)) (*population.Summary, error) {
	dir, err := os.MkdirTemp("", "conftrace-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	lab, err := authority.GenerateKey("demo-lab")
	if err != nil {
		return nil, err
	}
	var (
		mu  sync.Mutex
		now = population.DefaultStart()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b, err := localbackend.Start(ctx, localbackend.Config{Dir: dir, Authority: lab, Now: clock})
	if err != nil {
		return nil, err
	}
	defer b.Close()

	cfg.Server = b.URL
	cfg.Expectations = b.Expectations()
	cfg.Authority = lab
	cfg.SetClock = func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	cfg.Daily = b.Service.Maintain // as conftraced does hourly
	cfg.Progress = progress
	s, err := population.Run(ctx, cfg)
	if s != nil {
		s.Timing.SetBackendLatencies(b.Latencies())
	}
	return s, err
}

// demoServer runs the simulation against a backend that is already
// running and keeps real time; it has no clock to move and runs its own
// retention, so neither SetClock nor Daily is set.
func demoServer(ctx context.Context, cfg population.Config, server, keyFile string, exp attest.Expectations, progress func(day, days int)) (*population.Summary, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--authority-key: %w", err)
	}
	key, err := authority.ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("--authority-key %s: %w", keyFile, err)
	}
	cfg.Server = server
	cfg.Expectations = exp
	cfg.Authority = key
	cfg.Progress = progress
	return population.Run(ctx, cfg)
}

// progressBar draws the simulated days on w when w is a terminal, and
// nothing otherwise.
func progressBar(w io.Writer) func(day, days int) {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return func(day, days int) {
		const width = 30
		n := day * width / days
		fmt.Fprintf(w, "\rsimulating [%s%s] day %d/%d", strings.Repeat("#", n), strings.Repeat(".", width-n), day, days)
		if day == days {
			fmt.Fprintln(w)
		}
	}
}

func writeDemoOutput(dir string, s *population.Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	var html strings.Builder
	if err := population.WriteHTML(&html, s); err != nil {
		return err
	}
	return errors.Join(
		atomicfile.Write(filepath.Join(dir, "summary.json"), append(b, '\n'), 0o644),
		atomicfile.Write(filepath.Join(dir, "report.html"), []byte(html.String()), 0o644),
	)
}
