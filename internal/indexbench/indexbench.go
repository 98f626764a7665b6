// Package indexbench measures how fast the compact match index answers
// exposure checks, beside a plain Go map answering the same kind of checks
// in the same run, and how many bytes each keeps per indexed pair.
//
// It bulk-loads Config.Pairs pairs into a [matchindex.Compact] with a
// [matchindex.Loader], as a restart does, in uploads of 5,000 pairs spread
// over 14 days (or, with Config.Adds, adds them an upload at a time, the
// state of a day of uploads: several runs a shard, filtered), and adds
// Config.MapPairs pairs to a [matchindex.Map], the baseline. Memory is the heap's growth over each build, read with
// runtime.ReadMemStats after a garbage collection. Then, on one goroutine,
// it times checks on each side: a check is one LookupBatch of
// Config.Sightings queries with the enclave's interval tolerance, of which
// a fraction Config.HitRate look up a stored pair (at its interval) and
// the rest random keys. Every check draws fresh keys, stored pairs chosen
// uniformly among all of them, so that at large sizes the index is read
// where the caches do not hold it, as in a deployment, rather than through
// a small probe set that stays cached. Drawing the keys is not timed; the
// fingerprints (Compact) and hashes (Map) of the lookups are. Each side
// runs for Config.Duration: half of it realistic checks, a quarter checks
// of stored pairs only and a quarter checks of random keys only, which
// give the time of a hit and of a miss separately. The sides take turns,
// ten rounds of each, so that whatever else runs on the machine slows
// both alike; each turn starts with untimed checks (a tenth of its time),
// so that neither is timed while it refills the caches the other just
// emptied, which a server answering from one index never does.
// Before the turns, the builds' garbage is returned to the OS.
//
// Pairs are not kept in memory, where they would take more than the index:
// the key and contact of pair i are a function of the seed and i, so a hit
// query regenerates them. A check whose answers are not exactly its hits
// fails the run.
//
// A map of 10^8 pairs needs over 12 GB, so the map usually runs smaller
// than the compact index: that favours the map, whose table is then
// smaller and more of it cached. Result.MapSmaller says so.
package indexbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/conftrace/conftrace/internal/matchindex"
)

// Defaults of a run.
const (
	DefaultSightings = 2000
	DefaultHitRate   = 0.001
	// DefaultMapPairs is the largest map run by default: about 2.5 GB.
	DefaultMapPairs = 20_000_000
	// MaxPairs bounds either side: 10^9 pairs take about 16 GB compact,
	// and 24 GB more while they load.
	MaxPairs = 1_000_000_000
)

// Config describes a run.
type Config struct {
	// Pairs is the number of pairs the compact index holds.
	Pairs int
	// MapPairs is the number the map holds; 0 means the smaller of Pairs
	// and DefaultMapPairs.
	MapPairs int
	// Sightings is the number of queries in a check.
	Sightings int
	// HitRate is the fraction of a realistic check's queries that look
	// up a stored pair.
	HitRate float64
	// Duration is how long each side's checks are timed.
	Duration time.Duration
	// Seed makes the pairs and the queries.
	Seed uint64
	// Adds fills the compact index an upload at a time with Add, the state
	// of a day of uploads (several runs a shard), rather than with a
	// Loader, the state a restart leaves (one run a shard).
	Adds bool
	// Profile, if set, receives a CPU profile (pprof format) of the timed
	// checks, both sides'.
	Profile io.Writer
}

func (c *Config) check() error {
	if c.MapPairs == 0 {
		c.MapPairs = min(c.Pairs, DefaultMapPairs)
	}
	switch {
	case c.Pairs < 1 || c.Pairs > MaxPairs || c.MapPairs < 1 || c.MapPairs > MaxPairs:
		return fmt.Errorf("indexbench: %d pairs, %d in the map: want 1 to %d", c.Pairs, c.MapPairs, MaxPairs)
	case c.Sightings < 1 || c.Sightings > 1<<20:
		return fmt.Errorf("indexbench: %d sightings a check, want 1 to %d", c.Sightings, 1<<20)
	case !(c.HitRate >= 0 && c.HitRate <= 1):
		return fmt.Errorf("indexbench: hit rate %v, want 0 to 1", c.HitRate)
	case c.Duration <= 0:
		return errors.New("indexbench: the duration must be positive")
	}
	return nil
}

// Result is what a run measured. Rates are per second of lookups: the
// time spent drawing queries is not counted.
type Result struct {
	Pairs     int     `json:"pairs"`
	MapPairs  int     `json:"map_pairs"`
	Sightings int     `json:"sightings"`
	HitRate   float64 `json:"hit_rate"`
	// Fill is how the compact index was filled: "load", as a restart
	// does, or "adds", an upload at a time.
	Fill string `json:"fill"`
	// MapSmaller is set when the map held fewer pairs than the compact
	// index, which favours the map.
	MapSmaller bool `json:"map_smaller"`

	// ChecksPerS and MapChecksPerS are the realistic checks a second of
	// each side; Ratio is ChecksPerS over MapChecksPerS.
	ChecksPerS    float64 `json:"checks_per_s"`
	MapChecksPerS float64 `json:"map_checks_per_s"`
	Ratio         float64 `json:"ratio"`
	// Checks and MapChecks are how many realistic checks were timed, and
	// Hits and MapHits how many of their queries were of stored pairs.
	Checks    int `json:"checks"`
	MapChecks int `json:"map_checks"`
	Hits      int `json:"hits"`
	MapHits   int `json:"map_hits"`

	// NsPerHit and NsPerMiss are the time of one lookup of a stored pair
	// and of a random key, in checks of only those; the Map ones are the
	// map's. HitRatio and MissRatio are the map's time over the index's.
	NsPerHit     float64 `json:"ns_per_hit"`
	NsPerMiss    float64 `json:"ns_per_miss"`
	MapNsPerHit  float64 `json:"map_ns_per_hit"`
	MapNsPerMiss float64 `json:"map_ns_per_miss"`
	HitRatio     float64 `json:"hit_ratio"`
	MissRatio    float64 `json:"miss_ratio"`

	// BytesPerPair and MapBytesPerPair are each side's heap growth over
	// its build, per pair.
	BytesPerPair    float64 `json:"bytes_per_pair"`
	MapBytesPerPair float64 `json:"map_bytes_per_pair"`
	// BuildSeconds and MapBuildSeconds are the builds' times: the bulk
	// load, and adds of 5,000 pairs.
	BuildSeconds    float64 `json:"build_seconds"`
	MapBuildSeconds float64 `json:"map_build_seconds"`
	// Seconds is the time each side's checks were run for.
	Seconds float64 `json:"seconds"`
}

// side is one index and what it measured.
type side struct {
	idx                        matchindex.Index
	q                          *queries
	bytesPerPair, buildSeconds float64
	real, hit, miss            pass
}

// rounds is how many times the sides take turns at their checks, so that
// what else runs on the machine slows both alike.
const rounds = 10

// Run measures cfg. It builds the compact index, then the map, measuring
// each build's heap growth, then times both sides' checks in turns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	g := pairs{seed: cfg.Seed}
	fill, fillCompact := "load", g.loadCompact
	if cfg.Adds {
		fill, fillCompact = "adds", g.addCompact
	}
	compact, err := build(cfg, g, cfg.Pairs, func(n int) (matchindex.Index, error) { return fillCompact(ctx, n) })
	if err != nil {
		return nil, fmt.Errorf("indexbench: compact index: %w", err)
	}
	baseline, err := build(cfg, g, cfg.MapPairs, func(n int) (matchindex.Index, error) { return g.fillMap(ctx, n) })
	if err != nil {
		return nil, fmt.Errorf("indexbench: map: %w", err)
	}
	// Return the builds' garbage to the OS now, rather than let the
	// runtime's scavenger do it while checks are timed: each release of
	// pages makes the kernel flush the TLBs of the threads doing lookups.
	debug.FreeOSMemory()
	if err := timeSides(ctx, cfg, compact, baseline); err != nil {
		return nil, fmt.Errorf("indexbench: %w", err)
	}
	r := &Result{
		Pairs: cfg.Pairs, MapPairs: cfg.MapPairs, Sightings: cfg.Sightings, HitRate: cfg.HitRate, Fill: fill,
		MapSmaller:    cfg.MapPairs < cfg.Pairs,
		ChecksPerS:    compact.real.checksPerS(),
		MapChecksPerS: baseline.real.checksPerS(),
		Checks:        compact.real.checks, MapChecks: baseline.real.checks,
		Hits: compact.real.hits, MapHits: baseline.real.hits,
		NsPerHit: compact.hit.nsPerLookup(), NsPerMiss: compact.miss.nsPerLookup(),
		MapNsPerHit: baseline.hit.nsPerLookup(), MapNsPerMiss: baseline.miss.nsPerLookup(),
		BytesPerPair: compact.bytesPerPair, MapBytesPerPair: baseline.bytesPerPair,
		BuildSeconds: compact.buildSeconds, MapBuildSeconds: baseline.buildSeconds,
		Seconds: cfg.Duration.Seconds(),
	}
	r.Ratio = r.ChecksPerS / r.MapChecksPerS
	r.HitRatio = r.MapNsPerHit / r.NsPerHit
	r.MissRatio = r.MapNsPerMiss / r.NsPerMiss
	runtime.KeepAlive(compact.idx)
	runtime.KeepAlive(baseline.idx)
	return r, nil
}

// build builds an index of n pairs with newIndex, measuring its heap growth.
func build(cfg Config, g pairs, n int, newIndex func(int) (matchindex.Index, error)) (*side, error) {
	before := settledHeap()
	start := time.Now()
	idx, err := newIndex(n)
	if err != nil {
		return nil, err
	}
	s := &side{idx: idx, q: newQueries(g, n, cfg.Sightings, cfg.Seed), buildSeconds: time.Since(start).Seconds()}
	s.bytesPerPair = (float64(settledHeap()) - float64(before)) / float64(n)
	if got := idx.Len(); got != n {
		return nil, fmt.Errorf("built %d pairs, want %d", got, n)
	}
	return s, nil
}

// settledHeap returns the bytes allocated on the heap once garbage is
// collected. It collects twice: objects that sync.Pools dropped survive
// one collection in the pools' victim caches, and freeing them between two
// readings made small builds look negative.
func settledHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// timeSides times the checks of the two sides in turns: in each round,
// each side runs realistic checks for half its share of the round, checks
// of stored pairs only for a quarter and of random keys only for a
// quarter, after a tenth of its share of untimed checks. cfg.Profile, if
// set, receives a CPU profile of it all.
func timeSides(ctx context.Context, cfg Config, sides ...*side) error {
	if cfg.Profile != nil {
		if err := pprof.StartCPUProfile(cfg.Profile); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	slice := cfg.Duration / rounds
	for range rounds {
		for _, s := range sides {
			// Untimed: the other side's checks have just filled the
			// caches with its own memory (a large map's, page tables
			// included), which a server answering from one index never
			// sees. Its first checks would pay for that.
			var warm pass
			if err := timeChecks(ctx, s.idx, s.q, cfg.HitRate, slice/10, &warm); err != nil {
				return err
			}
			for _, p := range []struct {
				acc     *pass
				hitRate float64
				d       time.Duration
			}{{&s.real, cfg.HitRate, slice / 2}, {&s.hit, 1, slice / 4}, {&s.miss, 0, slice / 4}} {
				if err := timeChecks(ctx, s.idx, s.q, p.hitRate, p.d, p.acc); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
