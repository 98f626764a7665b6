package service

import (
	"context"
	"database/sql"
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/gps"
)

// walk returns a trace of n fixes, one a minute from start, moving east
// from (lat, lon) by step degrees a fix.
func walk(start time.Time, n int, lat, lon, step float64) gps.Trace {
	tr := make(gps.Trace, n)
	for i := range tr {
		tr[i] = gps.Point{Time: start.Add(time.Duration(i) * time.Minute).Unix(), Lat: lat, Lon: math.Round((lon+float64(i)*step)*1e7) / 1e7}
	}
	return tr
}

func TestGPSEndToEnd(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	start := w.now.Add(-26 * time.Hour).Truncate(time.Minute)
	patient := walk(start, 60, 46.5191, 6.5668, 0.00001)
	signed, err := w.lab.SignTrace(patient, w.now)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.SubmitTrace(ctx, signed); err != nil || n != 60 {
		t.Fatalf("trace upload: %d, %v", n, err)
	}
	if _, err := c.SubmitTrace(ctx, signed); !isCode(err, api.CodeReplayed) {
		t.Fatalf("replayed trace: %v", err)
	}

	// Alice walks 4 m north of the patient for 30 minutes; Bob walks the
	// same path a day later.
	alice := walk(start.Add(10*time.Minute), 30, 46.519136, 6.5669, 0.00001)
	bob := walk(start.Add(24*time.Hour+10*time.Minute), 30, 46.519136, 6.5669, 0.00001)
	ra, err := c.CheckTrace(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	aliceSize := w.sizes.last()
	if !ra.Exposed || len(ra.Episodes) != 1 || ra.Episodes[0].Minutes < 29 || ra.Episodes[0].ClosestMeters > 5 {
		t.Fatalf("alice: %+v", ra)
	}
	want := gps.BruteForce(alice, []gps.Trace{patient}, w.pol.GPS.Params())
	if len(want) != 1 || want[0].Start != ra.Episodes[0].Start || want[0].End != ra.Episodes[0].End {
		t.Fatalf("backend episodes %+v differ from the brute force's %+v", ra.Episodes, want)
	}
	rb, err := c.CheckTrace(ctx, bob)
	if err != nil || rb.Exposed || len(rb.Episodes) != 0 {
		t.Fatalf("bob: %+v, %v", rb, err)
	}
	if w.sizes.last() != aliceSize {
		t.Fatalf("trace answers differ in size: %d exposed, %d not", aliceSize, w.sizes.last())
	}

	// Checks store nothing.
	records := func() (n int) {
		db, err := sql.Open("sqlite", filepath.Join(w.dataDir, "conftrace.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.QueryRow(`SELECT count(*) FROM records`).Scan(&n)
		return n
	}
	before := records()
	c.CheckTrace(ctx, alice)
	if after := records(); after != before {
		t.Fatalf("a trace check wrote %d records", after-before)
	}

	// A second, shorter trace the same day, far away, leaves the day in
	// two generations (Add merges only when the older is less than twice
	// the newer); compacting them changes no answer.
	other := walk(start, 20, 46.60, 6.70, 0.00001)
	if signed, err := w.lab.SignTrace(other, w.now); err != nil {
		t.Fatal(err)
	} else if _, err := c.SubmitTrace(ctx, signed); err != nil {
		t.Fatal(err)
	}
	if n := w.svc.Enclave.CompactGPS(); n == 0 {
		t.Fatal("compaction rebuilt no day after two uploads on one day")
	}
	if again, err := c.CheckTrace(ctx, alice); err != nil || !reflect.DeepEqual(again, ra) {
		t.Fatalf("alice after compaction: %+v, %v; before: %+v", again, err, ra)
	}

	// A restart loads both uploads from the sealed store and builds the
	// day once: the same answer.
	w.restart()
	if again, err := w.client().CheckTrace(ctx, alice); err != nil || !reflect.DeepEqual(again, ra) {
		t.Fatalf("alice after a restart: %+v, %v; before: %+v", again, err, ra)
	}
}

func TestGPSRefusals(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	start := w.now.Add(-2 * time.Hour).Truncate(time.Minute)
	sign := func(k *authority.Key, tr gps.Trace) api.SignedTrace {
		s, err := k.SignTrace(tr, w.now)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stranger, _ := authority.GenerateKey("lab-9")
	future := walk(w.now.Add(time.Hour), 5, 46.5, 6.5, 0)
	old := walk(w.now.Add(-15*24*time.Hour), 5, 46.5, 6.5, 0)
	tooLong := walk(w.now.Add(-24*time.Hour), w.pol.GPS.MaxTracePoints+1, 46.5, 6.5, 0)
	for i := range tooLong {
		tooLong[i].Time = w.now.Add(-24*time.Hour).Unix() + int64(i)
	}
	tampered := sign(w.lab, walk(start, 5, 46.5, 6.5, 0))
	tampered.Trace[len(tampered.Trace)-1] ^= 1
	garbage := sign(w.lab, walk(start, 5, 46.5, 6.5, 0))
	garbage.Trace = []byte{0xff}
	garbage.Signature = nil

	for _, tc := range []struct {
		name string
		t    api.SignedTrace
		code string
	}{
		{"unknown authority", sign(stranger, walk(start, 5, 46.5, 6.5, 0)), api.CodeUnknownAuthority},
		{"altered after signing", tampered, api.CodeBadSignature},
		{"unsigned garbage", garbage, api.CodeBadSignature},
		{"in the future", sign(w.lab, future), api.CodeOutOfWindow},
		{"before the window", sign(w.lab, old), api.CodeOutOfWindow},
		{"too many points", sign(w.lab, tooLong), api.CodeTooLarge},
	} {
		if _, err := c.SubmitTrace(ctx, tc.t); !isCode(err, tc.code) {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	if _, err := c.CheckTrace(ctx, future); !isCode(err, api.CodeOutOfWindow) {
		t.Errorf("device trace from the future: %v", err)
	}
	unordered := walk(start, 5, 46.5, 6.5, 0)
	unordered[3].Time = unordered[0].Time - 60
	if _, err := c.CheckTrace(ctx, unordered); err == nil {
		t.Error("an unordered device trace was accepted")
	}
}
