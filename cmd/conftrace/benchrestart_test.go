package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchRestart runs bench restart at a tiny size, as CI does, and
// reads the figures it promises from its JSON.
func TestBenchRestart(t *testing.T) {
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	if err := runBenchRestart(context.Background(), cio, []string{"--pairs", "3000", "--sightings", "1000", "--json"}); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"seconds", "floor_seconds", "ratio", "pairs", "records", "bytes"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, r[k])
		}
	}
	if r["pairs"] != 3000.0 {
		t.Errorf("pairs = %v, want 3000", r["pairs"])
	}
	out.Reset()
	if err := runBenchRestart(context.Background(), cio, []string{"--pairs", "1e3", "--markdown"}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[2], "| 1e+03 |") {
		t.Errorf("markdown: %q", out.String())
	}
	for _, bad := range [][]string{{"--pairs", "0"}, {"--pairs", "2e9"}, {"--pairs", "1.5"}, {"--sightings", "0"}, {"--clients", "-1"}, {"--nope"}} {
		if err := runBenchRestart(context.Background(), cio, bad); err == nil {
			t.Errorf("%v was run", bad)
		}
	}
}
