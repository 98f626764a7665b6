package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/policy"
)

// verifyCert runs verify-certificate --json and returns its verdict and
// error.
func verifyCert(t *testing.T, url, cert string, extra ...string) (verifiedCertificate, error) {
	t.Helper()
	out, stderr, err := cliRun(t, runAuthorityVerifyCertificate, append([]string{"--server", url, "--cert", cert, "--allow-simulated", "--json"}, extra...)...)
	var v verifiedCertificate
	if jerr := json.Unmarshal([]byte(out), &v); jerr != nil {
		t.Fatalf("verify-certificate printed %q (stderr %q, error %v): %v", out, stderr, err, jerr)
	}
	return v, err
}

// TestCertificateWalkthrough: a contact of a case asks for a certificate
// with the nonce a hospital gave it, the hospital verifies it once; a
// phone not exposed gets none; a tampered, foreign, replayed, expired or
// other-nonce certificate is refused with its reason; a GPS exposure gets
// a certificate too.
func TestCertificateWalkthrough(t *testing.T) {
	pol := policy.Default()
	pol.Certificates = policy.Certificates{SingleUse: true, ValidDays: 1}
	pol.BundleHours = 168 // so that a clock two days ahead still takes the bundle
	b := newTestBackendWithPolicy(t, &pol)
	p := func(name string) string { return filepath.Join(b.dir, name) }
	for _, d := range []string{"A", "C", "S"} {
		mustRun(t, runDeviceInit, "--state", p(d), "--server", b.url, "--allow-simulated")
	}
	met := time.Now().UTC().Truncate(24 * time.Hour).Add(-12 * time.Hour) // yesterday at noon
	mustRun(t, runDeviceMeet, "--state", p("A"), "--peer", p("C"), "--at", met.Format(time.RFC3339), "--minutes", "30")
	mustRun(t, runDeviceMeet, "--state", p("S"), "--peer", p("A"), "--at", met.Add(-24*time.Hour).Format(time.RFC3339), "--minutes", "30")

	// Before A's upload nobody is exposed: no certificate, no file.
	_, _, err := cliRun(t, runDeviceCertificate, "--state", p("C"), "--out", p("early.cert"))
	if !errors.Is(err, errNotExposed) {
		t.Fatalf("certificate before any upload: %v, want errNotExposed", err)
	}
	if _, err := os.Stat(p("early.cert")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused certificate left a file: %v", err)
	}

	code := strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", p("A")))
	mustRun(t, runAuthorityResult, "--server", b.url, "--key", b.key, "--code", code, "--positive", "--allow-simulated")
	mustRun(t, runDeviceCheckResult, "--state", p("A"))
	mustRun(t, runDeviceUpload, "--state", p("A"))

	// A's upload holds its encounters with C and S: both are exposed. A
	// phone that met nobody is not.
	mustRun(t, runDeviceInit, "--state", p("X"), "--server", b.url, "--allow-simulated")
	if _, _, err := cliRun(t, runDeviceCertificate, "--state", p("X"), "--out", p("x.cert")); !errors.Is(err, errNotExposed) {
		t.Errorf("a phone never exposed: %v, want errNotExposed", err)
	}

	// The hospital gives C a nonce; C asks with it.
	challenge := strings.Repeat("c3", 32)
	out := mustRun(t, runDeviceCertificate, "--state", p("C"), "--out", p("c.cert"), "--nonce", challenge)
	date := met.Format(api.DateLayout)
	if !strings.HasPrefix(out, "certificate written to "+p("c.cert")+": bluetooth exposure of order 1 on "+date) {
		t.Errorf("device certificate printed %q", out)
	}
	text, err := os.ReadFile(p("c.cert"))
	if err != nil || !bytes.HasPrefix(text, []byte(certificate.TextPrefix)) || len(text) != certificate.TextSize+1 {
		t.Fatalf("certificate file %q (%v): want the text form and a line feed", text, err)
	}

	// Single use: --seen is required, and a second presentation refused.
	if _, _, err := cliRun(t, runAuthorityVerifyCertificate, "--server", b.url, "--cert", p("c.cert"), "--allow-simulated"); !errors.As(err, new(usageError)) {
		t.Errorf("verify-certificate without --seen under a single-use policy: %v, want a usage error", err)
	}
	v, err := verifyCert(t, b.url, p("c.cert"), "--seen", p("seen"), "--nonce", challenge)
	if err != nil || !v.Valid || v.Kind != "bluetooth" || v.Order != 1 || v.Date != date || v.RiskMinutes != 0 ||
		v.ThresholdMinutes != pol.Risk.MinimumWeightedMinutes || v.Nonce != challenge || !v.SingleUse {
		t.Fatalf("verify-certificate: %+v, %v; want valid, bluetooth, order 1 on %s, nonce %s, single use", v, err, date, challenge)
	}
	v, err = verifyCert(t, b.url, p("c.cert"), "--seen", p("seen"), "--nonce", challenge)
	if err == nil || v.Valid || v.Reason != "replayed" {
		t.Errorf("a second presentation: %+v, %v; want refused as replayed", v, err)
	}
	// Another certificate of the same phone, with its own nonce, is
	// another presentation.
	mustRun(t, runDeviceCertificate, "--state", p("C"), "--out", p("c2.cert"))
	if v, err := verifyCert(t, b.url, p("c2.cert"), "--seen", p("seen")); err != nil || !v.Valid {
		t.Errorf("C's second certificate: %+v, %v; want valid", v, err)
	}
	// S's certificate, in plain text output.
	mustRun(t, runDeviceCertificate, "--state", p("S"), "--out", p("s.cert"))
	out = mustRun(t, runAuthorityVerifyCertificate, "--server", b.url, "--cert", p("s.cert"), "--seen", p("seen"), "--allow-simulated")
	if !strings.HasPrefix(out, "valid: bluetooth exposure of order 1 on "+met.Add(-24*time.Hour).Format(api.DateLayout)) ||
		!strings.Contains(out, "threshold: 15 weighted minutes") {
		t.Errorf("verify-certificate printed %q", out)
	}

	// Refusals, each with its reason.
	mustRun(t, runDeviceCertificate, "--state", p("C"), "--out", p("c3.cert"))
	c3, err := readCertificate(p("c3.cert"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, c certificate.Certificate) string {
		t.Helper()
		text, err := c.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p(name), string(text)+"\n")
		return p(name)
	}
	earlier := c3
	earlier.Date = earlier.Date.AddDate(0, 0, -1)
	other := newTestBackendWithPolicy(t, &pol)
	for _, tc := range []struct {
		name, url, file string
		extra           []string
		reason          string
	}{
		{"an exposure day changed", b.url, write("tampered.cert", earlier), nil, "tampered"},
		{"another backend's verifier", other.url, p("c3.cert"), nil, "foreign"},
		{"another nonce than the hospital's", b.url, p("c3.cert"), []string{"--nonce", strings.Repeat("ab", 32)}, "nonce"},
		{"not a certificate", b.url, func() string { writeFile(t, p("junk.cert"), "hello\n"); return p("junk.cert") }(), nil, "malformed"},
	} {
		v, err := verifyCert(t, tc.url, tc.file, append([]string{"--seen", p("seen-" + tc.reason)}, tc.extra...)...)
		if err == nil || v.Valid || v.Reason != tc.reason || !strings.Contains(err.Error(), "certificate refused ("+tc.reason+")") {
			t.Errorf("%s: %+v, %v; want refused as %s", tc.name, v, err, tc.reason)
		}
	}
	// Refused certificates were not recorded: c3 is still good once.
	if v, err := verifyCert(t, b.url, p("c3.cert"), "--seen", p("seen")); err != nil || !v.Valid {
		t.Errorf("c3 after refusals elsewhere: %+v, %v; want valid", v, err)
	}

	// Two days later the certificate (valid one day) has expired: the
	// verifier's client, on a clock two days ahead, says so.
	later, err := client.New(t.Context(), client.Config{Server: b.url, Expectations: attest.Expectations{AllowSimulated: true},
		Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := later.VerifyCertificate(c3, nil); !errors.Is(err, certificate.ErrExpired) {
		t.Errorf("a certificate two days later: %v, want ErrExpired", err)
	}

	// The verifier that saw the bundle refuses an unusable --nonce before
	// the network.
	if _, _, err := cliRun(t, runAuthorityVerifyCertificate, "--server", b.url, "--cert", p("c3.cert"), "--nonce", "abcd"); err == nil {
		t.Error("a nonce of 2 bytes was taken")
	}
}

// TestCertificateGPS: a GPS exposure gets a certificate of kind gps.
func TestCertificateGPS(t *testing.T) {
	b := newTestBackend(t)
	p := func(name string) string { return filepath.Join(b.dir, name) }
	start := time.Now().UTC().Truncate(24 * time.Hour).Add(-12 * time.Hour)
	writeCSVTrace(t, p("patient.csv"), walkTrace(start, 60, time.Minute, 46.5191, 6.5668))
	mustRun(t, runAuthorityGPS, "--server", b.url, "--key", b.key, "--trace", p("patient.csv"), "--allow-simulated")
	mustRun(t, runDeviceInit, "--state", p("A"), "--server", b.url, "--allow-simulated")
	writeCSVTrace(t, p("near.csv"), walkTrace(start.Add(-30*time.Minute), 25, 5*time.Minute, 46.519136, 6.5668-30e-5))
	writeCSVTrace(t, p("far.csv"), walkTrace(start.Add(-30*time.Minute), 25, 5*time.Minute, 47.5, 7.5))

	if _, _, err := cliRun(t, runDeviceCertificate, "--state", p("A"), "--out", p("far.cert"), "--trace", p("far.csv")); !errors.Is(err, errNotExposed) {
		t.Errorf("a trace far from patients: %v, want errNotExposed", err)
	}
	out := mustRun(t, runDeviceCertificate, "--state", p("A"), "--out", p("a.cert"), "--trace", p("near.csv"))
	if !strings.Contains(out, "gps exposure of order 1 on "+start.Format(api.DateLayout)) {
		t.Errorf("device certificate --trace printed %q", out)
	}
	v, err := verifyCert(t, b.url, p("a.cert"))
	if err != nil || !v.Valid || v.Kind != "gps" || v.ThresholdMinutes != policy.Default().GPS.MinimumMinutes || v.SingleUse {
		t.Errorf("verify-certificate of a GPS certificate: %+v, %v", v, err)
	}
}

// TestCertificateCommandErrors: the commands refuse what they cannot use
// before any network traffic.
func TestCertificateCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		fn   cmdFunc
		args []string
	}{
		"no --out":            {runDeviceCertificate, []string{"--state", dir}},
		"no --state":          {runDeviceCertificate, []string{"--out", filepath.Join(dir, "x")}},
		"a short nonce":       {runDeviceCertificate, []string{"--state", dir, "--out", "x", "--nonce", "abcd"}},
		"a nonce of zeros":    {runDeviceCertificate, []string{"--state", dir, "--out", "x", "--nonce", strings.Repeat("00", 32)}},
		"a trace of no kind":  {runDeviceCertificate, []string{"--state", dir, "--out", "x", "--trace", "trace.dat"}},
		"no --server":         {runAuthorityVerifyCertificate, []string{"--cert", "x"}},
		"no --cert":           {runAuthorityVerifyCertificate, []string{"--server", "http://127.0.0.1:1"}},
		"a nonce not in hex":  {runAuthorityVerifyCertificate, []string{"--server", "http://127.0.0.1:1", "--cert", "x", "--nonce", strings.Repeat("zz", 32)}},
		"an unknown argument": {runAuthorityVerifyCertificate, []string{"--server", "http://127.0.0.1:1", "--cert", "x", "extra"}},
	} {
		_, _, err := cliRun(t, tc.fn, tc.args...)
		if !errors.As(err, new(usageError)) && !strings.Contains(strings.ToLower(errString(err)), "invalid value") {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
	// The certificate file is read strictly.
	for name, content := range map[string][]byte{
		"empty":          nil,
		"too long":       bytes.Repeat([]byte("x"), maxCertificateFile+1),
		"two line feeds": append([]byte(certificate.TextPrefix+strings.Repeat("A", certificate.TextSize-len(certificate.TextPrefix))), '\n', '\n'),
	} {
		path := filepath.Join(dir, hex.EncodeToString([]byte(name)))
		writeFile(t, path, string(content))
		if _, err := readCertificate(path); !errors.Is(err, certificate.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
