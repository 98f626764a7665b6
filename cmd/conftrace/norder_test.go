package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/policy"
)

// TestPolicyInitMaxOrder: --max-order writes the n-order rule with its
// default thresholds; without it the policy has none.
func TestPolicyInitMaxOrder(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	lab := "lab=" + p("lab.key.pub")
	out := mustRun(t, runPolicyInit, "--authority", lab, "--out", p("p3.json"), "--max-order", "3")
	doc, err := os.ReadFile(p("p3.json"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(doc)
	if err != nil || pol.MaxOrder() != 3 || pol.OrderRisk(2).MinimumWeightedMinutes != 30 || pol.OrderRisk(3).MinimumWeightedMinutes != 60 {
		t.Fatalf("policy init --max-order 3 wrote %s (%v)", doc, err)
	}
	if !strings.Contains(out, "notifies up to order 3") {
		t.Errorf("policy init printed %q; want the max order", out)
	}
	mustRun(t, runPolicyInit, "--authority", lab, "--out", p("p1.json"))
	if doc, _ := os.ReadFile(p("p1.json")); strings.Contains(string(doc), "orders") {
		t.Errorf("a policy of max order 1 mentions orders: %s", doc)
	}
	for _, n := range []string{"0", "4"} {
		_, _, err := cliRun(t, runPolicyInit, "--authority", lab, "--out", p("bad.json"), "--max-order", n)
		checkErr(t, err, "--max-order "+n+": want 1 to 3", true)
	}
}

// TestDeviceOrderUpload: under a max order 2 policy, a phone exposed by a
// case's upload sees order 1 and an order authorization, uploads under it
// with device upload, and its later contact sees order 2.
func TestDeviceOrderUpload(t *testing.T) {
	pol := policy.Default()
	pol.Orders = policy.DefaultOrders(2, pol.Risk.MinimumWeightedMinutes)
	b := newTestBackendWithPolicy(t, &pol)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, d := range []string{"A", "B", "C"} {
		mustRun(t, runDeviceInit, "--state", p(d), "--server", b.url, "--allow-simulated")
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	mustRun(t, runDeviceMeet, "--state", p("A"), "--peer", p("C"), "--at", today.AddDate(0, 0, -3).Add(10*time.Hour).Format(time.RFC3339), "--minutes", "20")
	mustRun(t, runDeviceMeet, "--state", p("B"), "--peer", p("A"), "--at", today.AddDate(0, 0, -1).Add(10*time.Hour).Format(time.RFC3339), "--minutes", "40")
	if _, _, err := cliRun(t, runDeviceUpload, "--state", p("A")); !errors.Is(err, errNoAuthorization) {
		t.Fatalf("A upload before any exposure: %v, want %v", err, errNoAuthorization)
	}

	code := strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", p("C")))
	mustRun(t, runAuthorityResult, "--server", b.url, "--key", b.key, "--code", code, "--positive", "--allow-simulated")
	mustRun(t, runDeviceCheckResult, "--state", p("C"))
	mustRun(t, runDeviceUpload, "--state", p("C"))

	check := func(dev string) api.ExposureResponse {
		t.Helper()
		out, _, err := cliRun(t, runDeviceCheckExposure, "--state", p(dev), "--json")
		if err != nil {
			t.Fatalf("%s check-exposure: %v", dev, err)
		}
		var raw map[string]any
		var r api.ExposureResponse
		if json.Unmarshal([]byte(out), &raw) != nil || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("%s check-exposure --json printed %q", dev, out)
		}
		if _, ok := raw["order"]; !ok {
			t.Errorf("%s check-exposure --json has no \"order\": %s", dev, out)
		}
		return r
	}
	if r := check("B"); r.Exposed || r.Order != 0 {
		t.Fatalf("B before A's upload: %+v", r)
	}
	r := check("A")
	if !r.Exposed || r.Order != 1 || len(r.OrderAuthorization) != api.AuthorizationSize || r.UploadFrom != today.AddDate(0, 0, -3).Format(api.DateLayout) {
		t.Fatalf("A: %+v; want order 1 with an authorization from three days ago", r)
	}
	if _, stderr, _ := cliRun(t, runDeviceCheckExposure, "--state", p("A")); !strings.Contains(stderr, "warn your own contacts") {
		t.Errorf("A check-exposure said %q on stderr; want the authorization noted", stderr)
	}
	out, _, err := cliRun(t, runDeviceUpload, "--state", p("A"))
	if err != nil || out != "accepted 4 sightings, 2 daily keys as a source of order 2\n" {
		t.Fatalf("A upload: %q, %v; want its 4 sightings of B (not those of C) as order 2", out, err)
	}
	if _, _, err := cliRun(t, runDeviceUpload, "--state", p("A")); !errors.Is(err, errNoAuthorization) {
		t.Errorf("A upload again: %v, want %v (the authorization was used)", err, errNoAuthorization)
	}
	if r := check("B"); !r.Exposed || r.Order != 2 || r.OrderAuthorization != nil {
		t.Errorf("B after A's upload: %+v; want order 2, no authorization", r)
	}
	if out := mustRun(t, runDeviceCheckExposure, "--state", p("B")); out != "exposed at order 2\n" {
		t.Errorf("B check-exposure printed %q", out)
	}
}

// TestDemoMaxOrder: demo --max-order 2 runs exactly and reports
// notifications by order and the second-order recall; the default demo's
// summary has none of them.
func TestDemoMaxOrder(t *testing.T) {
	out, _, err := cliRun(t, runDemo, "--people", "200", "--days", "10", "--seed", "3", "--max-order", "2", "--json")
	if err != nil {
		t.Fatalf("demo --max-order 2: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	by, ok := got["notified_by_order"].(map[string]any)
	if got["protocol_exact"] != true || !ok || by["1"] == nil || got["max_order"] != 2.0 || got["second_order_recall"] == nil {
		t.Fatalf("summary: protocol_exact %v, notified_by_order %v, max_order %v, second_order_recall %v", got["protocol_exact"], got["notified_by_order"], got["max_order"], got["second_order_recall"])
	}
	out, _, err = cliRun(t, runDemo, "--people", "30", "--days", "2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "notified_by_order") || strings.Contains(out, "max_order") {
		t.Errorf("the default demo's summary mentions orders")
	}
	_, _, err = cliRun(t, runDemo, "--max-order", "4")
	checkErr(t, err, "--max-order 4: want 1 to 3", true)
}
