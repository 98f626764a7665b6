package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchIndex runs bench index at a tiny size, as CI does, and reads
// the figures it promises from its JSON.
func TestBenchIndex(t *testing.T) {
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	if err := runBenchIndex(context.Background(), cio, []string{"--pairs", "2e4", "--map-pairs", "10000", "--duration", "100ms", "--json"}); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	if r["pairs"] != 20000.0 || r["map_pairs"] != 10000.0 || r["map_smaller"] != true {
		t.Errorf("pairs %v, map_pairs %v, map_smaller %v: not the sizes asked for", r["pairs"], r["map_pairs"], r["map_smaller"])
	}
	for _, k := range []string{"checks_per_s", "map_checks_per_s", "ratio", "bytes_per_pair", "map_bytes_per_pair",
		"ns_per_hit", "ns_per_miss", "map_ns_per_hit", "map_ns_per_miss"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, r[k])
		}
	}
	// Far from the 16 bytes a pair, the index would not be compact;
	// a map of 32-byte keys cannot take fewer than 32.
	if v := r["bytes_per_pair"].(float64); v > 40 {
		t.Errorf("bytes_per_pair = %.1f", v)
	}
	if v := r["map_bytes_per_pair"].(float64); v < 32 {
		t.Errorf("map_bytes_per_pair = %.1f", v)
	}

	out.Reset()
	if err := runBenchIndex(context.Background(), cio, []string{"--pairs", "20000", "--duration", "20ms", "--markdown"}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[2], "| 2e+04 |") {
		t.Errorf("markdown: %q", out.String())
	}
	for _, bad := range [][]string{{"--pairs", "0"}, {"--pairs", "1.5"}, {"--hit-rate", "2"}, {"--pairs", "10", "--duration", "0s"}} {
		if err := runBenchIndex(context.Background(), cio, bad); err == nil {
			t.Errorf("%q was run", bad)
		}
	}
}
