package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/policy"
)

// walkTrace returns n fixes every step from start, moving east from (lat,
// lon) by 1e-5 degree (about 0.77 m at 46.5°N) a minute, at 1e-7 degree
// resolution as the parsers give them.
func walkTrace(start time.Time, n int, step time.Duration, lat, lon float64) gps.Trace {
	tr := make(gps.Trace, n)
	for i := range tr {
		at := start.Add(time.Duration(i) * step)
		minutes := at.Sub(start).Minutes()
		tr[i] = gps.Point{Time: at.Unix(), Lat: lat, Lon: math.Round((lon+minutes*1e-5)*1e7) / 1e7, Accuracy: 4}
	}
	return tr
}

// writeCSVTrace writes tr as a CSV file with a header and RFC 3339 times.
func writeCSVTrace(t *testing.T, path string, tr gps.Trace) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("time,lat,lon,accuracy\n")
	for _, p := range tr {
		fmt.Fprintf(&b, "%s,%s,%s,%s\n", p.At().Format(time.RFC3339), ftoa(p.Lat), ftoa(p.Lon), ftoa(p.Accuracy))
	}
	writeFile(t, path, b.String())
	return path
}

// writeGPXTrace writes tr as a GPX 1.1 track.
func writeGPXTrace(t *testing.T, path string, tr gps.Trace) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>` + "\n")
	for _, p := range tr {
		fmt.Fprintf(&b, "<trkpt lat=%q lon=%q><time>%s</time></trkpt>\n", ftoa(p.Lat), ftoa(p.Lon), p.At().Format(time.RFC3339))
	}
	b.WriteString("</trkseg></trk></gpx>\n")
	writeFile(t, path, b.String())
	return path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func ftoa(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

// episodeLines formats what the brute-force rule says gps-check must print
// after its verdict, with the backend's rounding to 0.1.
func episodeLines(eps []gps.Episode) string {
	var b strings.Builder
	for _, e := range eps {
		fmt.Fprintf(&b, "%s %s %s min, closest %s m\n",
			time.Unix(e.Start, 0).UTC().Format(time.RFC3339), time.Unix(e.End, 0).UTC().Format(time.RFC3339),
			ftoa(math.Round(e.Minutes*10)/10), ftoa(math.Round(e.Closest*10)/10))
	}
	return b.String()
}

// TestGPSWalkthrough runs the GPS flow through the commands: a health
// authority uploads an infected patient's trace as CSV and another's as
// GPX; a device that walked beside the first patient is exposed, one that
// walked the same path a day later is not, and a device with a GPX trace
// near the second patient is exposed too.
//
// The backend's policy gives detailed answers, which list the episodes.
func TestGPSWalkthrough(t *testing.T) {
	pol := policy.Default()
	pol.Answers = policy.AnswersDetailed
	b := newTestBackendWithPolicy(t, &pol)
	p := func(name string) string { return filepath.Join(b.dir, name) }
	params := policy.Default().GPS.Params()

	// Patient 1: an hour's walk, one fix a minute, yesterday.
	start := time.Now().UTC().Add(-26 * time.Hour).Truncate(time.Minute)
	patient := walkTrace(start, 60, time.Minute, 46.5191, 6.5668)
	writeCSVTrace(t, p("patient.csv"), patient)
	if out := mustRun(t, runAuthorityGPS, "--server", b.url, "--key", b.key, "--trace", p("patient.csv"), "--allow-simulated"); out != "stored 60 points\n" {
		t.Errorf("authority gps printed %q, want stored 60 points", out)
	}

	for _, d := range []string{"A", "B", "G"} {
		mustRun(t, runDeviceInit, "--state", p(d), "--server", b.url, "--allow-simulated")
	}
	// A walks 4 m north of the patient, one fix every 5 minutes, from half
	// an hour before to half an hour after; B walks the same path a day
	// later. Both traces go through a file whose extension says nothing.
	alice := walkTrace(start.Add(-30*time.Minute), 25, 5*time.Minute, 46.519136, 6.5668-30e-5)
	bob := walkTrace(start.Add(24*time.Hour-30*time.Minute), 25, 5*time.Minute, 46.519136, 6.5668-30e-5)
	writeCSVTrace(t, p("alice.txt"), alice)
	writeCSVTrace(t, p("bob.txt"), bob)

	want := gps.BruteForce(alice, []gps.Trace{patient}, params)
	if len(want) != 1 || !gps.Exposed(want, params) {
		t.Fatalf("test setup: the rule gives %+v for A; want one exposing episode", want)
	}
	out := mustRun(t, runDeviceGPSCheck, "--state", p("A"), "--trace", p("alice.txt"), "--format", "csv")
	if exp := "exposed\n" + episodeLines(want); out != exp {
		t.Errorf("A gps-check printed\n%s\nwant\n%s", out, exp)
	}
	// The episode spans the patient's walk, give or take the tolerance.
	if want[0].Start > patient[0].Time || want[0].End < patient[len(patient)-1].Time-300 || want[0].Closest > 5 {
		t.Errorf("A's episode %+v does not cover the patient's walk %d..%d", want[0], patient[0].Time, patient[len(patient)-1].Time)
	}
	if out := mustRun(t, runDeviceGPSCheck, "--state", p("B"), "--trace", p("bob.txt"), "--format", "CSV"); out != "not exposed\n" {
		t.Errorf("B gps-check printed %q, want not exposed and no episodes", out)
	}

	// Patient 2, as GPX: 30 minutes elsewhere, this morning.
	start2 := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Minute)
	patient2 := walkTrace(start2, 30, time.Minute, 47.3769, 8.5417)
	writeGPXTrace(t, p("patient2.gpx"), patient2)
	if out := mustRun(t, runAuthorityGPS, "--server", b.url, "--key", b.key, "--trace", p("patient2.gpx"), "--allow-simulated"); out != "stored 30 points\n" {
		t.Errorf("authority gps with GPX printed %q, want stored 30 points", out)
	}
	for i := range patient2 {
		patient2[i].Accuracy = 0 // GPX carries none
	}
	// G stood 3 m south of patient 2's starting point for the first 20
	// minutes of their walk.
	george := make(gps.Trace, 5)
	for i := range george {
		george[i] = gps.Point{Time: start2.Add(time.Duration(5*i) * time.Minute).Unix(), Lat: 47.376873, Lon: 8.5417}
	}
	writeGPXTrace(t, p("george.gpx"), george)
	var resp api.TraceCheckResponse
	if err := json.Unmarshal([]byte(mustRun(t, runDeviceGPSCheck, "--state", p("G"), "--trace", p("george.gpx"), "--json")), &resp); err != nil {
		t.Fatalf("gps-check --json: %v", err)
	}
	want = gps.BruteForce(george, []gps.Trace{patient, patient2}, params)
	if !resp.Exposed || len(resp.Episodes) != len(want) || len(want) != 1 ||
		resp.Episodes[0].Start != want[0].Start || resp.Episodes[0].End != want[0].End ||
		resp.Episodes[0].Minutes != math.Round(want[0].Minutes*10)/10 {
		t.Errorf("G gps-check --json: %+v; the rule gives %+v", resp, want)
	}
}

// Under the default policy, gps-check says only whether the device came
// near a patient, and --json on which day most recently: no episodes.
func TestGPSCheckCoarse(t *testing.T) {
	b := newTestBackend(t)
	p := func(name string) string { return filepath.Join(b.dir, name) }
	// Yesterday at noon: one day, whenever the test runs.
	start := time.Now().UTC().Truncate(24 * time.Hour).Add(-12 * time.Hour)
	writeCSVTrace(t, p("patient.csv"), walkTrace(start, 60, time.Minute, 46.5191, 6.5668))
	mustRun(t, runAuthorityGPS, "--server", b.url, "--key", b.key, "--trace", p("patient.csv"), "--allow-simulated")
	mustRun(t, runDeviceInit, "--state", p("A"), "--server", b.url, "--allow-simulated")
	writeCSVTrace(t, p("alice.csv"), walkTrace(start.Add(-30*time.Minute), 25, 5*time.Minute, 46.519136, 6.5668-30e-5))
	if out := mustRun(t, runDeviceGPSCheck, "--state", p("A"), "--trace", p("alice.csv")); out != "exposed\n" {
		t.Errorf("A gps-check printed %q, want exposed and nothing more", out)
	}
	var resp map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, runDeviceGPSCheck, "--state", p("A"), "--trace", p("alice.csv"), "--json")), &resp); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"exposed": true, "last_exposure": start.Format(api.DateLayout)}; !reflect.DeepEqual(resp, want) {
		t.Errorf("A gps-check --json: %v, want %v", resp, want)
	}
}

// TestGPSCommandErrors checks that the GPS commands refuse bad input with
// an error a user can act on, and pass the backend's refusals through.
func TestGPSCommandErrors(t *testing.T) {
	b := newTestBackend(t)
	p := func(name string) string { return filepath.Join(b.dir, name) }
	mustRun(t, runDeviceInit, "--state", p("D"), "--server", b.url, "--allow-simulated")
	mustRun(t, runAuthorityKeygen, "--out", p("stranger.key"))

	start := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Minute)
	good := writeCSVTrace(t, p("good.csv"), walkTrace(start, 10, time.Minute, 46.5, 6.6))
	ts := func(m int) string { return start.Add(time.Duration(m) * time.Minute).Format(time.RFC3339) }
	writeFile(t, p("badlat.csv"), "time,lat,lon\n"+ts(0)+",46.5,6.6\n"+ts(1)+",91.5,6.6\n")
	writeFile(t, p("badnum.csv"), "# a comment\n"+ts(0)+",46.5,6.6\n"+ts(1)+",46.5,6.6\n"+ts(2)+",north,6.6\n")
	writeFile(t, p("unordered.csv"), ts(0)+",46.5,6.6\n"+ts(2)+",46.5,6.6\n"+ts(1)+",46.5,6.6\n")
	writeFile(t, p("empty.csv"), "time,lat,lon\n")
	writeFile(t, p("badlon.gpx"), "<gpx><trk><trkseg>\n<trkpt lat=\"46.5\" lon=\"181\"><time>"+ts(0)+"</time></trkpt>\n</trkseg></trk></gpx>\n")
	writeFile(t, p("trace.kml"), "")
	old := writeCSVTrace(t, p("old.csv"), walkTrace(start.AddDate(0, 0, -20), 10, time.Minute, 46.5, 6.6))
	future := writeCSVTrace(t, p("future.csv"), walkTrace(start.Add(3*time.Hour), 10, time.Minute, 46.5, 6.6))

	upload := func(args ...string) error {
		_, _, err := cliRun(t, runAuthorityGPS, append([]string{"--server", b.url, "--key", b.key, "--allow-simulated"}, args...)...)
		return err
	}
	check := func(args ...string) error {
		_, _, err := cliRun(t, runDeviceGPSCheck, append([]string{"--state", p("D")}, args...)...)
		return err
	}
	usage := func(err error) bool { var ue usageError; return errors.As(err, &ue) }
	for _, tc := range []struct {
		name string
		err  error
		ok   func(error) bool
		text string // the message must contain it
	}{
		{"latitude out of range", upload("--trace", p("badlat.csv")), is(gps.ErrLatitude), "line 3"},
		{"latitude not a number", upload("--trace", p("badnum.csv")), is(gps.ErrSyntax), "line 4"},
		{"unordered timestamps", upload("--trace", p("unordered.csv")), is(gps.ErrOrder), "line 3"},
		{"longitude out of range in GPX", upload("--trace", p("badlon.gpx")), is(gps.ErrLongitude), "line 2"},
		{"no fixes", upload("--trace", p("empty.csv")), is(errEmptyTrace), "empty.csv"},
		{"missing file", upload("--trace", p("nonexistent.csv")), is(fs.ErrNotExist), "nonexistent.csv"},
		{"unknown --format", upload("--trace", good, "--format", "kml"), usage, "kml"},
		{"unknown extension", upload("--trace", p("trace.kml")), usage, "--format"},
		{"no --trace", upload(), usage, "--trace"},
		{"no --key", func() error {
			_, _, err := cliRun(t, runAuthorityGPS, "--server", b.url, "--trace", good)
			return err
		}(), usage, "--key"},
		{"trace from the future", upload("--trace", future), is(gps.ErrFuture), "line 2"},
		{"simulated backend not allowed", func() error {
			_, _, err := cliRun(t, runAuthorityGPS, "--server", b.url, "--key", b.key, "--trace", good)
			return err
		}(), func(err error) bool { return err != nil }, "simulated"},
		{"authority not in the policy", upload("--key", p("stranger.key"), "--trace", good), is(&api.Error{Code: api.CodeUnknownAuthority}), "refused the trace"},
		{"trace before the retention window", upload("--trace", old), is(&api.Error{Code: api.CodeOutOfWindow}), "refused the trace"},

		{"device: latitude out of range", check("--trace", p("badlat.csv")), is(gps.ErrLatitude), "line 3"},
		{"device: unknown --format", check("--trace", good, "--format", "json"), usage, "json"},
		{"device: missing file", check("--trace", p("nonexistent.gpx")), is(fs.ErrNotExist), "nonexistent.gpx"},
		{"device: unordered timestamps", check("--trace", p("unordered.csv")), is(gps.ErrOrder), "line 3"},
		{"device: no fix in the retention window", check("--trace", old), is(client.ErrNoRecentFixes), "retention window"},
		{"device: no --state", func() error {
			_, _, err := cliRun(t, runDeviceGPSCheck, "--trace", good)
			return err
		}(), usage, "--state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !tc.ok(tc.err) || !strings.Contains(tc.err.Error(), tc.text) {
				t.Fatalf("got %v; want an error of the expected kind mentioning %q", tc.err, tc.text)
			}
		})
	}
	// The same flags with a good file succeed: the refusals above are
	// about the files.
	if err := upload("--trace", good); err != nil {
		t.Fatalf("uploading a good trace: %v", err)
	}
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}
