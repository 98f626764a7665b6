// Package loadbench measures a backend's daily exposure checks end to end:
// phones' exchanges over Oblivious HTTP through loopback HTTP, against a
// backend whose index holds many uploaded pairs, beside the floor of the
// Oblivious HTTP work alone measured in the same run.
//
// Without Config.Server it starts the backend itself, in this process, as
// conftraced assembles it (package localbackend: internal/service, the
// server's gateway, the enclave over a sealed SQLite store, the simulated
// TEE) on a loopback port, with the policy's answer release grid off (see
// Config.AnswerReleaseMillis). It fills the index with Config.Pairs
// sightings through the enclave's own upload path (a lab's positive
// result, the phone's poll, the upload in a daily exchange), in uploads of
// Config.UploadSightings sightings over 14 days: the uploads are not timed
// and not flushed (the journal holds them in memory, as between two
// hourly flushes). A few of the uploaders met phones whose checks come
// later ("met" phones, Config.MetFraction of the checks), so that some
// answers say exposed, as a few percent of a country's would.
//
// The checks are built before the timing: each a fresh phone's daily
// exchange of Config.Sightings sightings under Config.Keys daily keys, as
// package wirebench builds it, padded and encapsulated to the gateway's
// key as a phone does, never one request's bytes twice. During the timing
// the load generator only posts them and keeps the answers; it opens and
// decodes them afterwards, so that its share of the CPUs, which the
// server shares, is as small as a client's can be.
//
// Phases: a closed loop (Config.Clients goroutines, each sending its next
// check when the last is answered) gives the peak; an open loop at
// Config.Rate checks a second (each check sent when due, latencies counted
// from then) gives the latencies at a load below the peak; its first two
// seconds are a warm-up, sent and not counted. With
// Config.AtFraction, the open loop follows the closed loop at that
// fraction of the peak it measured.
//
// The floor is the same number of goroutines doing only what the gateway
// must do for a check, in this process: open (decapsulate) a request of
// the same size and seal (encapsulate) an answer of the same size, with
// the same KEM and suite (package ohttp). It runs in slices between the
// peak's (a second of load, half a second of floor), so that both get the
// same share of a machine that other processes share; each phase and the
// floor also report the CPU time the process used, and CPURatio compares
// the two per CPU-second.
//
// A CPU profile (Config.Profile) covers the first phase; the floor's
// goroutines carry the label part=floor and the generator's part=generator
// (go tool pprof -tagignore part=floor, or part=generator too, for the
// server alone).
//
// Known limits: the generator and an in-process server share the same
// CPUs and Go runtime (GOMAXPROCS), stated in the result; a phase's
// pre-built checks are dated for the middle of the phase, and stay within
// the gateway's date window for phases of up to MaxPhase.
package loadbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"time"

	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/population"
	"github.com/conftrace/conftrace/policy"
)

// Defaults of a check and an upload: a phone's two weeks and today, 2,000
// sightings a check, uploads of 5,000 sightings; 2% of checks by phones
// that met an uploader.
const (
	DefaultSightings       = 2000
	DefaultKeys            = 15
	DefaultUploadSightings = 5000
	DefaultMetFraction     = 0.02
)

// MaxPhase is the longest a phase may last: its checks are dated when
// built, for the middle of the phase, and the gateway answers dates
// within its window (2 minutes either way); the peak phase, with the
// floor's slices between its own, lasts half as long again.
const MaxPhase = 2 * time.Minute

// peakGuess is the checks a second a closed loop's pre-built checks last
// for, when Config.Checks does not say: well above the peak measured.
const peakGuess = 3000

// gaenCases is the national rate of positive cases a day at which the
// bandwidth target compares a check with a GAEN phone's download.
const gaenCases = 10_000

// Config describes a run.
type Config struct {
	// Pairs is how many sightings the backend's index is filled with
	// (ignored with Server).
	Pairs int
	// Duration is each phase's length, at most MaxPhase.
	Duration time.Duration
	// Clients is how many checks the closed loop has in flight.
	Clients int
	// Rate, if positive, replaces the closed loop by an open loop at Rate
	// checks a second.
	Rate float64
	// AtFraction, if positive (and Rate is not), follows the closed loop
	// by an open loop at AtFraction times the peak it measured.
	AtFraction float64
	// Checks is how many checks the closed loop has built for it; 0 means
	// enough for peakGuess a second.
	Checks int
	// Server, if not empty, is the base URL of a running backend to load
	// instead of one started here; it is not filled.
	Server string
	// Dir holds the started backend's data.
	Dir string
	// Sightings and Keys make a check; UploadSightings an upload;
	// MetFraction is the share of checks by phones that met an uploader.
	// Zero values mean the defaults above.
	Sightings, Keys, UploadSightings int
	MetFraction                      float64
	// AnswerReleaseMillis is the started backend's policy's
	// answer_release_ms: 0 (the default) answers at once; a deployment's
	// grid adds up to one step to every latency.
	AnswerReleaseMillis int
	Seed                uint64
	Logger              *slog.Logger
	// Profile, if set, receives a CPU profile (pprof format) of the first
	// phase: the server's and the generator's work with an in-process
	// server.
	Profile io.Writer
}

func (c *Config) check() error {
	c.Sightings = cmpOr(c.Sightings, DefaultSightings)
	c.Keys = cmpOr(c.Keys, DefaultKeys)
	c.UploadSightings = cmpOr(c.UploadSightings, DefaultUploadSightings)
	if c.MetFraction == 0 {
		c.MetFraction = DefaultMetFraction
	}
	if c.Checks == 0 {
		c.Checks = int(peakGuess*c.Duration.Seconds()) + c.Clients
	}
	switch {
	case c.Server == "" && (c.Pairs < 1 || c.Dir == ""):
		return errors.New("loadbench: a backend started here needs pairs and a directory")
	case c.Duration <= 0 || c.Duration > MaxPhase:
		return fmt.Errorf("loadbench: a phase of %v, want up to %v", c.Duration, MaxPhase)
	case c.Clients < 1 || c.Clients > 4096:
		return fmt.Errorf("loadbench: %d clients, want 1 to 4096", c.Clients)
	case c.Rate < 0 || c.AtFraction < 0 || c.AtFraction > 1 || c.MetFraction < 0 || c.MetFraction > 1:
		return errors.New("loadbench: rate, fraction and met fraction must not be negative, fractions at most 1")
	case c.Sightings < 1 || c.Sightings > policy.Default().Limits.MaxCheckSightings || c.Keys < 2:
		return fmt.Errorf("loadbench: checks of %d sightings under %d keys", c.Sightings, c.Keys)
	case c.UploadSightings < 2 || c.UploadSightings > policy.Default().Limits.MaxUploadSightings:
		return fmt.Errorf("loadbench: uploads of %d sightings", c.UploadSightings)
	case c.Checks < 1:
		return fmt.Errorf("loadbench: %d checks", c.Checks)
	}
	return nil
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Result is what a run measured. The top-level checks_per_s, p50_ms,
// p99_ms and errors are the first phase's: the peak (closed loop) unless
// Rate was given.
type Result struct {
	Pairs           int     `json:"pairs"`
	Filled          bool    `json:"filled"`
	Uploads         int     `json:"uploads"`
	UploadSightings int     `json:"upload_sightings"`
	Sightings       int     `json:"sightings_per_check"`
	Keys            int     `json:"keys_per_check"`
	Clients         int     `json:"clients"`
	DurationSeconds float64 `json:"duration_s"`

	ChecksPerS float64 `json:"checks_per_s"`
	P50Millis  float64 `json:"p50_ms"`
	P99Millis  float64 `json:"p99_ms"`
	Errors     int     `json:"errors"`
	// Load is the first phase in full; AtRate the open loop that followed
	// it at AtFraction of its peak, if any.
	Load       Phase   `json:"load"`
	AtFraction float64 `json:"at_fraction,omitempty"`
	AtRate     *Phase  `json:"at_rate,omitempty"`

	// FloorChecksPerS is the Oblivious HTTP floor of the same sizes;
	// Ratio is ChecksPerS over it. FloorSeconds is how long the floor
	// ran, in slices between the first phase's, and FloorCPUs the CPUs
	// it had (see Phase.CPUs).
	FloorChecksPerS float64 `json:"floor_checks_per_s"`
	Ratio           float64 `json:"ratio"`
	FloorSeconds    float64 `json:"floor_s"`
	FloorCPUs       float64 `json:"floor_cpus_used"`
	// CPURatio is the checks answered a CPU-second over the floor's pairs
	// a CPU-second: Ratio, but for the CPU time each got, which other
	// processes on the machine do not change. 0 where unknown.
	CPURatio float64 `json:"cpu_ratio"`

	// RequestBytes and AnswerBytes are a check's on the wire (encapsulated);
	// BytesPerCheck their sum; GAENBytes10k what a GAEN phone downloads a
	// day at 10,000 positive cases (14 keys of 28 bytes each).
	RequestBytes  int `json:"request_bytes"`
	AnswerBytes   int `json:"answer_bytes"`
	BytesPerCheck int `json:"bytes_per_check"`
	GAENBytes10k  int `json:"gaen_bytes_10k"`

	// GOMAXPROCS and CPUs are this process's; Cores says how the server
	// and the generator shared them.
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUs       int    `json:"cpus"`
	Cores      string `json:"cores"`

	// FillSeconds is how long filling took; BuildSeconds building the
	// first phase's checks (neither is timed in the figures).
	FillSeconds  float64 `json:"fill_s"`
	BuildSeconds float64 `json:"build_s"`
	// FirstError is the first failed check's error, if any.
	FirstError string `json:"first_error,omitempty"`
}

// Run measures cfg.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &Result{Pairs: cfg.Pairs, UploadSightings: cfg.UploadSightings, Sightings: cfg.Sightings, Keys: cfg.Keys,
		Clients: cfg.Clients, DurationSeconds: cfg.Duration.Seconds(), AtFraction: cfg.AtFraction,
		GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU(),
		GAENBytes10k: gaenCases * population.GAENKeysPerCase * population.GAENBytesPerKey}
	base := cfg.Server
	var met []metPhone
	if base == "" {
		b, phones, err := startFilled(ctx, cfg, r)
		if err != nil {
			return nil, err
		}
		defer b.Close()
		base, met = b.URL, phones
		r.Cores = fmt.Sprintf("server and load generator in one process, sharing GOMAXPROCS=%d of %d CPUs; checks built and answers opened outside the timed phases", r.GOMAXPROCS, r.CPUs)
	} else {
		r.Pairs = 0
		r.Cores = fmt.Sprintf("load generator with GOMAXPROCS=%d of %d CPUs; the server as started", r.GOMAXPROCS, r.CPUs)
	}
	// A request goes out in one write, not net/http's 4 KiB ones: a
	// relay forwards a check in a few segments, not in a dozen syscalls.
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		MaxIdleConns: 0, MaxIdleConnsPerHost: 4096, DisableCompression: true, ForceAttemptHTTP2: false,
		WriteBufferSize: 64 << 10}}
	defer hc.CloseIdleConnections()
	t, err := fetchTarget(ctx, hc, base)
	if err != nil {
		return nil, err
	}
	m := &measurer{cfg: cfg, s: sender{hc: hc, t: t}, b: builder{t: t, sightings: cfg.Sightings, keys: cfg.Keys}, met: met}
	if err := m.run(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

// startFilled starts the backend and fills it; it returns the met phones,
// for checks: twice the first phase's share, for a second phase too.
func startFilled(ctx context.Context, cfg Config, r *Result) (*localbackend.Backend, []metPhone, error) {
	pol := policy.Default()
	pol.AnswerReleaseMillis = cfg.AnswerReleaseMillis
	pol.Limits.MaxCheckSightings = max(pol.Limits.MaxCheckSightings, cfg.Sightings)
	b, err := localbackend.Start(ctx, localbackend.Config{Dir: cfg.Dir, Policy: &pol, Logger: cfg.Logger})
	if err != nil {
		return nil, nil, fmt.Errorf("loadbench: %w", err)
	}
	first := cfg.Checks
	if cfg.Rate > 0 {
		first = int(math.Ceil(cfg.Rate * cfg.Duration.Seconds()))
	}
	began := time.Now()
	f := &filler{enc: b.Service.Enclave, lab: b.Authority, sightings: cfg.UploadSightings, checkKeys: cfg.Keys, seed: cfg.Seed}
	uploads, met, err := f.fill(ctx, cfg.Pairs, 2*int(math.Ceil(cfg.MetFraction*float64(first))))
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	r.Filled, r.Uploads, r.FillSeconds = true, uploads, time.Since(began).Seconds()
	return b, met, nil
}

// setFloor records the floor f measured.
func (r *Result) setFloor(f *floorer) {
	r.FloorChecksPerS, r.FloorSeconds = f.perS(), f.seconds
	if r.FloorChecksPerS > 0 {
		r.Ratio = r.ChecksPerS / r.FloorChecksPerS
	}
	if f.seconds > 0 {
		r.FloorCPUs = f.cpu.Seconds() / f.seconds
	}
	if f.cpu > 0 && r.Load.CPUSeconds > 0 {
		perCPU := float64(r.Load.Sent-r.Load.Errors) / r.Load.CPUSeconds
		r.CPURatio = perCPU / (float64(f.done) / f.cpu.Seconds())
	}
}
