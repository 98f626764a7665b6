package service_test

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/policy"
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

// Under a policy of detailed answers, a trace check lists the episodes.
func TestGPSEndToEnd(t *testing.T) {
	ctx := context.Background()
	p := policy.Default()
	p.Answers = policy.AnswersDetailed
	// At noon, so that the traces of a day ago fall in one day.
	w := newWorldAt(t, &p, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
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
	if !ra.Exposed || len(ra.Episodes) != 1 || ra.Episodes[0].Minutes < 29 || ra.Episodes[0].ClosestMeters > 5 || ra.LastExposure != start.UTC().Format(api.DateLayout) {
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
		db, err := sql.Open("sqlite", w.dbPath())
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
	if n := w.b.Service.Enclave.CompactGPS(); n == 0 {
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

// Under the default policy, a trace check says only whether, and on which
// day most recently, the phone came close to a patient: no episodes, no
// times, no distances. The answer has one size whatever it says.
func TestGPSCoarseAnswer(t *testing.T) {
	ctx := context.Background()
	w := newWorldAt(t, nil, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	c := w.client()
	start := w.now.Add(-26 * time.Hour).Truncate(time.Minute)
	patient := walk(start, 60, 46.5191, 6.5668, 0.00001)
	signed, err := w.lab.SignTrace(patient, w.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitTrace(ctx, signed); err != nil {
		t.Fatal(err)
	}
	ra, err := c.CheckTrace(ctx, walk(start.Add(10*time.Minute), 30, 46.519136, 6.5669, 0.00001))
	if err != nil || !ra.Exposed || ra.LastExposure != start.UTC().Format(api.DateLayout) || ra.Episodes != nil || ra.Truncated {
		t.Fatalf("alice: %+v, %v; want exposed on %s, nothing more", ra, err, start.UTC().Format(api.DateLayout))
	}
	exposedSize := w.sizes.last()
	rb, err := c.CheckTrace(ctx, walk(start.Add(24*time.Hour+10*time.Minute), 30, 46.519136, 6.5669, 0.00001))
	if err != nil || rb.Exposed || rb.LastExposure != "" || rb.Episodes != nil {
		t.Fatalf("bob: %+v, %v; want not exposed, nothing more", rb, err)
	}
	if w.sizes.last() != exposedSize {
		t.Errorf("trace answers differ in size: %d exposed, %d not", exposedSize, w.sizes.last())
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

// TestGPSRestartRefusesTamperedTraces: a restart rebuilds the GPS index
// from the sealed store, day by day on every CPU; a trace record the host
// altered is refused and reported, and the other days still match.
func TestGPSRestartRefusesTamperedTraces(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	day := w.now.UTC().Truncate(24 * time.Hour)
	var phones []gps.Trace
	for i := range 3 {
		// Patient i walks an hour at 10:00 UTC, 3-i days ago, in a town
		// of their own; phone i walks 4 m north of them.
		start := day.Add(time.Duration(i-3)*24*time.Hour + 10*time.Hour)
		lat := 46.5 + 0.1*float64(i)
		signed, err := w.lab.SignTrace(walk(start, 60, lat, 6.5, 0.00001), w.now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.SubmitTrace(ctx, signed); err != nil {
			t.Fatal(err)
		}
		phones = append(phones, walk(start.Add(10*time.Minute), 30, lat+0.000036, 6.5001, 0.00001))
		if r, err := c.CheckTrace(ctx, phones[i]); err != nil || !r.Exposed {
			t.Fatalf("phone %d before the restart: %+v, %v", i, r, err)
		}
	}
	w.stop()

	// The host flips a byte of the oldest day's trace.
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	var key, val []byte
	if err := db.QueryRow(`SELECT key, value FROM records WHERE tbl = 'traces' ORDER BY day LIMIT 1`).Scan(&key, &val); err != nil {
		t.Fatal(err)
	}
	val[len(val)/2] ^= 1
	if _, err := db.Exec(`UPDATE records SET value = ? WHERE tbl = 'traces' AND key = ?`, val, key); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var logs bytes.Buffer
	w.startWithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	c = w.client()
	for i, phone := range phones {
		r, err := c.CheckTrace(ctx, phone)
		if err != nil || r.Exposed != (i > 0) {
			t.Errorf("phone %d after the restart: %+v, %v; want exposed only by the untouched days", i, r, err)
		}
	}
	if n := strings.Count(logs.String(), "stored trace does not open"); n != 1 || !strings.Contains(logs.String(), "refused_records=1") {
		t.Errorf("%d tampered traces reported, want 1; logs:\n%s", n, logs.String())
	}
}

// BenchmarkGPSRestart measures the start-up's rebuild of the GPS index
// from the sealed store: 10^6 patients' fixes in 20 uploads over the
// last fortnight (opening, decoding and indexing each, then compacting), and
// the rest of a restart, which is small with nothing else stored.
//
//	go test -run='^$' -bench=GPSRestart -benchtime=5x ./internal/service
func BenchmarkGPSRestart(b *testing.B) {
	ctx := context.Background()
	w := newWorld(b)
	c := w.client()
	const uploads, fixes = 20, 50_000
	for u := range uploads {
		// A fix every 10 s for 5.8 days, walking slowly east; the uploads
		// start 6 hours apart, each in a town of its own.
		start := w.now.Add(-13*24*time.Hour + time.Duration(u)*6*time.Hour).Truncate(time.Second)
		tr := make(gps.Trace, fixes)
		for i := range tr {
			tr[i] = gps.Point{Time: start.Add(time.Duration(i) * 10 * time.Second).Unix(), Lat: 44 + 0.1*float64(u), Lon: math.Round((2+float64(i)*1e-5)*1e7) / 1e7}
		}
		signed, err := w.lab.SignTrace(tr, w.now)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.SubmitTrace(ctx, signed); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		w.restart()
	}
	// A phone that walked the last upload's first hour, 4 m north of it.
	b.StopTimer()
	start := w.now.Add(-13*24*time.Hour + (uploads-1)*6*time.Hour).Truncate(time.Second)
	phone := walk(start, 60, 44+0.1*(uploads-1)+0.000036, 2, 6e-5)
	if r, err := w.client().CheckTrace(ctx, phone); err != nil || !r.Exposed {
		b.Fatalf("a phone on an upload's path after the restart: %+v, %v", r, err)
	}
}
