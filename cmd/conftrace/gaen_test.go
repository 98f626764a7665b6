package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// gaenBackend is a local backend whose policy lists one GAEN key server,
// "de-cwa", whose signing key is returned.
func gaenBackend(t *testing.T) (*localbackend.Backend, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default()
	pol.GAENExportKeys = []policy.ExportKey{{Name: "de-cwa", PublicKey: der}}
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Policy: &pol})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, key
}

// writeExport writes a signed export of keys to a file.
func writeExport(t *testing.T, signer *ecdsa.PrivateKey, keys ...gaen.Key) string {
	t.Helper()
	now := time.Now()
	zip, err := gaen.Write(&gaen.Export{Region: "DE", Start: now.Add(-24 * time.Hour), End: now, Keys: keys},
		gaen.SigningKey{KeyID: "262", KeyVersion: "v1", Key: signer})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "export.zip")
	if err := os.WriteFile(f, zip, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// A GAEN country's positive user reaches the backend as a signed export;
// a phone that heard them is exposed one-sided, without downloading keys.
func TestGAENImport(t *testing.T) {
	b, signer := gaenBackend(t)
	dir := t.TempDir()
	phone := filepath.Join(dir, "phone")
	mustRun(t, runDeviceInit, "--state", phone, "--server", b.URL, "--allow-simulated")

	today := enid.IntervalOf(time.Now()).RollingStart()
	sick := enid.NewTEK()
	old := gaen.Key{TEK: enid.NewTEK(), RollingStart: today - 20*enid.RollingPeriod, RollingPeriod: enid.RollingPeriod}
	invalid := gaen.Key{TEK: enid.NewTEK(), RollingStart: today - enid.RollingPeriod, RollingPeriod: 200}
	yesterday := today - enid.RollingPeriod
	export := writeExport(t, signer,
		gaen.Key{TEK: sick, RollingStart: yesterday, RollingPeriod: enid.RollingPeriod},
		gaen.Key{TEK: enid.NewTEK(), RollingStart: today, RollingPeriod: enid.RollingPeriod},
		old, invalid)

	// The phone heard the GAEN user yesterday at noon, for two intervals.
	k, err := enid.NewKey(sick, yesterday, enid.RollingPeriod)
	if err != nil {
		t.Fatal(err)
	}
	noon := yesterday + 72
	for _, i := range []enid.Interval{noon, noon + 1} { // 20 minutes: above the policy's 15
		rpi := k.RPI(i)
		mustRun(t, runDeviceHear, "--state", phone, "--rpi", hex.EncodeToString(rpi[:]), "--at", i.Time().Format(time.RFC3339), "--minutes", "10", "--attenuation", "50")
	}
	if out := mustRun(t, runDeviceCheckExposure, "--state", phone); out != "not exposed\n" {
		t.Fatalf("before the import: %q", out)
	}

	out := mustRun(t, runGAENImport, "--server", b.URL, "--export", export, "--allow-simulated")
	if want := "imported 2 keys, skipped 2 (outside the retention window or invalid): export of DE signed by de-cwa\n"; out != want {
		t.Errorf("gaen import printed %q, want %q", out, want)
	}
	// Imported keys match one-sided only: nothing proves that the GAEN
	// phone heard this one. (The default policy's answer is coarse.)
	var resp api.ExposureResponse
	if err := json.Unmarshal([]byte(mustRun(t, runDeviceCheckExposure, "--state", phone, "--json")), &resp); err != nil {
		t.Fatal(err)
	}
	if !resp.Exposed || !resp.OneSided || resp.Reciprocal || resp.LastExposure != noon.Time().Format(api.DateLayout) || resp.Days != nil {
		t.Errorf("after the import: %+v, want exposed one-sided on %s", resp, noon.Time().Format(api.DateLayout))
	}

	// The same export again imports nothing.
	if out := mustRun(t, runGAENImport, "--server", b.URL, "--export", export, "--allow-simulated"); out != "already imported: export of DE signed by de-cwa\n" {
		t.Errorf("second import printed %q", out)
	}
}

func TestGAENImportRefusals(t *testing.T) {
	b, signer := gaenBackend(t)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := gaen.Key{TEK: enid.NewTEK(), RollingStart: enid.IntervalOf(time.Now()).RollingStart(), RollingPeriod: enid.RollingPeriod}
	garbage := filepath.Join(t.TempDir(), "garbage.zip")
	os.WriteFile(garbage, []byte("not a zip"), 0o644)
	huge := filepath.Join(t.TempDir(), "huge.zip")
	os.WriteFile(huge, make([]byte, maxExportFile+1), 0o644)
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no server", []string{"--export", garbage}, "--server is required", true},
		{"no export", []string{"--server", b.URL, "--allow-simulated"}, "--export is required", true},
		{"missing file", []string{"--server", b.URL, "--export", garbage + ".none", "--allow-simulated"}, "no such file", false},
		{"too large", []string{"--server", b.URL, "--export", huge, "--allow-simulated"}, "the backend takes exports of at most", false},
		{"not a zip", []string{"--server", b.URL, "--export", garbage, "--allow-simulated"}, "malformed", false},
		{"unlisted signer", []string{"--server", b.URL, "--export", writeExport(t, stranger, key), "--allow-simulated"}, "bad_signature", false},
		{"simulated not allowed", []string{"--server", b.URL, "--export", writeExport(t, signer, key)}, "simulated TEE evidence refused", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := cliRun(t, runGAENImport, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
			if out != "" {
				t.Errorf("printed %q despite the error", out)
			}
		})
	}
}
