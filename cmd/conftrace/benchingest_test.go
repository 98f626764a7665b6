package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchIngest runs bench ingest at a tiny size, as CI does, and reads
// the figures it promises from its JSON.
func TestBenchIngest(t *testing.T) {
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	if err := runBenchIngest(context.Background(), cio, []string{"--uploads", "6", "--sightings", "40", "--clients", "2", "--json"}); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"uploads_per_s", "floor_uploads_per_s", "ratio"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, r[k])
		}
	}
	out.Reset()
	if err := runBenchIngest(context.Background(), cio, []string{"--uploads", "2", "--sightings", "10", "--markdown"}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[2], "| 2 | 10 |") {
		t.Errorf("markdown: %q", out.String())
	}
	if err := runBenchIngest(context.Background(), cio, []string{"--uploads", "0"}); err == nil {
		t.Error("--uploads 0 was run")
	}
}
