package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

func TestDeviceMeetAndLog(t *testing.T) {
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a"), filepath.Join(dir, "c")
	for _, d := range []string{a, c} {
		if _, err := device.Create(t.Context(), d, device.Config{Server: "http://unused.invalid"}); err != nil {
			t.Fatal(err)
		}
	}
	// 25 minutes from 10:05 overlap three intervals: 5, 10 and 10 minutes.
	at := time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC)
	out := mustRun(t, runDeviceMeet, "--state", a, "--peer", c, "--at", at.Format(time.RFC3339), "--minutes", "25",
		"--attenuation", "40", "--peer-attenuation", "70")
	if out != "recorded 3 sightings on each device\n" {
		t.Errorf("meet printed %q", out)
	}
	la := parseDeviceLog(t, mustRun(t, runDeviceLog, "--state", a))
	lc := parseDeviceLog(t, mustRun(t, runDeviceLog, "--state", c))
	if len(la.sightings) != 3 || len(lc.sightings) != 3 {
		t.Fatalf("recorded %d and %d sightings, want 3 each", len(la.sightings), len(lc.sightings))
	}
	// Each device has the daily key of the day it broadcast, valid all day.
	day := enid.IntervalOf(at).RollingStart()
	for name, l := range map[string]deviceLog{"a": la, "c": lc} {
		if len(l.keys) != 1 || l.keys[0].start != uint64(day) || l.keys[0].period != 144 || !l.keys[0].from.Equal(day.Time()) {
			t.Errorf("%s's daily keys %+v, want one valid all of %s", name, l.keys, day.Time().Format(time.DateOnly))
		}
	}
	da, err := device.Open(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := device.Open(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	first := enid.IntervalOf(at)
	for i, minutes := range []int{5, 10, 10} {
		sa, sc := la.sightings[i], lc.sightings[i]
		iv := first + enid.Interval(i)
		if sa.interval != uint64(iv) || sc.interval != sa.interval {
			t.Errorf("sighting %d: intervals %d and %d, want %d", i, sa.interval, sc.interval, iv)
		}
		if sa.minutes != minutes || sc.minutes != minutes {
			t.Errorf("sighting %d: %d and %d minutes, want %d", i, sa.minutes, sc.minutes, minutes)
		}
		if sa.attenuate != 40 || sc.attenuate != 70 {
			t.Errorf("sighting %d: attenuations %d (a) and %d (c), want 40 and 70", i, sa.attenuate, sc.attenuate)
		}
		// Each heard what the other broadcast.
		ra, _ := da.RPI(iv)
		rc, _ := dc.RPI(iv)
		if !bytes.Equal(sa.heard, rc[:]) || !bytes.Equal(sc.heard, ra[:]) {
			t.Errorf("sighting %d: a heard %x and c heard %x; they broadcast %x and %x", i, sa.heard, sc.heard, ra, rc)
		}
	}
	// Without --peer-attenuation both directions use --attenuation.
	mustRun(t, runDeviceMeet, "--state", c, "--peer", a, "--at", at.Add(time.Hour).Format(time.RFC3339), "--minutes", "10")
	la = parseDeviceLog(t, mustRun(t, runDeviceLog, "--state", a))
	lc = parseDeviceLog(t, mustRun(t, runDeviceLog, "--state", c))
	if la.sightings[3].attenuate != 50 || lc.sightings[3].attenuate != 50 {
		t.Errorf("default attenuations %d and %d, want 50 both ways", la.sightings[3].attenuate, lc.sightings[3].attenuate)
	}

	// A phone of another GAEN app, heard once: a sighting, under a's key.
	gaenRPI := strings.Repeat("ab", 16)
	heardAt := at.Add(48 * time.Hour)
	if out := mustRun(t, runDeviceHear, "--state", a, "--rpi", gaenRPI, "--at", heardAt.Format(time.RFC3339), "--minutes", "7", "--attenuation", "61"); out != "recorded 1 sighting\n" {
		t.Errorf("hear printed %q", out)
	}
	la = parseDeviceLog(t, mustRun(t, runDeviceLog, "--state", a))
	last := la.sightings[len(la.sightings)-1]
	if hex.EncodeToString(last.heard) != gaenRPI || last.interval != uint64(enid.IntervalOf(heardAt)) || last.minutes != 7 || last.attenuate != 61 {
		t.Errorf("the heard sighting is %+v", last)
	}
	if len(la.keys) != 2 || la.keys[1].start != uint64(enid.IntervalOf(heardAt).RollingStart()) {
		t.Errorf("after hear, a's keys %+v: want a key covering the sighting", la.keys)
	}

	// An empty log prints nothing.
	empty := filepath.Join(dir, "e")
	device.Create(t.Context(), empty, device.Config{Server: "http://unused.invalid"})
	if out := mustRun(t, runDeviceLog, "--state", empty); out != "" {
		t.Errorf("log of a new device printed %q", out)
	}
}

func TestDeviceErrors(t *testing.T) {
	b := newTestBackend(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runDeviceInit, "--state", p("a"), "--server", b.url, "--allow-simulated")
	mustRun(t, runDeviceInit, "--state", p("c"), "--server", b.url, "--allow-simulated")
	os.Mkdir(p("empty"), 0o700)
	at := "2026-03-01T10:00:00Z"
	meet := func(extra ...string) []string {
		return append([]string{"--state", p("a"), "--peer", p("c"), "--at", at, "--minutes", "10"}, extra...)
	}

	tests := []struct {
		name  string
		fn    cmdFunc
		args  []string
		want  string
		usage bool
	}{
		{"init no state", runDeviceInit, []string{"--server", b.url}, "--state is required", true},
		{"init no server", runDeviceInit, []string{"--state", p("x")}, "--server is required", true},
		{"init bad measurement", runDeviceInit, []string{"--state", p("x"), "--server", b.url, "--measurement", "0g"}, "not valid hex", true},
		{"init long measurement", runDeviceInit, []string{"--state", p("x"), "--server", b.url, "--measurement", strings.Repeat("00", 33)}, "is 33 bytes", true},
		{"init simulated not allowed", runDeviceInit, []string{"--state", p("x"), "--server", b.url}, "simulated TEE evidence refused", false},
		{"init server down", runDeviceInit, []string{"--state", p("x"), "--server", "http://127.0.0.1:1", "--allow-simulated"}, "fetching attestation", false},
		{"init existing device", runDeviceInit, []string{"--state", p("a"), "--server", b.url, "--allow-simulated"}, "already holds a device", false},
		{"meet no state", runDeviceMeet, []string{"--peer", p("c"), "--at", at, "--minutes", "10"}, "--state is required", true},
		{"meet no peer", runDeviceMeet, []string{"--state", p("a"), "--at", at, "--minutes", "10"}, "--peer is required", true},
		{"meet no at", runDeviceMeet, []string{"--state", p("a"), "--peer", p("c"), "--minutes", "10"}, "--at is required", true},
		{"meet no minutes", runDeviceMeet, []string{"--state", p("a"), "--peer", p("c"), "--at", at}, "--minutes must be in 1..1440, got 0", true},
		{"meet too long", runDeviceMeet, meet("--minutes", "1441"), "--minutes must be in 1..1440, got 1441", true},
		{"meet bad time", runDeviceMeet, meet("--at", "2026-03-01 10:00"), "want an RFC 3339 time", true},
		{"meet no zone", runDeviceMeet, meet("--at", "2026-03-01T10:00:00"), "want an RFC 3339 time", true},
		{"meet loud", runDeviceMeet, meet("--attenuation", "256"), "--attenuation must be in 0..255, got 256", true},
		{"meet negative", runDeviceMeet, meet("--attenuation", "-1"), "--attenuation must be in 0..255", true},
		{"meet peer loud", runDeviceMeet, meet("--peer-attenuation", "300"), "--peer-attenuation must be in 0..255", true},
		{"meet peer not a number", runDeviceMeet, meet("--peer-attenuation", "12x"), "invalid value", true},
		{"meet peer negative", runDeviceMeet, meet("--peer-attenuation", "-1"), "--peer-attenuation must be in 0..255", true},
		{"meet itself", runDeviceMeet, meet("--peer", p("a")), "cannot meet itself", false},
		{"meet no such peer", runDeviceMeet, meet("--peer", p("none")), "run device init first", false},
		{"log no state", runDeviceLog, nil, "--state is required", true},
		{"log not a device", runDeviceLog, []string{"--state", p("empty")}, "no device in", false},
		{"register no state", runDeviceRegisterTest, nil, "--state is required", true},
		{"register not a device", runDeviceRegisterTest, []string{"--state", p("none")}, "no device in", false},
		{"check-result no state", runDeviceCheckResult, nil, "--state is required", true},
		{"check-result no test", runDeviceCheckResult, []string{"--state", p("a")}, "no test registered", false},
		{"upload no state", runDeviceUpload, nil, "--state is required", true},
		{"upload no test", runDeviceUpload, []string{"--state", p("a")}, errNoAuthorization.Error(), false},
		{"check-exposure no state", runDeviceCheckExposure, nil, "--state is required", true},
		{"check-exposure not a device", runDeviceCheckExposure, []string{"--state", p("empty")}, "no device in", false},
		{"stray argument", runDeviceLog, []string{"--state", p("a"), "extra"}, "unexpected argument", true},
		{"hear no state", runDeviceHear, []string{"--rpi", strings.Repeat("00", 16), "--at", at}, "--state is required", true},
		{"hear no rpi", runDeviceHear, []string{"--state", p("a"), "--at", at}, "--rpi is required", true},
		{"hear short rpi", runDeviceHear, []string{"--state", p("a"), "--rpi", "abcd", "--at", at}, "want 16 bytes of hex", true},
		{"hear no at", runDeviceHear, []string{"--state", p("a"), "--rpi", strings.Repeat("00", 16)}, "--at is required", true},
		{"hear long", runDeviceHear, []string{"--state", p("a"), "--rpi", strings.Repeat("00", 16), "--at", at, "--minutes", "61"}, "--minutes must be in 1..60", true},
		{"hear loud", runDeviceHear, []string{"--state", p("a"), "--rpi", strings.Repeat("00", 16), "--at", at, "--attenuation", "256"}, "--attenuation must be in 0..255", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := cliRun(t, tt.fn, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
			if out != "" {
				t.Errorf("printed %q on stdout despite the error", out)
			}
		})
	}
	if _, err := os.Stat(p("x")); err == nil {
		t.Error("a failed device init left a device state behind")
	}
}

// The device commands verify the backend with the expectations saved at
// init, every time.
func TestDeviceUsesSavedExpectations(t *testing.T) {
	b := newTestBackend(t)
	a := filepath.Join(t.TempDir(), "a")
	mustRun(t, runDeviceInit, "--state", a, "--server", b.url, "--allow-simulated")
	cfgFile := filepath.Join(a, "config.json")
	orig, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	setConfig := func(cfg device.Config) {
		t.Helper()
		js, _ := json.Marshal(cfg)
		if err := os.WriteFile(cfgFile, js, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setConfig(device.Config{Server: b.url, AllowSimulated: true, Measurements: []string{strings.Repeat("11", 32)}})
	_, _, err = cliRun(t, runDeviceCheckExposure, "--state", a)
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Errorf("check-exposure with another saved measurement: %v, want a measurement mismatch", err)
	}
	setConfig(device.Config{Server: b.url})
	if _, _, err := cliRun(t, runDeviceCheckExposure, "--state", a); !errors.Is(err, attest.ErrSimulated) {
		t.Errorf("check-exposure without allow_simulated: %v, want attest.ErrSimulated", err)
	}
	setConfig(device.Config{Server: b.url, AllowSimulated: true, Measurements: []string{"zz"}})
	if _, _, err := cliRun(t, runDeviceCheckExposure, "--state", a); err == nil || !strings.Contains(err.Error(), "not valid hex") {
		t.Errorf("check-exposure with a corrupt saved measurement: %v", err)
	}
	os.WriteFile(cfgFile, orig, 0o600)
	if out := mustRun(t, runDeviceCheckExposure, "--state", a); out != "not exposed\n" {
		t.Errorf("check-exposure printed %q, want not exposed", out)
	}
}

func TestDeviceNegativeAndEmpty(t *testing.T) {
	b := newTestBackend(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	mustRun(t, runDeviceInit, "--state", a, "--server", b.url, "--allow-simulated")

	// A negative result authorizes nothing.
	code := strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", a))
	mustRun(t, runAuthorityResult, "--server", b.url, "--key", b.key, "--code", code, "--negative", "--allow-simulated")
	if out := mustRun(t, runDeviceCheckResult, "--state", a); out != "negative\n" {
		t.Errorf("check-result printed %q, want negative", out)
	}
	if _, _, err := cliRun(t, runDeviceUpload, "--state", a); !errors.Is(err, errNoAuthorization) {
		t.Errorf("upload after a negative result: %v, want %v", err, errNoAuthorization)
	}

	// A positive device with no contacts keeps its authorization.
	code = strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", a))
	mustRun(t, runAuthorityResult, "--server", b.url, "--key", b.key, "--code", code, "--positive", "--allow-simulated")
	if out := mustRun(t, runDeviceCheckResult, "--state", a); out != "positive\n" {
		t.Errorf("check-result printed %q, want positive", out)
	}
	_, _, err := cliRun(t, runDeviceUpload, "--state", a)
	checkErr(t, err, "nothing to upload", false)
	d, err := device.Open(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	tst, err := d.Test()
	if err != nil || tst.Result != api.Positive || len(tst.UploadAuthorization) == 0 || tst.Uploaded || tst.ExpiresAt.Before(time.Now()) {
		t.Errorf("saved test %+v (%v): want positive with an unused, unexpired authorization", tst, err)
	}

	// Contacts older than the retention window are not sent: the backend
	// would refuse the whole upload.
	c := filepath.Join(dir, "c")
	mustRun(t, runDeviceInit, "--state", c, "--server", b.url, "--allow-simulated")
	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -14).Add(23 * time.Hour)
	mustRun(t, runDeviceMeet, "--state", a, "--peer", c, "--at", old.Format(time.RFC3339), "--minutes", "10")
	_, _, err = cliRun(t, runDeviceUpload, "--state", a)
	checkErr(t, err, "nothing to upload: the device broadcast nothing in the last 14 days", false)
	recent := time.Now().Truncate(10 * time.Minute).Add(-time.Hour) // one interval: one tuple
	mustRun(t, runDeviceMeet, "--state", a, "--peer", c, "--at", recent.Format(time.RFC3339), "--minutes", "5")
	out, stderr, err := cliRun(t, runDeviceUpload, "--state", a)
	if err != nil || out != "accepted 1 sighting, 1 daily key\n" {
		t.Errorf("upload printed %q, %v; want accepted 1 sighting, 1 daily key (the recent contact only)", out, err)
	}
	// Taken, written later on the backend's clock.
	if !strings.Contains(stderr, "the upload becomes durable by ") {
		t.Errorf("upload said %q, want when the upload becomes durable", stderr)
	}
	if out, stderr, err := cliRun(t, runDeviceCheckResult, "--state", a); err != nil || out != "positive\n" || !strings.Contains(stderr, "not durable yet") {
		t.Errorf("check-result after the upload: %q, %q, %v; want positive, not durable yet", out, stderr, err)
	}

	// check-exposure --json prints the backend's whole answer: under the
	// default policy, only whether, when and how.
	var resp map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, runDeviceCheckExposure, "--state", c, "--json")), &resp); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"exposed": false, "last_exposure": "", "reciprocal": false, "one_sided": false, "order": 0.0}; !reflect.DeepEqual(resp, want) {
		t.Errorf("--json answer %v, want %v: 5 minutes do not expose, and coarse answers say nothing more", resp, want)
	}
}

// check-exposure --json prints the attested policy's answer: coarse by
// default, and per day under a policy of detailed answers.
func TestDeviceCheckExposureJSON(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		t.Run(answers, func(t *testing.T) {
			pol := policy.Default()
			pol.Answers = answers
			b := newTestBackendWithPolicy(t, &pol)
			dir := t.TempDir()
			a, c := filepath.Join(dir, "a"), filepath.Join(dir, "c")
			for _, d := range []string{a, c} {
				mustRun(t, runDeviceInit, "--state", d, "--server", b.url, "--allow-simulated")
			}
			// Yesterday at noon: one day, whenever the test runs.
			met := time.Now().UTC().Truncate(24 * time.Hour).Add(-12 * time.Hour)
			mustRun(t, runDeviceMeet, "--state", a, "--peer", c, "--at", met.Format(time.RFC3339), "--minutes", "30")
			code := strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", a))
			mustRun(t, runAuthorityResult, "--server", b.url, "--key", b.key, "--code", code, "--positive", "--allow-simulated")
			mustRun(t, runDeviceCheckResult, "--state", a)
			mustRun(t, runDeviceUpload, "--state", a)
			var resp map[string]any
			if err := json.Unmarshal([]byte(mustRun(t, runDeviceCheckExposure, "--state", c, "--json")), &resp); err != nil {
				t.Fatal(err)
			}
			date := met.Format(api.DateLayout)
			if resp["exposed"] != true || resp["last_exposure"] != date || resp["reciprocal"] != true || resp["one_sided"] != false || resp["order"] != 1.0 {
				t.Errorf("--json answer %v: want exposed reciprocally on %s, at order 1", resp, date)
			}
			days, _ := resp["days"].([]any)
			if answers == policy.AnswersCoarse {
				if _, ok := resp["days"]; ok || len(resp) != 5 {
					t.Errorf("coarse --json answer %v: want nothing but exposed, last_exposure, reciprocal, one_sided and order", resp)
				}
				return
			}
			if len(days) != 14 {
				t.Fatalf("detailed --json answer %v: want 14 days", resp)
			}
			var total float64
			for _, d := range days {
				day, _ := d.(map[string]any)
				m, _ := day["minutes"].(float64)
				total += m
				if m != 0 && day["date"] != date {
					t.Errorf("--json: %v minutes on %v, want them on %s", m, day["date"], date)
				}
			}
			if total != 30 {
				t.Errorf("--json: %v minutes in all, want 30", total)
			}
		})
	}
}

func TestDeviceCommandsHelp(t *testing.T) {
	cmds := map[string]cmdFunc{
		"device init": runDeviceInit, "device meet": runDeviceMeet, "device log": runDeviceLog,
		"device register-test": runDeviceRegisterTest, "device check-result": runDeviceCheckResult,
		"device upload": runDeviceUpload, "device check-exposure": runDeviceCheckExposure, "device hear": runDeviceHear,
		"gaen import":      runGAENImport,
		"authority keygen": runAuthorityKeygen, "authority result": runAuthorityResult,
		"policy init": runPolicyInit, "verify": runVerify,
	}
	for name, fn := range cmds {
		out, stderr, err := cliRun(t, fn, "--help")
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help returned %v, want flag.ErrHelp", name, err)
		}
		if out != "" || !strings.Contains(stderr, "usage: conftrace "+name+" ") {
			t.Errorf("%s --help: stdout %q, stderr %q; want the usage on stderr", name, out, stderr)
		}
	}
}
