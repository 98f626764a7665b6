package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	cio := cmdIO{stdout: &stdout, stderr: &stderr}
	if err := runDemo(context.Background(), cio, []string{"--people", "120", "--days", "10", "--seed", "5", "--json", "--out", out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	for _, k := range []string{"people", "days", "infections", "positive_tests", "uploads", "notified", "should_be_notified",
		"missed_notifications", "false_notifications", "protocol_exact", "epi_recall", "epi_precision",
		"bytes_per_device_day", "gaen_bytes_per_device_day", "timing"} {
		if _, ok := got[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	if got["protocol_exact"] != true || got["people"] != 120.0 || got["days"] != 10.0 {
		t.Fatalf("summary: protocol_exact %v, people %v, days %v", got["protocol_exact"], got["people"], got["days"])
	}
	if n, _ := got["uploads"].(float64); n == 0 {
		t.Fatal("no uploads: the demo did not exercise matching")
	}
	if _, ok := got["timing"].(map[string]any)["total_seconds"]; !ok {
		t.Error("timing lacks total_seconds")
	}
	file, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(file), bytes.TrimSpace(stdout.Bytes())) {
		t.Error("summary.json differs from the --json output")
	}
	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil || !bytes.Contains(page, []byte("<svg")) {
		t.Fatalf("report.html: %v, %d bytes without a chart", err, len(page))
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet the demo wrote %q", stderr.String())
	}
}

func TestDemoTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := runDemo(context.Background(), cmdIO{stdout: &stdout, stderr: &stderr}, []string{"--people", "30", "--days", "2"}); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "protocol exact") || !strings.Contains(stdout.String(), "YES") {
		t.Fatalf("table does not state exactness:\n%s", stdout.String())
	}
}

func TestDemoGPS(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cio := cmdIO{stdout: &stdout, stderr: &stderr}
	if err := runDemo(context.Background(), cio, []string{"--people", "100", "--days", "8", "--seed", "9", "--gps", "--gps-check-every", "2", "--json"}); err != nil {
		t.Fatalf("demo --gps: %v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	for _, k := range []string{"gps_checks", "gps_notified", "gps_should_be_notified", "gps_missed", "gps_false", "gps_protocol_exact", "protocol_exact"} {
		if _, ok := got[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	if got["gps_protocol_exact"] != true || got["protocol_exact"] != true {
		t.Fatalf("demo --gps: gps_protocol_exact %v, protocol_exact %v", got["gps_protocol_exact"], got["protocol_exact"])
	}
	if n, _ := got["gps_notified"].(float64); n == 0 || got["gps_should_be_notified"] != n {
		t.Fatalf("gps_notified %v, gps_should_be_notified %v: the demo did not exercise GPS matching", got["gps_notified"], got["gps_should_be_notified"])
	}
	if got["gps_check_every_days"] != 2.0 {
		t.Errorf("gps_check_every_days %v, want the flag's 2", got["gps_check_every_days"])
	}
}

func TestDemoUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--people", "1"},
		{"--days", "0"},
		{"--adoption", "0"},
		{"--server", "http://127.0.0.1:1"},
		{"--gps-check-every", "2"},
		{"--gps", "--gps-check-every", "0"},
		{"stray"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var buf bytes.Buffer
			err := runDemo(context.Background(), cmdIO{stdout: &buf, stderr: &buf}, args)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
		})
	}
}
