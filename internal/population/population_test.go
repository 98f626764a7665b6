package population

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// run simulates on a fresh backend on loopback whose clock the simulation
// drives, with testPolicy (and a GAEN export key if cfg has a GAEN share).
func run(t *testing.T, cfg Config) *Summary {
	t.Helper()
	return runPolicy(t, cfg, testPolicy())
}

// testPolicy is the default policy with a lighter journal: a flush every
// six hours instead of every hour, of as many rows. The rows the default
// writes a day, 768 of 4 KiB, mostly filler, take the pure-Go SQLite most
// of a run's time under the race detector, and a population of a few
// hundred uploads far less than the 128 rows a day that remain.
// TestProtocolExact runs the default.
func testPolicy() policy.Policy {
	pol := policy.Default()
	pol.StoreFlushSeconds = 6 * 60 * 60
	return pol
}

// runPolicy is run with the backend's policy pol.
func runPolicy(t *testing.T, cfg Config, pol policy.Policy) *Summary {
	t.Helper()
	var mu sync.Mutex
	now := DefaultStart()
	if cfg.GAENShare > 0 {
		gaenKey(t, &cfg, &pol)
	}
	b := startBackend(t, func() time.Time { mu.Lock(); defer mu.Unlock(); return now }, pol)
	configure(&cfg, b)
	cfg.SetClock = func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	cfg.Daily = b.Service.Enclave.Expire
	cfg.Flush = b.Service.Enclave.FlushDue
	s, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// gaenKey gives cfg a fresh GAEN export key and lists it in pol.
func gaenKey(t *testing.T, cfg *Config, pol *policy.Policy) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GAENExportKey = k
	pol.GAENExportKeys = append(pol.GAENExportKeys, policy.ExportKey{Name: "sim-gaen", PublicKey: der})
}

// startBackend starts a backend with policy pol on loopback with the clock
// now; nil means real time, as a deployed backend keeps.
func startBackend(t *testing.T, now func() time.Time, pol policy.Policy) *localbackend.Backend {
	t.Helper()
	// In-process no network timing can tell anything: answers leave at
	// once, so that the tests do not wait.
	pol.AnswerReleaseMillis = 0
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Now: now, Policy: &pol})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// configure points cfg at the backend b.
func configure(cfg *Config, b *localbackend.Backend) {
	cfg.Server = b.URL
	cfg.Expectations = b.Expectations()
	cfg.Authority = b.Authority
}

func TestProtocolExact(t *testing.T) {
	t.Parallel()
	s := runPolicy(t, Config{People: 150, Days: 15, Seed: 4}, policy.Default())
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// The run must exercise the protocol: uploads, notifications, and
	// days past the 14-day retention window.
	if s.Uploads == 0 || s.Notified == 0 || s.ShouldBeNotified != s.Notified {
		t.Fatalf("uploads %d, notified %d, should be notified %d: the run did not exercise matching", s.Uploads, s.Notified, s.ShouldBeNotified)
	}
	if s.Checks != s.AppUsers*s.Days || s.DeviceRequestsPerDay != 1 {
		t.Fatalf("%d exposure checks, %v requests a device and day; want one exchange per app user and day (%d)", s.Checks, s.DeviceRequestsPerDay, s.AppUsers*s.Days)
	}
	// Every upload but those of the last day, whose phones make no
	// further exchange, was heard durable at the phone's next exchange.
	if last := s.Daily[s.Days-1].Uploads; s.UploadsDurable != s.Uploads-last || s.UploadsDurable == 0 {
		t.Fatalf("%d uploads, %d of the last day, %d heard durable", s.Uploads, last, s.UploadsDurable)
	}
	if s.DetailedAnswers {
		t.Fatal("the default policy's answers are coarse, yet the summary says detailed")
	}
	if s.BytesPerDeviceDay <= 0 || s.GAENBytesPerDeviceDay <= 0 {
		t.Fatalf("bytes per device day %v, GAEN-style %v; want both positive", s.BytesPerDeviceDay, s.GAENBytesPerDeviceDay)
	}
	if s.EpiPrecision <= 0 || s.EpiPrecision > 1 || s.EpiRecall < 0 || s.EpiRecall > s.EpiRecallAppUsers {
		t.Fatalf("recall %v (app users %v), precision %v out of range", s.EpiRecall, s.EpiRecallAppUsers, s.EpiPrecision)
	}
	delays := 0
	for _, c := range s.NotificationDelayDays {
		delays += c
	}
	if delays == 0 || delays > s.Notified {
		t.Fatalf("%d notification delays for %d notified devices", delays, s.Notified)
	}
}

// TestUnflushedUploads runs against a backend that is never told to
// flush its journal: no upload becomes durable, and the phones' exchanges
// two days after their uploads make the run inexact.
func TestUnflushedUploads(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := DefaultStart()
	b := startBackend(t, func() time.Time { mu.Lock(); defer mu.Unlock(); return now }, testPolicy())
	cfg := Config{People: 120, Days: 10, Seed: 2}
	configure(&cfg, b)
	cfg.SetClock = func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	s, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Uploads == 0 || s.UploadsDurable != 0 || s.ExchangeMismatches == 0 || !errors.Is(s.Check(), ErrNotExact) {
		t.Fatalf("%d uploads, %d durable, %d exchange mismatches, check %v: want uploads never durable, and mismatches", s.Uploads, s.UploadsDurable, s.ExchangeMismatches, s.Check())
	}
	if s.MismatchedAnswers != 0 {
		t.Fatalf("%d exposure answers mismatched: uploads match when taken, durable or not", s.MismatchedAnswers)
	}
}

// TestDetailedAnswersNeedThePolicy checks that Run refuses to ask for
// detailed answers from a backend whose policy answers coarsely.
func TestDetailedAnswersNeedThePolicy(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil, testPolicy())
	cfg := Config{People: 10, Days: 2, DetailedAnswers: true}
	configure(&cfg, b)
	if _, err := Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "detailed answers") {
		t.Fatalf("detailed answers from a coarse backend: %v", err)
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	// GAEN-only phones too: their exports are signed with fresh keys and
	// randomness each run, which must not reach the counts.
	a := run(t, Config{People: 120, Days: 10, Seed: 2, GAENShare: 0.5})
	b := run(t, Config{People: 120, Days: 10, Seed: 2, GAENShare: 0.5})
	c := run(t, Config{People: 120, Days: 10, Seed: 6, GAENShare: 0.5})
	a.Timing, b.Timing, c.Timing = Timing{}, Timing{}, Timing{}
	if a.Uploads == 0 || a.Notified == 0 || a.GAENKeysImported == 0 {
		t.Fatalf("seed 2: %d uploads, %d notified, %d GAEN keys imported; pick a seed that exercises matching", a.Uploads, a.Notified, a.GAENKeysImported)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs with seed 2 differ:\n%+v\n%+v", a, b)
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 2 and 6 gave the same summary")
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	lab, _ := authority.GenerateKey("lab")
	set := func(time.Time) {}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"one person", Config{People: 1, Days: 3, Authority: lab, SetClock: set}},
		{"no days", Config{People: 10, Days: 0, Authority: lab, SetClock: set}},
		{"no authority", Config{People: 10, Days: 3, SetClock: set}},
		{"negative days live", Config{People: 10, Days: -1, Authority: lab}},
		{"start with a live backend", Config{People: 10, Days: 3, Authority: lab, Start: DefaultStart()}},
		{"GAEN share without a key", Config{People: 10, Days: 3, Authority: lab, SetClock: set, GAENShare: 0.1}},
		{"GAEN share over 1", Config{People: 10, Days: 3, Authority: lab, SetClock: set, GAENShare: 1.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tc.cfg); err == nil {
				t.Fatal("Run accepted a bad config")
			}
		})
	}
}

// TestExpected checks the oracle's wiring to the simulator's records on
// hand-made ones: only sightings mirrored by an uploaded window count,
// with the shorter duration and the checking phone's attenuation, summed
// per day, in the window at the check's time and once the upload was
// taken; the cause is the uploading case. (TestRulesMatchEnclave
// checks the rules themselves against the backend's.)
func TestExpected(t *testing.T) {
	pol := policy.Default() // 15 weighted minutes; 50% weight in (63, 73] dB
	clock := &simClock{start: DefaultStart(), pol: pol}
	actors := []actor{newActor(t, "0"), newActor(t, "1"), newActor(t, "2")}
	uploadAt := clock.at(3, 23*60+10)
	checkAt := clock.at(4, 23*60+30)
	// sighting is one interval in which phone 0 heard partner's for mine
	// minutes at att dB, and the partner heard phone 0 for theirs (0: not).
	type sighting struct {
		partner, day, minute int
		mine, theirs, att    uint8
	}
	setUp := func(ss []sighting) *oracle {
		people := make([]person, 3)
		for i := range people {
			people[i].phone = newPhone(0, 5)
		}
		for _, x := range ss {
			i := iv(x.day, x.minute)
			people[0].phone.log[x.day] = append(people[0].phone.log[x.day], actors[0].sight(actors[x.partner], i, i, x.mine, x.att))
			if x.theirs > 0 {
				p := &people[x.partner].phone
				p.log[x.day] = append(p.log[x.day], actors[x.partner].sight(actors[0], i, i, x.theirs, 50))
			}
		}
		people[1].phone.upload = upload{done: true, testDay: 2}
		o := newOracle(pol, clock, people)
		o.uploaded(1, 1, 3, actors[1].dailyKeys(1, 3), uploadAt)
		return o
	}
	for _, tc := range []struct {
		name string
		ss   []sighting
		want bool
	}{
		{"none", nil, false},
		{"15 close minutes", []sighting{{1, 2, 600, 10, 10, 50}, {1, 2, 610, 5, 9, 50}}, true},
		{"shorter mirror", []sighting{{1, 2, 600, 10, 10, 50}, {1, 2, 610, 10, 4, 50}}, false},
		{"not mirrored", []sighting{{1, 2, 600, 10, 10, 50}, {1, 2, 610, 10, 0, 50}}, false},
		{"half weight", []sighting{{1, 2, 600, 10, 10, 70}, {1, 2, 610, 10, 10, 50}}, true},
		{"half weight short", []sighting{{1, 2, 600, 10, 10, 70}, {1, 2, 610, 9, 10, 50}}, false},
		{"split over days", []sighting{{1, 2, 600, 10, 10, 50}, {1, 3, 600, 10, 10, 50}}, false},
		{"partner not uploaded", []sighting{{2, 2, 600, 10, 10, 50}, {2, 2, 610, 10, 10, 50}}, false},
		{"before upload window", []sighting{{1, 0, 600, 10, 10, 50}, {1, 0, 610, 10, 10, 50}}, false},
		{"after upload", []sighting{{1, 4, 600, 10, 10, 50}, {1, 4, 610, 10, 10, 50}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, cause := setUp(tc.ss).expected(0, 4, checkAt)
			if got.Exposed != tc.want || (got.Exposed && cause != 1) || (!got.Exposed && cause != -1) {
				t.Fatalf("expected() = %v, cause %d; want %v", got.Exposed, cause, tc.want)
			}
		})
	}
	o := setUp([]sighting{{1, 2, 600, 10, 10, 50}, {1, 2, 610, 10, 10, 50}})
	if got, _ := o.expected(0, 4, checkAt); !got.Exposed || len(got.Days) != pol.RetentionDays || got.Days[len(got.Days)-3].Minutes != 20 {
		t.Fatalf("a 20-minute mirrored exposure on day 2: %+v", got)
	}
	// The window at the check's time excludes the days before it: a
	// check 15 days after day 0 sees days 2 and later; 16 days, 3 and
	// later.
	if got, _ := o.expected(0, 4, clock.at(15, 12*60)); !got.Exposed {
		t.Fatal("a day inside the check's window did not count")
	}
	if got, _ := o.expected(0, 4, clock.at(16, 0)); got.Exposed {
		t.Fatal("a day before the check's window counted")
	}
	// An upload the backend took after the check does not count,
	// whatever simulated day it belongs to, nor one taken at the check's
	// time: the upload of the check's own exchange, taken after its check
	// was answered.
	if got, _ := o.expected(0, 4, uploadAt.Add(-time.Second)); got.Exposed {
		t.Fatal("an upload made after the check counted")
	}
	if got, _ := o.expected(0, 4, uploadAt); got.Exposed {
		t.Fatal("an upload taken at the check's time counted")
	}
	if got, _ := o.expected(0, 4, uploadAt.Add(time.Millisecond)); !got.Exposed {
		t.Fatal("an upload taken before the check did not count")
	}
}

func TestCheck(t *testing.T) {
	if err := (&Summary{ProtocolExact: true}).Check(); err != nil {
		t.Fatal(err)
	}
	if err := (&Summary{MissedNotifications: 1}).Check(); !errors.Is(err, ErrNotExact) {
		t.Fatalf("Check of an inexact run: %v, want ErrNotExact", err)
	}
	// An answer wrong in any figure, or a GAEN import counted wrong, is
	// inexact even when every verdict was right.
	for _, s := range []Summary{{MismatchedAnswers: 1}, {GAENImportMismatches: 1}} {
		s.derive(0, 0)
		if err := s.Check(); !errors.Is(err, ErrNotExact) {
			t.Fatalf("Check of %+v: %v, want ErrNotExact", s, err)
		}
	}
}

func TestReports(t *testing.T) {
	s := &Summary{People: 10, Days: 2, ProtocolExact: true, Daily: []Day{{Date: "2026-03-01", Infections: 2}, {Date: "2026-03-02", Tests: 1}},
		NotificationDelayDays: []int{0, 3}, BytesPerDeviceDay: 100, GAENBytesPerDeviceDay: 50, NationalCheckBytes: 26_791, Definitions: definitions(),
		Notified: 4, NotifiedReciprocal: 3, NotifiedOneSided: 2, GAENOnlyPeople: 2, GAENCases: 1, GAENExports: 1, GAENKeysImported: 6}
	var tbl, page strings.Builder
	if err := WriteTable(&tbl, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"protocol exact", "100 (GAEN-style: 50)", "3 reciprocal, 2 one-sided", "2 with a foreign GAEN app", "1 cases in 1 exports, 6 keys imported"} {
		if !strings.Contains(tbl.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, tbl.String())
		}
	}
	if err := WriteHTML(&page, s); err != nil {
		t.Fatal(err)
	}
	h := page.String()
	if strings.Count(h, "<svg") != 5 || strings.Count(h, "<svg") != strings.Count(h, "</svg>") || !strings.HasSuffix(h, "</html>\n") {
		t.Fatalf("report page does not hold five complete charts")
	}
	// The national chart marks where a phone of 2,000 sightings costs what
	// a GAEN phone downloads: 26,791 / (14 × 28) cases a day. This town's
	// 100 bytes cost less than one case's keys: no crossover in range.
	if !strings.Contains(h, "Bandwidth at national scale") || strings.Count(h, "crossover: ") != 2 || !strings.Contains(h, "crossover: 68 cases a day") {
		t.Fatalf("report page does not chart bandwidth at national scale with its crossover")
	}
	if !strings.Contains(h, "Notified devices by rule") || !strings.Contains(h, "<title>one-sided: 2</title>") {
		t.Fatalf("report page does not chart the notified devices by rule")
	}
	if strings.Contains(tbl.String(), "nonce") {
		t.Fatalf("table of an in-process run speaks of a nonce:\n%s", tbl.String())
	}
	live := *s
	live.Live, live.Nonce = true, "00112233"
	tbl.Reset()
	WriteTable(&tbl, &live)
	if !strings.Contains(tbl.String(), "run nonce 00112233 (counts not reproducible)") || strings.Contains(tbl.String(), "loopback") {
		t.Fatalf("table of a live run does not say so:\n%s", tbl.String())
	}
	s.ProtocolExact, s.FalseNotifications, s.MismatchedAnswers = false, 2, 3
	page.Reset()
	WriteHTML(&page, s)
	if !strings.Contains(page.String(), "PROTOCOL MISMATCH: 0 missed and 2 false answers, 3 answers differing") {
		t.Fatal("report of an inexact run does not say so")
	}
}

// TestLive drives a backend that keeps real time, as a running server
// does: the run ends yesterday inside its retention window and is exact,
// GPS included. Reusing its nonce replays its test codes, which shows that
// the nonce, not luck, keeps runs apart; a further run with a fresh nonce
// is fine. (cmd/conftrace's TestDemoServer runs two full runs on one
// backend.)
func TestLive(t *testing.T) {
	t.Parallel()
	pol := policy.Default()
	cfg := Config{People: 150, Days: 10, Seed: 8, GPS: true, GAENShare: 0.3}
	gaenKey(t, &cfg, &pol)
	b := startBackend(t, nil, pol)
	// Seed 8 uploads and notifies, over Bluetooth and GPS, whatever the
	// weekday of the start, which a live run takes from the calendar.
	configure(&cfg, b)
	ctx := context.Background()
	yesterday := func() string { return time.Now().UTC().AddDate(0, 0, -1).Format(api.DateLayout) }
	before := yesterday()
	s, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if s.Uploads == 0 || s.Notified == 0 || s.Notified != s.ShouldBeNotified || s.GAENKeysImported == 0 {
		t.Fatalf("uploads %d, notified %d, should be notified %d, GAEN keys imported %d: the live run did not exercise matching",
			s.Uploads, s.Notified, s.ShouldBeNotified, s.GAENKeysImported)
	}
	if g := s.GPSSummary; g.GPSUploads == 0 || g.GPSNotified == 0 || g.GPSNotified != g.GPSShouldBeNotified {
		t.Fatalf("GPS: %d uploads, notified %d, should be notified %d: the live run did not exercise matching", g.GPSUploads, g.GPSNotified, g.GPSShouldBeNotified)
	}
	if last := s.Daily[len(s.Daily)-1].Date; last != before && last != yesterday() {
		t.Fatalf("the live run's last day is %s, want yesterday (%s)", last, before)
	}
	if !s.Live || len(s.Nonce) != 32 || s.Definitions["run_nonce"] == "" || s.Definitions["live_backend"] == "" || s.Definitions["gps_checks"] == "" {
		t.Fatalf("live %v, nonce %q, definitions %v: the summary does not say the run was live", s.Live, s.Nonce, s.Definitions)
	}

	again := cfg
	again.GPS = false
	again.Nonce, _ = hex.DecodeString(s.Nonce)
	if _, err := Run(ctx, again); !errors.Is(err, &api.Error{Code: api.CodeReplayed}) {
		t.Fatalf("a live run reusing a nonce: %v, want the backend's replayed refusal", err)
	}

	cfg.GPS = false
	cfg.Days = 14
	if _, err := Run(ctx, cfg); !errors.Is(err, ErrTooManyDays) {
		t.Fatalf("14 days on a 14-day backend: %v, want ErrTooManyDays", err)
	}
	cfg.Days, cfg.People = 0, 20
	small, err := Run(ctx, cfg)
	if err != nil || small.Days != 13 || small.Nonce == s.Nonce || small.Check() != nil {
		t.Fatalf("Days 0 on a live 14-day backend: %v, %d days, nonce %s (first %s); want 13 days, a fresh nonce, exact", err, small.Days, small.Nonce, s.Nonce)
	}
}
