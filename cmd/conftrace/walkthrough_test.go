package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/cmdtest"
)

// TestWalkthrough runs the README's scenario through the commands: the
// backend (the conftraced binary, run as an operator runs it), a health
// authority, and devices A, B, C and D. C meets A, B meets A, C tests
// positive and uploads; A is exposed, B is not, and stays so across a
// restart of the backend.
func TestWalkthrough(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	conftraced := buildConftraced(t)
	image, err := os.ReadFile(conftraced)
	if err != nil {
		t.Fatal(err)
	}

	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	mustRun(t, runPolicyInit, "--authority", "lab="+p("lab.key.pub"), "--out", p("policy.json"))
	// The backend writes uploads on its clock: every 10 seconds, the
	// shortest period a policy allows, so that the upload is durable
	// before the restart below without a long wait.
	setPolicyField(t, p("policy.json"), "store_flush_seconds", 10)
	serveArgs := []string{"--listen", "127.0.0.1:0", "--data", p("data"), "--policy", p("policy.json")}
	srv := cmdtest.StartProcess(t, conftraced, serveArgs...)
	url := srv.URL()

	// An auditor verifies the backend; without --allow-simulated it fails.
	var v struct {
		TEE         string `json:"tee"`
		Measurement string `json:"measurement"`
		ReportData  string `json:"report_data"`
		Policy      struct {
			Authorities []struct{ Name string } `json:"authorities"`
		} `json:"policy"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, runVerify, "--server", url, "--allow-simulated", "--json")), &v); err != nil {
		t.Fatalf("verify --json: %v", err)
	}
	// In the simulated TEE the measurement is the SHA-256 of the image, so
	// anyone who rebuilds it can check it.
	if sum := sha256.Sum256(image); v.TEE != "sim" || v.Measurement != hex.EncodeToString(sum[:]) {
		t.Errorf("verify says tee %s measurement %s; want sim and the SHA-256 of conftraced, %x", v.TEE, v.Measurement, sum)
	}
	if logged := cmdtest.LogLine(srv.Log.String(), "listening")["measurement"]; logged != v.Measurement {
		t.Errorf("conftraced logged measurement %s, verify says %s", logged, v.Measurement)
	}
	if len(v.Policy.Authorities) != 1 || v.Policy.Authorities[0].Name != "lab" {
		t.Errorf("verify: attested authorities %+v, want [lab]", v.Policy.Authorities)
	}
	if _, _, err := cliRun(t, runVerify, "--server", url); !errors.Is(err, attest.ErrSimulated) {
		t.Errorf("verify without --allow-simulated: %v, want attest.ErrSimulated", err)
	}

	// A device pinned to another measurement refuses the backend at init.
	wrong := strings.Repeat("ab", 32)
	_, _, err = cliRun(t, runDeviceInit, "--state", p("X"), "--server", url, "--allow-simulated", "--measurement", wrong)
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" || !strings.Contains(err.Error(), "measurement") {
		t.Errorf("device init with a wrong measurement: %v, want a measurement mismatch", err)
	}
	if _, err := os.Stat(p("X")); err == nil {
		t.Error("device init with a wrong measurement left a device state behind")
	}

	// A pins the real measurement; the others accept any simulated backend.
	mustRun(t, runDeviceInit, "--state", p("A"), "--server", url, "--allow-simulated", "--measurement", v.Measurement)
	for _, d := range []string{"B", "C", "D"} {
		mustRun(t, runDeviceInit, "--state", p(d), "--server", url, "--allow-simulated")
	}

	today := time.Now().UTC().Truncate(24 * time.Hour)
	ac := today.AddDate(0, 0, -2).Add(10 * time.Hour)
	ba := today.AddDate(0, 0, -3).Add(14 * time.Hour)
	if out := mustRun(t, runDeviceMeet, "--state", p("A"), "--peer", p("C"), "--at", ac.Format(time.RFC3339), "--minutes", "20"); out != "recorded 2 sightings on each device\n" {
		t.Errorf("meet A-C printed %q", out)
	}
	mustRun(t, runDeviceMeet, "--state", p("B"), "--peer", p("A"), "--at", ba.Format(time.RFC3339), "--minutes", "15", "--attenuation", "60")

	code := strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", p("C")))
	if _, err := api.NormalizeTestCode(code); err != nil {
		t.Fatalf("register-test printed %q: %v", code, err)
	}
	if out := mustRun(t, runDeviceCheckResult, "--state", p("C")); out != "pending\n" {
		t.Errorf("check-result before the authority's result printed %q, want pending", out)
	}
	mustRun(t, runAuthorityResult, "--server", url, "--key", p("lab.key"), "--code", code, "--positive", "--allow-simulated")
	if out, stderr, err := cliRun(t, runDeviceCheckResult, "--state", p("C")); err != nil || out != "positive\n" || !strings.Contains(stderr, "upload authorized until") {
		t.Errorf("C check-result: %q, %q, %v; want positive and the authorization's expiry", out, stderr, err)
	}
	cLog := parseDeviceLog(t, mustRun(t, runDeviceLog, "--state", p("C")))
	if len(cLog.sightings) != 2 || len(cLog.keys) != 1 {
		t.Fatalf("C recorded %d sightings under %d daily keys, want 2 under 1", len(cLog.sightings), len(cLog.keys))
	}
	out, stderr, err := cliRun(t, runDeviceUpload, "--state", p("C"))
	if err != nil || out != "accepted 2 sightings, 1 daily key\n" {
		t.Errorf("C upload printed %q, %v; want accepted 2 sightings, 1 daily key", out, err)
	}
	durableBy := parseDurableBy(t, stderr)
	if out, stderr, err := cliRun(t, runDeviceCheckResult, "--state", p("C")); err != nil || out != "positive\n" || !strings.Contains(stderr, "not durable yet") {
		t.Errorf("C check-result after the upload: %q, %q, %v; want positive and a note that the upload is not durable yet", out, stderr, err)
	}

	checkExposure := func(dev, want string) {
		t.Helper()
		if out := mustRun(t, runDeviceCheckExposure, "--state", p(dev)); out != want+"\n" {
			t.Errorf("%s check-exposure printed %q, want %s", dev, out, want)
		}
	}
	checkExposure("A", "exposed")
	checkExposure("B", "not exposed")
	// The default policy's answers are coarse: exposed, on which day most
	// recently, by which rule; nothing per day.
	var resp map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, runDeviceCheckExposure, "--state", p("A"), "--json")), &resp); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"exposed": true, "last_exposure": ac.Format(api.DateLayout), "reciprocal": true, "one_sided": false, "order": 1.0}; !maps.Equal(resp, want) {
		t.Errorf("A's --json answer %v, want %v", resp, want)
	}

	// Once the backend's clock wrote the upload, C's check-result says so.
	waitUploaded(t, p("C"), durableBy)

	// Restart on the same data directory and address: the sealed upload
	// survives.
	if err := srv.Stop(); err != nil {
		t.Fatalf("conftraced exited with %v on SIGTERM, want a graceful shutdown\n%s", err, srv.Log)
	}
	serveArgs[1] = srv.Addr
	cmdtest.StartProcess(t, conftraced, serveArgs...)
	checkExposure("A", "exposed")
	checkExposure("B", "not exposed")

	// D has a test but no result: nothing authorizes an upload.
	mustRun(t, runDeviceMeet, "--state", p("D"), "--peer", p("B"), "--at", ac.Format(time.RFC3339), "--minutes", "10")
	mustRun(t, runDeviceRegisterTest, "--state", p("D"))
	if out := mustRun(t, runDeviceCheckResult, "--state", p("D")); out != "pending\n" {
		t.Errorf("D check-result printed %q, want pending", out)
	}
	if _, _, err := cliRun(t, runDeviceUpload, "--state", p("D")); !errors.Is(err, errNoAuthorization) {
		t.Errorf("D upload without authorization: %v, want %v", err, errNoAuthorization)
	}
	// C's authorization was single-use.
	_, _, err = cliRun(t, runDeviceUpload, "--state", p("C"))
	if !errors.Is(err, &api.Error{Code: api.CodeAlreadyUsed}) || !strings.Contains(err.Error(), "already_used") {
		t.Errorf("C's second upload: %v, want the backend's already_used refusal", err)
	}

	// Nothing C uploaded is in the clear on the backend's disk: neither the
	// RPIs it heard nor its daily key.
	cDev, err := device.Open(t.Context(), p("C"))
	if err != nil {
		t.Fatal(err)
	}
	cKeys := cDev.Keys(0, math.MaxUint32)
	var files int
	err = filepath.WalkDir(p("data"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, sg := range cLog.sightings {
			if bytes.Contains(b, sg.heard) {
				t.Errorf("%s holds an RPI that C uploaded in the clear", path)
			}
		}
		for _, k := range cKeys {
			if bytes.Contains(b, k.TEK[:]) {
				t.Errorf("%s holds C's daily key in the clear", path)
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walking the data directory: %v (%d files)", err, files)
	}
}

// setPolicyField sets one field of a policy file, as an operator edits it.
func setPolicyField(t *testing.T, path, field string, value any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc[field]; !ok {
		t.Fatalf("policy init wrote no %s", field)
	}
	doc[field] = value
	if b, err = json.MarshalIndent(doc, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// parseDurableBy returns the time device upload said the upload becomes
// durable by.
func parseDurableBy(t *testing.T, stderr string) time.Time {
	t.Helper()
	const prefix = "the upload becomes durable by "
	i := strings.Index(stderr, prefix)
	if i < 0 {
		t.Fatalf("device upload said %q, want when the upload becomes durable", stderr)
	}
	at, err := time.Parse(time.RFC3339, strings.TrimRight(strings.Fields(stderr[i+len(prefix):])[0], ";"))
	if err != nil {
		t.Fatalf("device upload said %q: %v", stderr, err)
	}
	return at
}

// waitUploaded runs check-result on the device in state until it says its
// upload is durable, which it must by durableBy (and a few seconds of
// slack for the backend's flush ticker).
func waitUploaded(t *testing.T, state string, durableBy time.Time) {
	t.Helper()
	deadline := durableBy.Add(5 * time.Second)
	for {
		// A second apart: the gateway refuses a request it answered.
		time.Sleep(time.Second)
		out, stderr, err := cliRun(t, runDeviceCheckResult, "--state", state)
		if err == nil && out == "positive\n" && strings.Contains(stderr, "already uploaded") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("check-result at %s, after the upload was to be durable by %s: %q, %q, %v", time.Now().UTC().Format(time.RFC3339), durableBy.Format(time.RFC3339), out, stderr, err)
		}
	}
}

// deviceLog is what device log prints: the validity of the daily keys and
// the sightings.
type deviceLog struct {
	keys      []logKey
	sightings []logSighting
}

type logKey struct {
	start, period uint64
	from, until   time.Time
}

type logSighting struct {
	interval           uint64
	heard              []byte
	minutes, attenuate int
}

// parseDeviceLog reads device log output, checking its format.
func parseDeviceLog(t *testing.T, out string) deviceLog {
	t.Helper()
	var l deviceLog
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Fields(line)
		switch {
		case line == "":
		case len(f) == 5 && f[0] == "key":
			var k logKey
			var errs [4]error
			k.start, errs[0] = strconv.ParseUint(f[1], 10, 32)
			k.period, errs[1] = strconv.ParseUint(f[2], 10, 8)
			k.from, errs[2] = time.Parse(time.RFC3339, f[3])
			k.until, errs[3] = time.Parse(time.RFC3339, f[4])
			if err := errors.Join(errs[:]...); err != nil || k.until.Sub(k.from) != time.Duration(k.period)*enid.IntervalLength {
				t.Fatalf("device log line %q: want key <start> <period> <from> <until> (%v)", line, err)
			}
			l.keys = append(l.keys, k)
		case len(f) == 5 && f[0] == "sighting":
			var sg logSighting
			var errs [4]error
			sg.interval, errs[0] = strconv.ParseUint(f[1], 10, 32)
			sg.heard, errs[1] = hex.DecodeString(f[2])
			sg.minutes, errs[2] = strconv.Atoi(f[3])
			sg.attenuate, errs[3] = strconv.Atoi(f[4])
			if err := errors.Join(errs[:]...); err != nil || len(sg.heard) != 16 || line != strings.ToLower(line) {
				t.Fatalf("device log line %q: want sighting <interval> <heard-rpi-hex> <minutes> <attenuation> in lowercase (%v)", line, err)
			}
			l.sightings = append(l.sightings, sg)
		default:
			t.Fatalf("device log line %q: neither a key nor a sighting", line)
		}
	}
	return l
}

// TestShellWalkthrough runs testdata/walkthrough.sh, the README's
// walk-through, which builds the binary and runs it as a user would.
func TestShellWalkthrough(t *testing.T) {
	if os.Getenv("CONFTRACE_SHELL_WALKTHROUGH") != "1" {
		t.Skip("set CONFTRACE_SHELL_WALKTHROUGH=1 to run testdata/walkthrough.sh (needs bash and go)")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash:", err)
	}
	cmd := exec.CommandContext(t.Context(), bash, filepath.Join("cmd", "conftrace", "testdata", "walkthrough.sh"))
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "walkthrough: all steps behaved as expected") {
		t.Errorf("walkthrough.sh did not finish:\n%s", out)
	}
}
