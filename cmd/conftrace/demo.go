package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
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
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/population"
	"github.com/conftrace/conftrace/internal/wirebench"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// runDemo runs the whole system on a simulated population: a real backend
// (simulated TEE, SQLite in a temporary directory) on loopback, whose clock
// follows the simulation, or a running one (--server), driven by simulated
// phones and a health authority through the client SDK over Oblivious HTTP.
func runDemo(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "demo", "demo [--people N] [--days N] [--seed N] [--gaen-share F] [--gps [--gps-check-every N]] [--detailed-answers] [--max-order N] [--json] [--out DIR]\n"+
		"       conftrace demo --server URL --authority-key FILE [--gaen-export-key FILE] [--measurement HEX ...] [--allow-simulated] [flags as above]\n\n"+
		"Runs the whole system on a simulated population and reports what it did beside\n"+
		"the ground truth. Fails if any answer differs from the protocol's.\n\n"+
		"Every app user's phone makes one exchange a day: its exposure check, with the\n"+
		"poll of its test's result and, once its user consented after a positive\n"+
		"result, its upload, in the same request. Answers are coarse, as the default\n"+
		"policy has them: exposed or not, the last exposed day and the matching rules.\n"+
		"--detailed-answers gives the local backend a policy that also answers every\n"+
		"day's figures and the GPS episodes, which the demo then compares too.\n\n"+
		"--max-order 2 or 3 gives the local backend a policy of n-order notifications:\n"+
		"phones told they were exposed may, with their users' consent, warn their own\n"+
		"contacts, who are told the order; the demo checks every order's answers and\n"+
		"reports notifications per order and the recall of true second-order infections.\n\n"+
		"A share of the people without the app (--gaen-share) run a foreign GAEN app:\n"+
		"app phones record their identifiers, and when they test positive and consent,\n"+
		"the demo, as their key server, imports their keys into the backend in a signed\n"+
		"GAEN export, which the backend matches one-sided.\n\n"+
		"With --gps, the health authority also uploads positive patients' GPS traces and\n"+
		"app users' phones check their own traces; every answer is compared with the\n"+
		"brute-force matching rule. The Bluetooth figures stay the same.\n\n"+
		"With --server, the demo drives a backend that is already running, whose policy\n"+
		"lists the authority of --authority-key and, for the GAEN-only phones, the GAEN\n"+
		"export key of --gaen-export-key (without it they are left out). Its clock is\n"+
		"real, so the simulated days end yesterday and must fit in its retention window\n"+
		"(at most retention_days-1; that is the default). Every identifier the backend\n"+
		"sees is drawn from the seed and a fresh random run nonce, so that runs do not\n"+
		"see each other's data. The counts of --server runs are not reproducible from\n"+
		"the seed: the dates follow the calendar, and the GPS city moves with the nonce.\n"+
		"The demo adds data to that backend: use a test one.")
	var f demoFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := f.check(fs); err != nil {
		return err
	}
	cfg := population.Config{People: f.people, Days: f.days, Seed: f.seed, Adoption: f.adoption, GAENShare: f.gaenShare,
		GPS: f.withGPS, GPSCheckEvery: f.gpsEvery, DetailedAnswers: f.detailed, MaxOrder: f.maxOrder}
	var (
		s   *population.Summary
		err error
	)
	if f.server != "" {
		if !isSet(fs, "days") {
			cfg.Days = 0 // as many as the backend's retention window holds
		}
		if f.gaenKeyFile == "" && cfg.GAENShare > 0 {
			fmt.Fprintln(cio.stderr, "demo: no --gaen-export-key, so no GAEN-only phones: give the private key of a GAEN export key that the backend's policy lists to add them")
			cfg.GAENShare = 0
		}
		s, err = demoServer(ctx, cfg, f, progressBar(cio.stderr))
	} else {
		s, err = demo(ctx, cfg, progressBar(cio.stderr))
	}
	if err != nil {
		return err
	}
	return reportDemo(cio, s, f)
}

// demoFlags are the flags of demo.
type demoFlags struct {
	people, days, gpsEvery int
	seed                   uint64
	adoption, gaenShare    float64
	asJSON, withGPS        bool
	detailed               bool
	maxOrder               int
	out                    string
	server, keyFile        string
	gaenKeyFile            string
	exp                    expectFlags
}

func (f *demoFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.people, "people", 2000, "the population `size`")
	fs.IntVar(&f.days, "days", 21, "the simulated `days` (with --server: default and most the backend's retention_days-1)")
	fs.Uint64Var(&f.seed, "seed", 1, "the random `seed`; the same seed gives the same summary (apart from timing; not with --server)")
	fs.Float64Var(&f.adoption, "adoption", 0.6, "the `fraction` of people running the app")
	fs.Float64Var(&f.gaenShare, "gaen-share", 0.1, "the `fraction` of the people without the app who run a foreign GAEN app (0 for none)")
	fs.BoolVar(&f.asJSON, "json", false, "print the summary as JSON")
	fs.StringVar(&f.out, "out", "", "write summary.json and report.html to this `directory`")
	fs.StringVar(&f.server, "server", "", "drive an already running backend at this `URL` instead of starting one")
	fs.StringVar(&f.keyFile, "authority-key", "", "with --server: the health authority's private key `file` (authority keygen), listed in the backend's policy")
	fs.StringVar(&f.gaenKeyFile, "gaen-export-key", "", "with --server: the PEM ECDSA P-256 private key `file` that signs the GAEN-only phones' exports; the backend's policy must list its public key")
	f.exp.register(fs)
	fs.BoolVar(&f.withGPS, "gps", false, "add GPS traces: patients' uploads and devices' trace checks")
	fs.IntVar(&f.gpsEvery, "gps-check-every", 3, "with --gps: each phone checks its GPS trace every `N` days")
	fs.IntVar(&f.maxOrder, "max-order", 0, "give the local backend a policy of n-order notifications up to this `order`, 1 to 3\n"+
		"(default 1; with --server: 0, whatever the backend's policy says, which must otherwise match)")
	fs.BoolVar(&f.detailed, "detailed-answers", false, "give the local backend a policy that answers every day's figures and the GPS episodes, and compare them too (with --server: the backend's policy must already)")
}

// check refuses flags that do not go together or are out of range.
func (f *demoFlags) check(fs *flag.FlagSet) error {
	switch {
	case f.server != "" && f.keyFile == "":
		return usagef("--server needs --authority-key: the running backend's policy must list that authority")
	case f.server == "" && (f.keyFile != "" || f.gaenKeyFile != "" || isSet(fs, "measurement") || isSet(fs, "allow-simulated")):
		return usagef("--authority-key, --gaen-export-key, --measurement and --allow-simulated need --server")
	case f.people < 2 || f.people > 1_000_000:
		return usagef("--people %d: want 2 to 1000000", f.people)
	case f.days < 1 || f.days > 365:
		return usagef("--days %d: want 1 to 365", f.days)
	case f.adoption <= 0 || f.adoption > 1:
		return usagef("--adoption %v: want more than 0, at most 1", f.adoption)
	case f.gaenShare < 0 || f.gaenShare > 1:
		return usagef("--gaen-share %v: want 0 to 1", f.gaenShare)
	case f.server != "" && f.gaenKeyFile == "" && isSet(fs, "gaen-share") && f.gaenShare > 0:
		return usagef("--gaen-share with --server needs --gaen-export-key: the running backend imports only exports signed by a key its policy lists")
	case f.maxOrder < 0 || f.maxOrder > policy.MaxOrderLimit:
		return usagef("--max-order %d: want 1 to %d", f.maxOrder, policy.MaxOrderLimit)
	case f.gpsEvery < 1 || f.gpsEvery > 14:
		return usagef("--gps-check-every %d: want 1 to 14 days", f.gpsEvery)
	case isSet(fs, "gps-check-every") && !f.withGPS:
		return usagef("--gps-check-every needs --gps")
	}
	return nil
}

// reportDemo writes the summary as --out and --json ask, and fails if the
// backend was not exact.
func reportDemo(cio cmdIO, s *population.Summary, f demoFlags) error {
	if f.out != "" {
		if err := writeDemoOutput(f.out, s); err != nil {
			return err
		}
	}
	if f.asJSON {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(cio.stdout, "%s\n", b)
	} else {
		population.WriteTable(cio.stdout, s)
		if f.out != "" {
			fmt.Fprintf(cio.stdout, "\nreport: %s\n", filepath.Join(f.out, "report.html"))
		}
	}
	if err := s.Check(); err != nil {
		fmt.Fprintf(cio.stderr, "\n!!! PROTOCOL MISMATCH: %v. The backend did not answer as the protocol requires. This is a bug. !!!\n\n", err)
		return err
	}
	return nil
}

// demoGAENKeyName names the demo's GAEN key server in the local backend's
// policy.
const demoGAENKeyName = "demo-gaen"

// demo starts a backend on loopback and runs the simulation against it.
// The backend's policy lists a fresh GAEN export key, with which the
// simulation signs the GAEN-only people's exports.
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
	pol := policy.Default()
	// In-process there is no network whose timing an observer could read,
	// so answers leave at once (localbackend's own default, which a policy
	// of the caller's replaces), and the demo does not wait.
	pol.AnswerReleaseMillis = 0
	if cfg.DetailedAnswers {
		pol.Answers = policy.AnswersDetailed
	}
	pol.Orders = policy.DefaultOrders(cfg.MaxOrder, pol.Risk.MinimumWeightedMinutes)
	if cfg.GAENShare > 0 {
		if cfg.GAENExportKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(&cfg.GAENExportKey.PublicKey)
		if err != nil {
			return nil, err
		}
		pol.GAENExportKeys = []policy.ExportKey{{Name: demoGAENKeyName, PublicKey: der}}
	}
	var (
		mu  sync.Mutex
		now = population.DefaultStart()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	// The production path: a governance set (here a demo health authority
	// and a demo auditor) signs a release statement for this build and
	// policy, the backend serves it, and the phones pin the set rather
	// than a measurement.
	var members []*release.Key
	for _, name := range []string{"demo-health-authority", "demo-auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			return nil, err
		}
		members = append(members, k)
	}
	b, err := localbackend.Start(ctx, localbackend.Config{Dir: dir, Authority: lab, Policy: &pol, Now: clock, Governance: members})
	if err != nil {
		return nil, err
	}
	defer b.Close()

	cfg.Server = b.URL
	cfg.Expectations = attest.Expectations{AllowSimulated: true}
	cfg.Governance = b.Governance
	cfg.Authority = lab
	cfg.SetClock = func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	cfg.Daily = b.Service.Maintain // as conftraced does hourly
	// conftraced has the enclave flush its journal on the clock every
	// second; here the clock moves when the simulation moves it, and the
	// flushes it makes due happen then: uploads become durable only so.
	cfg.Flush = b.Service.Enclave.FlushDue
	cfg.Progress = progress
	s, err := population.Run(ctx, cfg)
	if s != nil {
		s.Timing.SetBackendLatencies(b.Latencies())
	}
	if err != nil {
		return s, err
	}
	s.NationalCheckBytes, err = nationalCheck(ctx, client.Config{Server: b.URL, Expectations: cfg.Expectations, Governance: b.Governance, Now: clock})
	return s, err
}

// nationalCheck measures what a phone at national scale spends on its
// daily exchange with the backend cfg names: a check of 2,000 sightings
// under 15 daily keys, request and answer on the wire.
func nationalCheck(ctx context.Context, cfg client.Config) (int, error) {
	cs, err := wirebench.Measure(ctx, cfg, []int{2000}, 15)
	if err != nil {
		return 0, fmt.Errorf("measuring a check of 2,000 sightings: %w", err)
	}
	return cs[0].Bytes(), nil
}

// demoServer runs the simulation against a backend that is already
// running and keeps real time; it has no clock to move and runs its own
// retention and journal flushes, so neither SetClock, Daily nor Flush is
// set.
func demoServer(ctx context.Context, cfg population.Config, f demoFlags, progress func(day, days int)) (*population.Summary, error) {
	b, err := os.ReadFile(f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--authority-key: %w", err)
	}
	key, err := authority.ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("--authority-key %s: %w", f.keyFile, err)
	}
	if f.gaenKeyFile != "" {
		if cfg.GAENExportKey, err = readECPrivateKey(f.gaenKeyFile); err != nil {
			return nil, fmt.Errorf("--gaen-export-key %s: %w", f.gaenKeyFile, err)
		}
	}
	cfg.Server = f.server
	cfg.Expectations = f.exp.expectations()
	cfg.Authority = key
	cfg.Progress = progress
	s, err := population.Run(ctx, cfg)
	if err != nil {
		return s, err
	}
	s.NationalCheckBytes, err = nationalCheck(ctx, client.Config{Server: f.server, Expectations: cfg.Expectations})
	return s, err
}

// readECPrivateKey reads an ECDSA P-256 private key from a PEM file, in
// the forms openssl writes: "EC PRIVATE KEY" (SEC 1) or "PRIVATE KEY"
// (PKCS #8).
func readECPrivateKey(file string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("a PEM %q block, want \"EC PRIVATE KEY\" or \"PRIVATE KEY\"", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("a %T, want an ECDSA P-256 private key", k)
	}
	return ec, nil
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
