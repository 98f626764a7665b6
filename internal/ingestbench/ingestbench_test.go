package ingestbench

import (
	"testing"
)

// TestRunSmall runs the benchmark at a tiny size, as CI does: every upload
// becomes durable, the flushes are of the policy's sizes, and both figures
// and their ratio come out.
func TestRunSmall(t *testing.T) {
	r, err := Run(t.Context(), Config{Uploads: 12, Sightings: 300, Clients: 3, FlushRows: 4, FlushMaxRows: 64, FlushHold: 1, Dir: t.TempDir(), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Uploads != 12 || r.Sightings != 300 || r.Clients != 3 {
		t.Errorf("the result does not describe the run asked for: %+v", r)
	}
	if r.UploadsPerS <= 0 || r.FloorUploadsPerS <= 0 || r.Ratio <= 0 || r.Seconds <= 0 || r.FloorSeconds <= 0 {
		t.Errorf("figures missing: %+v", r)
	}
	if r.Flushes < 1 || r.Rows < r.Flushes*4 {
		t.Errorf("%d flushes of %d rows in all", r.Flushes, r.Rows)
	}
	// 300 sightings over 13 days: 13 parts of a row and the mark each,
	// 168 rows in all at least.
	if r.Rows < 12*14 {
		t.Errorf("%d rows written, fewer than the uploads need", r.Rows)
	}
	n := 0
	for _, s := range r.FlushSizes {
		if s.Rows != 4 && s.Rows != 8 && s.Rows != 16 && s.Rows != 32 && s.Rows != 64 {
			t.Errorf("flushes of %d rows: not the policy's 4 times a power of two up to 64", s.Rows)
		}
		n += s.Flushes
	}
	if n != r.Flushes {
		t.Errorf("flush sizes count %d flushes, want %d", n, r.Flushes)
	}
}

// TestConfigRefused: sizes the benchmark cannot run are refused before it
// opens anything.
func TestConfigRefused(t *testing.T) {
	for _, c := range []Config{
		{Uploads: 0, Sightings: 10, Dir: "x"},
		{Uploads: 10, Sightings: 0, Dir: "x"},
		{Uploads: 10, Sightings: 50_000, Dir: "x"},
		{Uploads: 100_000, Sightings: 1000, Dir: "x"},
		{Uploads: 10, Sightings: 10, Clients: -1, Dir: "x"},
		{Uploads: 10, Sightings: 10},
	} {
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := Run(t.Context(), Config{Uploads: 1, Sightings: 1, FlushRows: 4, FlushMaxRows: 48, FlushHold: 1, Dir: t.TempDir()}); err == nil {
		t.Error("a flush rule the policy refuses was run")
	}
}
