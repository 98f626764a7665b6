// Package restartbench measures how long the backend takes to start over a
// store of many indexed contact pairs, until it is ready to answer, beside
// the floor of reading and decrypting the same sealed bytes in the same
// run.
//
// It fills a SQLite store (the default store) in a directory of the
// caller's through the real upload path, as conftraced would be filled:
// the enclave, over that store and on a clock the benchmark moves, takes
// Config.Pairs sightings in uploads of Config.Sightings (each with its
// lab's signed positive result, the phone's poll for the authorization
// and the upload), while the journal flushes on the clock; the fill is not
// timed. It then closes the store, opens it again and times
// enclave.Open, which rebuilds the match indexes from the sealed journal
// (and loads the results and the rest), until it returns: from then on the
// enclave answers checks. The indexes it rebuilt must hold every pair.
//
// The floor reads the same journal rows with the store's Scan and opens
// them (AES-256-GCM: each row's header and body, with the real keys) on
// GOMAXPROCS goroutines, doing nothing else with them. Its time, and the
// time the opening alone takes (the decrypt floor, the bytes already in
// memory), stand beside the restart's; so do the CPU times, which other
// processes on the machine disturb less than the times.
package restartbench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store/sqlite"
)

// DefaultSightings is how many sightings each upload of the fill carries.
const DefaultSightings = 5000

// MaxPairs bounds Config.Pairs: at 10^9 the store takes about 25 GB of
// disk, and the fill hours.
const MaxPairs = 1_000_000_000

// Config describes a run.
type Config struct {
	// Pairs is how many contact pairs (uploaded sightings) the store holds.
	Pairs int
	// Sightings is how many sightings each upload carries (the last may
	// carry fewer), spread over the 13 days before today; 0 means
	// DefaultSightings.
	Sightings int
	// Clients is how many uploads are in flight at once during the fill;
	// 0 means twice GOMAXPROCS.
	Clients int
	// Dir holds the store.
	Dir string
	// Seed makes the reports.
	Seed uint64
	// Logger receives the enclave's log; nil discards it.
	Logger *slog.Logger
	// Profile, if set, receives a CPU profile (pprof format) of the timed
	// restart.
	Profile io.Writer
}

func (c *Config) check() error {
	if c.Sightings == 0 {
		c.Sightings = DefaultSightings
	}
	if c.Clients == 0 {
		c.Clients = 2 * runtime.GOMAXPROCS(0)
	}
	switch {
	case c.Pairs < 1 || c.Pairs > MaxPairs:
		return fmt.Errorf("restartbench: %d pairs, want 1 to %d", c.Pairs, MaxPairs)
	case c.Sightings < 1 || c.Sightings > maxUploadSightings:
		return fmt.Errorf("restartbench: %d sightings an upload, want 1 to %d", c.Sightings, maxUploadSightings)
	case c.Clients < 1 || c.Clients > 1024:
		return fmt.Errorf("restartbench: %d clients, want 1 to 1024", c.Clients)
	case c.Dir == "":
		return errors.New("restartbench: no directory")
	}
	return nil
}

// Result is what a run measured.
type Result struct {
	// Pairs is how many pairs the restarted enclave's indexes hold, which
	// is how many the fill uploaded; Uploads and Sightings describe the
	// fill.
	Pairs     int `json:"pairs"`
	Uploads   int `json:"uploads"`
	Sightings int `json:"sightings"`
	// Records and Bytes are the journal rows the restart and the floor
	// read, and their sealed bytes; Filler of them are filler rows, which
	// the flushes wrote when too few uploads waited.
	Records int   `json:"records"`
	Filler  int   `json:"filler_records"`
	Bytes   int64 `json:"bytes"`
	// FillSeconds is how long the fill took (not part of the ratios).
	FillSeconds float64 `json:"fill_seconds"`

	// Seconds is from opening the store to enclave.Open's return.
	Seconds float64 `json:"seconds"`
	// CPUSeconds and FloorCPUSeconds are the CPU time the restart and the
	// floor took, on all cores: unlike the times, they hardly change when
	// other processes share the machine. 0 where not measured.
	CPUSeconds      float64 `json:"cpu_seconds"`
	FloorCPUSeconds float64 `json:"floor_cpu_seconds"`
	// FloorSeconds is the time to Scan the journal rows and open them on
	// GOMAXPROCS goroutines; Ratio is Seconds over it.
	FloorSeconds float64 `json:"floor_seconds"`
	Ratio        float64 `json:"ratio"`
	// DecryptSeconds is the opening alone, the bytes in memory, on
	// GOMAXPROCS goroutines: the time to open the first rows (up to 128
	// MB) again, scaled to all of them. DecryptRatio is Seconds over it.
	DecryptSeconds float64 `json:"decrypt_seconds"`
	DecryptRatio   float64 `json:"decrypt_ratio"`
	// HeapBytes is the Go heap the restarted enclave holds (its indexes
	// most of it), after a garbage collection.
	HeapBytes uint64 `json:"heap_bytes"`
}

// Run fills a store in cfg.Dir, then measures a restart over it and the
// floor.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	var key [seal.KeySize]byte
	rand.Read(key[:])
	dir := filepath.Join(cfg.Dir, "backend")
	f, err := fill(ctx, cfg, dir, key)
	if err != nil {
		return nil, err
	}
	r := &Result{Uploads: f.uploads, Sightings: cfg.Sightings, FillSeconds: f.elapsed.Seconds()}
	if err := restart(ctx, cfg, f, r); err != nil {
		return nil, err
	}
	fl, err := measureFloor(ctx, dir, key)
	if err != nil {
		return nil, err
	}
	r.Records, r.Filler, r.Bytes = fl.records, fl.filler, fl.bytes
	r.FloorSeconds, r.FloorCPUSeconds, r.DecryptSeconds = fl.elapsed.Seconds(), fl.cpu.Seconds(), fl.decrypt.Seconds()
	r.Ratio = r.Seconds / r.FloorSeconds
	r.DecryptRatio = r.Seconds / r.DecryptSeconds
	return r, nil
}

// restart opens the filled store and the enclave over it, timed, and
// checks that the indexes hold every pair.
func restart(ctx context.Context, cfg Config, f *filled, r *Result) error {
	// What the fill left is garbage: collected now, not in the timed part.
	runtime.GC()
	debug.FreeOSMemory()
	if cfg.Profile != nil {
		if err := pprof.StartCPUProfile(cfg.Profile); err != nil {
			return fmt.Errorf("restartbench: %w", err)
		}
	}
	began, cpu := time.Now(), cpuTime()
	enc, st, err := open(ctx, cfg, f)
	r.Seconds, r.CPUSeconds = time.Since(began).Seconds(), (cpuTime() - cpu).Seconds()
	if cfg.Profile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if r.Pairs = enc.IndexEntries(); r.Pairs != cfg.Pairs {
		return fmt.Errorf("restartbench: the restarted enclave indexes %d pairs, the fill uploaded %d", r.Pairs, cfg.Pairs)
	}
	// What the restart left but the enclave's state is garbage.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapBytes = ms.HeapAlloc
	runtime.KeepAlive(enc)
	return nil
}

// open opens the filled store and the enclave over it, as conftraced
// starts.
func open(ctx context.Context, cfg Config, f *filled) (*enclave.Enclave, *sqlite.Store, error) {
	st, err := sqlite.Open(ctx, f.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("restartbench: reopening the store: %w", err)
	}
	clock := func() time.Time { return f.at }
	enc, err := enclave.Open(ctx, enclave.Config{Policy: f.policy, Store: st, SealingKey: f.key, HostClock: clock, Logger: logger(cfg)})
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("restartbench: restarting: %w", err)
	}
	return enc, st, nil
}

func logger(cfg Config) *slog.Logger {
	if cfg.Logger != nil {
		return cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}
