package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/cmdtest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// An operator who passes --metrics-listen scrapes the metrics there, and
// only there; they count what the public listener served.
func TestMetricsListener(t *testing.T) {
	pol, _ := writePolicy(t)
	srv := cmdtest.Start(t, run, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--data", filepath.Join(t.TempDir(), "data"), "--policy", pol)
	line := cmdtest.LogLine(srv.Log.String(), "metrics")
	if line == nil || line["addr"] == "" || strings.HasSuffix(line["addr"], ":0") {
		t.Fatalf("no \"metrics\" log line with the bound address:\n%s", srv.Log)
	}
	metricsURL := "http://" + line["addr"] + metricsPath

	if code, _ := get(t, "http://"+srv.Addr+api.PathHealth); code != http.StatusOK {
		t.Fatalf("health: %d", code)
	}
	if code, _ := get(t, "http://"+srv.Addr+metricsPath); code != http.StatusNotFound {
		t.Errorf("the public listener answers %s with %d; want 404, metrics are on their own listener", metricsPath, code)
	}
	code, body := get(t, metricsURL)
	if code != http.StatusOK {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`conftraced_http_requests_total{code="200",path="/healthz"} 1`,
		`conftraced_http_requests_total{code="404",path="other"} 1`,
		`conftraced_replica_info{store="sqlite",tee="sim"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := http.Get(metricsURL); err == nil {
		t.Error("the metrics listener still answers after shutdown")
	}
}

// Without --metrics-listen there is no metrics listener.
func TestNoMetricsByDefault(t *testing.T) {
	pol, _ := writePolicy(t)
	srv := cmdtest.Start(t, run, "--listen", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"), "--policy", pol)
	if line := cmdtest.LogLine(srv.Log.String(), "metrics"); line != nil {
		t.Errorf("metrics served without --metrics-listen: %v", line)
	}
}
