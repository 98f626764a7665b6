package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchLoad runs bench load at a tiny size, as CI does, and reads the
// figures it promises from its JSON.
func TestBenchLoad(t *testing.T) {
	var out, errOut bytes.Buffer
	cio := cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	args := []string{"--pairs", "20000", "--duration", "300ms", "--clients", "2", "--checks", "400", "--json"}
	if err := runBenchLoad(context.Background(), cio, args); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"checks_per_s", "floor_checks_per_s", "ratio", "p50_ms", "p99_ms", "bytes_per_check", "floor_s", "cpu_ratio"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, r[k])
		}
	}
	if r["errors"] != 0.0 {
		t.Errorf("errors = %v, want 0 (first: %v)", r["errors"], r["first_error"])
	}
	if p50, p99 := r["p50_ms"].(float64), r["p99_ms"].(float64); p99 < p50 {
		t.Errorf("p99 %v ms below p50 %v ms", p99, p50)
	}
	if r["gaen_bytes_10k"] != 3_920_000.0 {
		t.Errorf("gaen_bytes_10k = %v, want 10,000 cases x 14 keys x 28 bytes", r["gaen_bytes_10k"])
	}
	load, _ := r["load"].(map[string]any)
	if load == nil || load["met_checks"].(float64) < 1 || load["exposed_checks"] != load["met_checks"] {
		t.Errorf("met phones' checks not all exposed: %v", load)
	}
	if cpus, _ := load["cpus_used"].(float64); cpus <= 0 {
		t.Errorf("load.cpus_used = %v, want the CPUs the phase used", load["cpus_used"])
	}
	if err := runBenchLoad(context.Background(), cio, []string{"--rate", "10", "--at", "0.8"}); err == nil {
		t.Error("--rate with --at was run")
	}
}
