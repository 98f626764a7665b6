package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchGPS(t *testing.T) {
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	err := runBenchGPS(context.Background(), cio, []string{"--sizes", "2e3,3e4", "--checks", "4", "--brute-max", "2e3", "--brute-checks", "2"})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "index checks/s") || !strings.Contains(lines[0], "brute-force checks/s") {
		t.Fatalf("no table header:\n%s", out.String())
	}
	small, large := strings.Fields(lines[1]), strings.Fields(lines[2])
	if small[0] != "2e+03" || large[0] != "3e+04" {
		t.Errorf("rows are not the sizes asked for:\n%s", out.String())
	}
	// The brute force is timed up to --brute-max and not beyond.
	if small[4] == "—" || large[4] != "—" {
		t.Errorf("brute-force column: %q at 2e3, %q at 3e4", small[4], large[4])
	}
	if !strings.Contains(lines[len(lines)-1], "spread: one city") {
		t.Errorf("footer does not name the spread: %q", lines[len(lines)-1])
	}
}

// TestBenchGPSProfile checks that --cpuprofile writes a profile that
// pprof reads, of the index checks.
func TestBenchGPSProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checks.pprof")
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	err := runBenchGPS(context.Background(), cio, []string{"--sizes", "2e3", "--checks", "3000", "--brute-max", "0", "--cpuprofile", path})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A pprof profile is a gzipped protocol buffer whose string table
	// names the functions sampled.
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("the profile is not gzipped: %v", err)
	}
	raw, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("the profile does not decompress: %v", err)
	}
	if !bytes.Contains(raw, []byte("cpu")) || !bytes.Contains(raw, []byte("nanoseconds")) {
		t.Fatalf("not a CPU profile (%d bytes)", len(raw))
	}
	if !bytes.Contains(raw, []byte("gpsindex.(*Index).Query")) {
		t.Errorf("no sample in Index.Query")
	}
}

func TestBenchGPSTowns(t *testing.T) {
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	err := runBenchGPS(context.Background(), cio, []string{"--sizes", "2e3,3e4", "--checks", "4", "--brute-max", "2e3", "--brute-checks", "2", "--towns", "5"})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 || strings.Fields(lines[1])[0] != "2e+03" || strings.Fields(lines[2])[0] != "3e+04" {
		t.Fatalf("rows are not the sizes asked for:\n%s", out.String())
	}
	if !strings.Contains(lines[len(lines)-1], "spread: 5 towns (Zipf)") {
		t.Errorf("footer does not name the spread: %q", lines[len(lines)-1])
	}
}

func TestBenchGPSUsage(t *testing.T) {
	for _, args := range [][]string{{"--sizes", "lots"}, {"--sizes", "5"}, {"--checks", "0"}, {"--towns", "0"}, {"--towns", "1001"}, {"extra"}} {
		var out bytes.Buffer
		err := runBenchGPS(context.Background(), cmdIO{stdout: &out, stderr: &out}, args)
		if _, ok := err.(usageError); !ok {
			t.Errorf("%q: error %v, want a usage error", args, err)
		}
	}
}

// --markdown prints the same table in Markdown, for docs/performance.md.
func TestBenchGPSMarkdown(t *testing.T) {
	out, stderr, err := cliRun(t, runBenchGPS, "--sizes", "2e3", "--checks", "2", "--brute-max", "2e3", "--brute-checks", "1", "--markdown")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "| indexed points |") || !strings.HasPrefix(lines[1], "| ---: |") {
		t.Fatalf("not a Markdown table:\n%s", out)
	}
	cells := strings.Split(strings.Trim(lines[2], "| "), " | ")
	if len(cells) != 7 || cells[0] != "2e+03" || cells[4] == "—" || !strings.HasSuffix(cells[5], "×") {
		t.Errorf("row %q: want 7 cells for 2e+03 with a brute-force rate and a speed-up", lines[2])
	}
}
