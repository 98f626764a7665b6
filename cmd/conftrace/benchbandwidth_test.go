package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// The bandwidth target: a daily check of 2,000 sightings costs on the wire,
// request and answer, padded and encapsulated, at most 1/100 of what a GAEN
// phone downloads a day at 10,000 positive cases a day (14 keys each, 28
// bytes a key). A size, not a timing: it holds on any machine.
func TestBenchBandwidthTarget(t *testing.T) {
	out, stderr, err := cliRun(t, runBenchBandwidth, "--sightings", "2000", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var r bandwidth
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if r.GAENBytes10k != 10_000*14*28 || r.Sightings != 2000 || r.BytesPerCheck != r.RequestBytes+r.AnswerBytes {
		t.Fatalf("gaen_bytes_10k %d, sightings %d, bytes_per_check %d of %d + %d: not the figures the target is stated in",
			r.GAENBytes10k, r.Sightings, r.BytesPerCheck, r.RequestBytes, r.AnswerBytes)
	}
	if r.BytesPerCheck*100 > r.GAENBytes10k {
		t.Errorf("a check of 2,000 sightings costs %d bytes on the wire, more than 1/100 of a GAEN phone's %d at 10,000 cases a day", r.BytesPerCheck, r.GAENBytes10k)
	}
	if r.BytesPerCheck >= r.V2BytesPerCheck || r.ReportBytes >= r.V2ReportBytes {
		t.Errorf("%d bytes a check (report %d), protocol v2's %d (report %d): want less", r.BytesPerCheck, r.ReportBytes, r.V2BytesPerCheck, r.V2ReportBytes)
	}
	t.Logf("%d bytes a check, 1/%.0f of a GAEN phone's download at 10,000 cases a day; 1/%.0f of compressed exports' (%.1f bytes a key)",
		r.BytesPerCheck, 1/r.Ratio, 1/r.ExportRatio, r.ExportBytesPerKey)
}

// bench bandwidth prints a row per number of sightings, then the GAEN
// yardstick; --json takes one number.
func TestBenchBandwidthTable(t *testing.T) {
	out, stderr, err := cliRun(t, runBenchBandwidth, "--sightings", "100,700", "--markdown")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "| sightings |") || !strings.HasPrefix(lines[1], "| ---: |") {
		t.Fatalf("want a header, a separator and two rows:\n%s", out)
	}
	for i, n := range []string{"100", "700"} {
		cells := strings.Split(strings.Trim(lines[2+i], "| "), " | ")
		if len(cells) != 8 || cells[0] != n || !strings.HasPrefix(cells[7], "1/") {
			t.Errorf("row %q: want 8 cells for %s sightings, the last a share of GAEN's download", lines[2+i], n)
		}
	}
	if !strings.Contains(out, "3920000 bytes a day at 10000 cases a day") {
		t.Errorf("the GAEN yardstick is missing:\n%s", out)
	}
	for _, bad := range [][]string{{"--sightings", "x"}, {"--sightings", "-1"}, {"--sightings", "40001"}, {"--keys", "0"},
		{"--sightings", "1,2", "--json"}, {"--json", "--markdown"}} {
		if _, _, err := cliRun(t, runBenchBandwidth, bad...); err == nil {
			t.Errorf("bench bandwidth %v succeeded", bad)
		}
	}
}
