package population

import (
	"context"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// run simulates on a fresh backend on loopback whose clock the simulation
// drives.
func run(t *testing.T, cfg Config) *Summary {
	t.Helper()
	var mu sync.Mutex
	now := DefaultStart()
	b := startBackend(t, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	configure(&cfg, b)
	cfg.SetClock = func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	cfg.Daily = b.Service.Enclave.Expire
	s, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startBackend starts a backend on loopback with the clock now; nil means
// real time, as a deployed backend keeps.
func startBackend(t *testing.T, now func() time.Time) *localbackend.Backend {
	t.Helper()
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Now: now})
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
	s := run(t, Config{People: 150, Days: 15, Seed: 4})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// The run must exercise the protocol: uploads, notifications, and
	// days past the 14-day retention window.
	if s.Uploads == 0 || s.Notified == 0 || s.ShouldBeNotified != s.Notified {
		t.Fatalf("uploads %d, notified %d, should be notified %d: the run did not exercise matching", s.Uploads, s.Notified, s.ShouldBeNotified)
	}
	if s.Checks != s.AppUsers*s.Days {
		t.Fatalf("%d exposure checks, want one per app user and day (%d)", s.Checks, s.AppUsers*s.Days)
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

func TestDeterministic(t *testing.T) {
	t.Parallel()
	a := run(t, Config{People: 120, Days: 10, Seed: 5})
	b := run(t, Config{People: 120, Days: 10, Seed: 5})
	c := run(t, Config{People: 120, Days: 10, Seed: 6})
	a.Timing, b.Timing, c.Timing = Timing{}, Timing{}, Timing{}
	if a.Uploads == 0 || a.Notified == 0 {
		t.Fatalf("seed 5: %d uploads, %d notified; pick a seed that exercises matching", a.Uploads, a.Notified)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs with seed 5 differ:\n%+v\n%+v", a, b)
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 5 and 6 gave the same summary")
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tc.cfg); err == nil {
				t.Fatal("Run accepted a bad config")
			}
		})
	}
}

// TestExpected checks the simulator's ground truth against the rules of
// the protocol on hand-made records: only mirrored tuples of an uploaded
// window count, with the shorter duration and the checking phone's
// attenuation, summed per day.
func TestExpected(t *testing.T) {
	pol := policy.Default() // 15 weighted minutes; 50% weight in (63, 73] dB
	clock := &simClock{start: DefaultStart(), pol: pol}
	people := make([]person, 3)
	for i := range people {
		people[i].phone = newPhone(0, 5)
	}
	o := newOracle(pol.Risk, clock, people)
	uploadAt := clock.at(3, 23*60+10)
	people[1].phone.upload = upload{done: true, at: uploadAt, day: 3, first: 1, testDay: 2}
	checkAt := clock.at(4, 23*60+30)
	tuple := func(minutes uint16, att uint8) contactlog.Tuple {
		return contactlog.Tuple{Interval: enid.Interval(1), Duration: minutes, Attenuation: att}
	}
	log := people[0].phone.log
	add := func(day int, r rec) { log[day] = append(log[day], r) }
	for _, tc := range []struct {
		name string
		recs map[int][]rec
		want bool
	}{
		{"none", nil, false},
		{"15 close minutes", map[int][]rec{2: {{tuple(10, 50), 1, 10}, {tuple(5, 50), 1, 9}}}, true},
		{"shorter mirror", map[int][]rec{2: {{tuple(10, 50), 1, 10}, {tuple(10, 50), 1, 4}}}, false},
		{"not mirrored", map[int][]rec{2: {{tuple(10, 50), 1, 10}, {tuple(10, 50), 1, 0}}}, false},
		{"half weight", map[int][]rec{2: {{tuple(10, 70), 1, 10}, {tuple(10, 50), 1, 10}}}, true},
		{"half weight short", map[int][]rec{2: {{tuple(10, 70), 1, 10}, {tuple(9, 50), 1, 10}}}, false},
		{"split over days", map[int][]rec{2: {{tuple(10, 50), 1, 10}}, 3: {{tuple(10, 50), 1, 10}}}, false},
		{"partner not uploaded", map[int][]rec{2: {{tuple(10, 50), 2, 10}, {tuple(10, 50), 2, 10}}}, false},
		{"before upload window", map[int][]rec{0: {{tuple(10, 50), 1, 10}, {tuple(10, 50), 1, 10}}}, false},
		{"after upload", map[int][]rec{4: {{tuple(10, 50), 1, 10}, {tuple(10, 50), 1, 10}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for d := range log {
				log[d] = nil
			}
			for d, rs := range tc.recs {
				for _, r := range rs {
					add(d, r)
				}
			}
			got, cause := o.expected(0, 4, checkAt)
			if got != tc.want || (got && cause != 1) || (!got && cause != -1) {
				t.Fatalf("expected() = %v, cause %d; want %v", got, cause, tc.want)
			}
		})
	}
	log[2] = []rec{{tuple(10, 50), 1, 10}, {tuple(10, 50), 1, 10}}
	if got, _ := o.expected(0, 4, checkAt); !got {
		t.Fatal("a 20-minute mirrored exposure did not count")
	}
	// The window at the check's time excludes the days before it: a
	// check 15 days after day 0 sees days 2 and later; 16 days, 3 and
	// later.
	if got, _ := o.expected(0, 4, clock.at(15, 12*60)); !got {
		t.Fatal("a day inside the check's window did not count")
	}
	if got, _ := o.expected(0, 4, clock.at(16, 0)); got {
		t.Fatal("a day before the check's window counted")
	}
	// An upload the backend acknowledged after the check does not count,
	// whatever simulated day it belongs to.
	if got, _ := o.expected(0, 4, uploadAt.Add(-time.Second)); got {
		t.Fatal("an upload made after the check counted")
	}
	if got, _ := o.expected(0, 4, uploadAt); !got {
		t.Fatal("an upload acknowledged at the check's time did not count")
	}
}

func TestCheck(t *testing.T) {
	if err := (&Summary{ProtocolExact: true}).Check(); err != nil {
		t.Fatal(err)
	}
	if err := (&Summary{MissedNotifications: 1}).Check(); !errors.Is(err, ErrNotExact) {
		t.Fatalf("Check of an inexact run: %v, want ErrNotExact", err)
	}
}

func TestReports(t *testing.T) {
	s := &Summary{People: 10, Days: 2, ProtocolExact: true, Daily: []Day{{Date: "2026-03-01", Infections: 2}, {Date: "2026-03-02", Tests: 1}},
		NotificationDelayDays: []int{0, 3}, BytesPerDeviceDay: 100, GAENBytesPerDeviceDay: 50, Definitions: definitions()}
	var tbl, page strings.Builder
	if err := WriteTable(&tbl, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tbl.String(), "protocol exact") || !strings.Contains(tbl.String(), "100 (GAEN-style: 50)") {
		t.Fatalf("table lacks exactness or bandwidth:\n%s", tbl.String())
	}
	if err := WriteHTML(&page, s); err != nil {
		t.Fatal(err)
	}
	h := page.String()
	if strings.Count(h, "<svg") != 3 || strings.Count(h, "<svg") != strings.Count(h, "</svg>") || !strings.HasSuffix(h, "</html>\n") {
		t.Fatalf("report page does not hold three complete charts")
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
	s.ProtocolExact, s.FalseNotifications = false, 2
	page.Reset()
	WriteHTML(&page, s)
	if !strings.Contains(page.String(), "PROTOCOL MISMATCH") {
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
	b := startBackend(t, nil)
	// Seed 8 uploads and notifies, over Bluetooth and GPS, whatever the
	// weekday of the start, which a live run takes from the calendar.
	cfg := Config{People: 150, Days: 10, Seed: 8, GPS: true}
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
	if s.Uploads == 0 || s.Notified == 0 || s.Notified != s.ShouldBeNotified {
		t.Fatalf("uploads %d, notified %d, should be notified %d: the live run did not exercise matching", s.Uploads, s.Notified, s.ShouldBeNotified)
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
