package restartbench

import (
	"testing"
)

// TestRunSmall runs the benchmark at a tiny size, as CI does: the
// restarted enclave indexes every pair uploaded, the floor opens every
// journal row, and both figures and their ratio come out.
func TestRunSmall(t *testing.T) {
	r, err := Run(t.Context(), Config{Pairs: 2600, Sightings: 500, Clients: 3, Dir: t.TempDir(), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Pairs != 2600 || r.Uploads != 6 || r.Sightings != 500 {
		t.Errorf("the result does not describe the run asked for: %+v", r)
	}
	if r.Seconds <= 0 || r.FloorSeconds <= 0 || r.DecryptSeconds <= 0 || r.Ratio <= 0 || r.DecryptRatio <= 0 {
		t.Errorf("figures missing: %+v", r)
	}
	// Six uploads over 13 days of sightings and 14 of keys: a record a
	// day each, and a mark, at least a row each; filler besides.
	if r.Records < 6*15 || r.Filler >= r.Records || r.Bytes != int64(r.Records)*4096 {
		t.Errorf("%d journal rows, %d of them filler, %d bytes", r.Records, r.Filler, r.Bytes)
	}
}

// TestConfigRefused: sizes the benchmark cannot run are refused before it
// opens anything.
func TestConfigRefused(t *testing.T) {
	for _, c := range []Config{
		{Pairs: 0, Dir: "x"},
		{Pairs: MaxPairs + 1, Dir: "x"},
		{Pairs: 10, Sightings: maxUploadSightings + 1, Dir: "x"},
		{Pairs: 10, Clients: -1, Dir: "x"},
		{Pairs: 10},
	} {
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
