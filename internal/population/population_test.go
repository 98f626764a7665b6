package population

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/service"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/policy"
)

// run simulates on a fresh backend on loopback whose clock the simulation
// drives.
func run(t *testing.T, cfg Config) *Summary {
	t.Helper()
	ctx := context.Background()
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default()
	pol.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	tee, err := teesim.New(teesim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := DefaultStart
	svc, err := service.Open(ctx, service.Config{
		DataDir: filepath.Join(t.TempDir(), "data"), Policy: pol, TEE: tee,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: svc.Handler}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close(); svc.Close() })

	cfg.Server = "http://" + ln.Addr().String()
	cfg.Expectations = attest.Expectations{Measurements: [][]byte{tee.Measurement()}, AllowSimulated: true}
	cfg.Authority = lab
	cfg.SetClock = func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	cfg.Daily = svc.Enclave.Expire
	s, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
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
		{"no clock", Config{People: 10, Days: 3, Authority: lab}},
		{"no authority", Config{People: 10, Days: 3, SetClock: set}},
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
	w := &world{pol: pol, people: make([]person, 3)}
	for i := range w.people {
		w.people[i].tuples = make([][]rec, 5)
	}
	w.people[1] = person{uploaded: true, uploadDay: 3, uploadFirst: 1, testDay: 2, tuples: w.people[1].tuples}
	tuple := func(minutes uint16, att uint8) contactlog.Tuple {
		return contactlog.Tuple{Interval: enid.Interval(1), Duration: minutes, Attenuation: att}
	}
	add := func(day int, r rec) { w.people[0].tuples[day] = append(w.people[0].tuples[day], r) }
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
			for d := range w.people[0].tuples {
				w.people[0].tuples[d] = nil
			}
			for d, rs := range tc.recs {
				for _, r := range rs {
					add(d, r)
				}
			}
			got, cause := w.expected(0, 0, 4)
			if got != tc.want || (got && cause != 1) || (!got && cause != -1) {
				t.Fatalf("expected() = %v, cause %d; want %v", got, cause, tc.want)
			}
		})
	}
	// The check's window excludes what lies before it.
	w.people[0].tuples[2] = []rec{{tuple(10, 50), 1, 10}, {tuple(10, 50), 1, 10}}
	if got, _ := w.expected(0, 3, 4); got {
		t.Fatal("a day before the check's window counted")
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
		NotificationDelayDays: []int{0, 3}, BytesPerDeviceDay: 100, GAENBytesPerDeviceDay: 50, Definitions: definitions}
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
	s.ProtocolExact, s.FalseNotifications = false, 2
	page.Reset()
	WriteHTML(&page, s)
	if !strings.Contains(page.String(), "PROTOCOL MISMATCH") {
		t.Fatal("report of an inexact run does not say so")
	}
}
