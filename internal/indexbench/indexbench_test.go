package indexbench

import (
	"testing"
	"time"
)

// TestRunSmall runs the benchmark at a tiny size, as CI does: both sides
// are measured on checks that found exactly their stored pairs, and every
// figure comes out.
func TestRunSmall(t *testing.T) {
	r, err := Run(t.Context(), Config{Pairs: 30_000, MapPairs: 20_000, Sightings: 500, HitRate: 0.02, Duration: 40 * time.Millisecond, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Pairs != 30_000 || r.MapPairs != 20_000 || !r.MapSmaller || r.Sightings != 500 {
		t.Errorf("the result does not describe the run asked for: %+v", r)
	}
	for name, v := range map[string]float64{
		"checks_per_s": r.ChecksPerS, "map_checks_per_s": r.MapChecksPerS, "ratio": r.Ratio,
		"ns_per_hit": r.NsPerHit, "ns_per_miss": r.NsPerMiss, "map_ns_per_hit": r.MapNsPerHit, "map_ns_per_miss": r.MapNsPerMiss,
		"bytes_per_pair": r.BytesPerPair, "map_bytes_per_pair": r.MapBytesPerPair,
	} {
		if !(v > 0) {
			t.Errorf("%s = %v, want a positive number", name, v)
		}
	}
	// 2% of the timed queries were of stored pairs, and each found its
	// pair (Run fails otherwise).
	if r.Checks < 1 || r.Hits < 1 || r.Hits > r.Checks*500/10 {
		t.Errorf("%d hits in %d checks of 500 queries at 2%%", r.Hits, r.Checks)
	}
	if r.MapBytesPerPair < 2*r.BytesPerPair {
		t.Errorf("map %.1f bytes a pair, compact %.1f: the map should be far larger", r.MapBytesPerPair, r.BytesPerPair)
	}
}

// TestRunAdds fills the index an upload at a time, the state of a day of
// uploads: it holds every pair and answers exactly (Run fails otherwise),
// and the result says how it was filled.
func TestRunAdds(t *testing.T) {
	cfg := Config{Pairs: 60_000, MapPairs: 1000, Sightings: 300, HitRate: 0.05, Duration: 20 * time.Millisecond, Seed: 4, Adds: true}
	r, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Fill != "adds" || r.Pairs != 60_000 || r.Hits < 1 {
		t.Errorf("fill %q, %d pairs, %d hits: not the run asked for", r.Fill, r.Pairs, r.Hits)
	}
	cfg.Adds = false
	r, err = Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Fill != "load" {
		t.Errorf("without Adds: fill %q, want load", r.Fill)
	}
}

// TestPairs checks that pair i is the same each time it is made, that
// pairs differ, and that the uploads cover the 14 days in turn.
func TestPairs(t *testing.T) {
	g := pairs{seed: 1}
	seen := map[[32]byte]bool{}
	daysSeen := map[uint32]bool{}
	for i := 0; i < days*uploadPairs; i += 97 {
		e := g.entry(i)
		if e != g.entry(i) {
			t.Fatalf("pair %d differs when made again", i)
		}
		if seen[e.Key] {
			t.Fatalf("pair %d repeats a key", i)
		}
		seen[e.Key] = true
		daysSeen[uint32(e.Contact.Day)] = true
		if d := e.Contact.Interval / intervalsPerDay; d != uint32(e.Contact.Day) {
			t.Fatalf("pair %d: interval %d is not on its day %d", i, e.Contact.Interval, e.Contact.Day)
		}
	}
	if len(daysSeen) != days {
		t.Errorf("pairs on %d days, want %d", len(daysSeen), days)
	}
	if (pairs{seed: 2}).entry(0) == g.entry(0) {
		t.Error("the seed does not change the pairs")
	}
}

// TestConfigRefused: runs that cannot be made are refused before anything
// is built.
func TestConfigRefused(t *testing.T) {
	ok := Config{Pairs: 10, Sightings: 10, HitRate: 0.1, Duration: time.Millisecond}
	for _, change := range []func(*Config){
		func(c *Config) { c.Pairs = 0 },
		func(c *Config) { c.Pairs = MaxPairs + 1 },
		func(c *Config) { c.MapPairs = -1 },
		func(c *Config) { c.Sightings = 0 },
		func(c *Config) { c.HitRate = 1.5 },
		func(c *Config) { c.Duration = 0 },
	} {
		c := ok
		change(&c)
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
