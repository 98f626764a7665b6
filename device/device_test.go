package device

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

func newDevice(t *testing.T, name string) *Device {
	t.Helper()
	d, err := Create(context.Background(), filepath.Join(t.TempDir(), name), Config{Server: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// all returns every sighting in d's log.
func all(d *Device) []contactlog.Sighting { return d.Log().Sightings(0, math.MaxUint32) }

func TestMeetRecordsMirrorSightings(t *testing.T) {
	ctx := context.Background()
	a, c := newDevice(t, "a"), newDevice(t, "c")
	// 20 minutes starting 5 minutes into an interval span three intervals:
	// 5 + 10 + 5 minutes.
	start := time.Date(2026, 11, 20, 9, 5, 0, 0, time.UTC)
	n, err := Meet(ctx, a, c, start, 20*time.Minute, 50, 60)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("recorded %d sightings, want 3", n)
	}
	sa, sc := all(a), all(c)
	if len(sa) != 3 || len(sc) != 3 {
		t.Fatalf("a has %d sightings, c has %d; want 3 each", len(sa), len(sc))
	}
	wantMinutes := []uint8{5, 10, 5}
	first := enid.IntervalOf(start)
	for k := range sa {
		i := first + enid.Interval(k)
		ra, _ := a.RPI(i)
		rc, _ := c.RPI(i)
		// Each side heard what the other broadcast in the same interval:
		// the mirror pair the backend matches once it derives the own
		// halves from the daily keys.
		if sa[k].Heard != rc || sc[k].Heard != ra {
			t.Fatalf("interval %d: a heard %x and c heard %x, want each other's RPIs %x and %x", k, sa[k].Heard, sc[k].Heard, rc, ra)
		}
		if ra == rc {
			t.Fatal("both devices broadcast the same RPI")
		}
		for _, s := range []contactlog.Sighting{sa[k], sc[k]} {
			if s.Interval != i || s.Minutes != wantMinutes[k] {
				t.Errorf("sighting %d: interval %d, %d minutes; want %d, %d", k, s.Interval, s.Minutes, i, wantMinutes[k])
			}
		}
		if sa[k].Attenuation != 50 || sc[k].Attenuation != 60 {
			t.Errorf("sighting %d: attenuations %d (a) and %d (c), want 50 and 60: not recorded per direction", k, sa[k].Attenuation, sc[k].Attenuation)
		}
	}
	// The own RPI is never recorded: nothing in a's log is one of a's own
	// identifiers.
	for _, s := range sa {
		if own, _ := a.RPI(s.Interval); s.Heard == own {
			t.Fatal("a recorded its own RPI")
		}
	}

	for _, tc := range []struct {
		name     string
		x, y     *Device
		duration time.Duration
	}{
		{"itself", a, a, time.Minute},
		{"itself reopened", a, reopen(t, a), time.Minute},
		{"zero duration", a, c, 0},
		{"negative duration", a, c, -time.Minute},
	} {
		if _, err := Meet(ctx, tc.x, tc.y, start, tc.duration, 1, 1); err == nil {
			t.Errorf("Meet (%s) succeeded", tc.name)
		}
	}
	if len(all(a)) != 3 || len(all(c)) != 3 {
		t.Errorf("refused encounters recorded sightings: a has %d, c has %d", len(all(a)), len(all(c)))
	}
}

// An encounter across midnight UTC is heard under two daily keys, and each
// device's report covers both.
func TestMeetAcrossMidnight(t *testing.T) {
	ctx := context.Background()
	a, c := newDevice(t, "a"), newDevice(t, "c")
	start := time.Date(2026, 11, 20, 23, 50, 0, 0, time.UTC)
	if n, err := Meet(ctx, a, c, start, 20*time.Minute, 50, 50); err != nil || n != 2 {
		t.Fatalf("Meet across midnight: %d, %v; want 2 sightings", n, err)
	}
	now := start.Add(time.Hour)
	for name, d := range map[string]*Device{"a": a, "c": c} {
		r := d.Report(policy.Default(), now)
		if len(r.Keys) != 2 || len(r.Sightings) != 2 {
			t.Fatalf("%s: report of %d keys and %d sightings, want 2 and 2", name, len(r.Keys), len(r.Sightings))
		}
		if r.Keys[0].Start == r.Keys[1].Start {
			t.Fatalf("%s: both days under one key", name)
		}
		if err := r.Check(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// reopen opens d's directory as a second Device.
func reopen(t *testing.T, d *Device) *Device {
	t.Helper()
	d2, err := Open(context.Background(), d.Dir())
	if err != nil {
		t.Fatal(err)
	}
	return d2
}

func TestStateSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	a, c := newDevice(t, "a"), newDevice(t, "c")
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	if _, err := Meet(ctx, a, c, start, 10*time.Minute, 50, 50); err != nil {
		t.Fatal(err)
	}
	if err := a.Hear(ctx, enid.RPI{7}, start.Add(-30*time.Hour), 3, 70); err != nil {
		t.Fatal(err)
	}
	code, err := a.RegisterTest(start)
	if err != nil {
		t.Fatal(err)
	}
	rpi, _ := a.RPI(enid.IntervalOf(start))
	now := start.Add(time.Hour)
	before := a.Report(policy.Default(), now)

	a2 := reopen(t, a)
	if r2, _ := a2.RPI(enid.IntervalOf(start)); r2 != rpi {
		t.Fatal("daily key changed across reopen")
	}
	if a2.Log().Len() != 2 {
		t.Fatalf("log has %d sightings after reopen, want 2", a2.Log().Len())
	}
	after := a2.Report(policy.Default(), now)
	if !slices.Equal(after.Keys, before.Keys) || !slices.Equal(after.Sightings, before.Sightings) {
		t.Fatalf("report after reopen %+v, want %+v", after, before)
	}
	if len(after.Keys) != 2 {
		t.Fatalf("%d daily keys after reopen, want the 2 of the days heard", len(after.Keys))
	}
	tst, err := a2.Test()
	if err != nil || tst.Code != code || tst.Result != api.Pending || api.TestCode(tst.Secret) != code {
		t.Fatalf("test state lost: %+v, %v", tst, err)
	}
	if _, err := Create(ctx, a.Dir(), Config{}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an existing device: %v", err)
	}
	if _, err := c.Test(); !errors.Is(err, ErrNoTest) {
		t.Fatalf("no test registered: %v", err)
	}
	if _, err := Open(ctx, t.TempDir()); err == nil {
		t.Fatal("opened an empty directory as a device")
	}
}

func TestHear(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, "d")
	at := time.Date(2026, 11, 20, 9, 17, 0, 0, time.UTC)
	for _, m := range []int{-1, 0, contactlog.MaxMinutes + 1, 1000} {
		if err := d.Hear(ctx, enid.RPI{1}, at, m, 50); err == nil {
			t.Errorf("Hear of %d minutes succeeded", m)
		}
	}
	if d.Log().Len() != 0 || len(d.Keys(0, math.MaxUint32)) != 0 {
		t.Fatalf("refused sightings left %d sightings and %d keys", d.Log().Len(), len(d.Keys(0, math.MaxUint32)))
	}

	// A sighting of a device outside the system (a GAEN phone): the
	// device has no key for the day yet, and Hear makes the one that
	// covers it.
	heard := enid.RPI{0xaa, 0xbb}
	if err := d.Hear(ctx, heard, at, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Hear(ctx, heard, at.Add(20*time.Minute), contactlog.MaxMinutes, 255); err != nil {
		t.Fatal(err)
	}
	i := enid.IntervalOf(at)
	want := []contactlog.Sighting{
		{Heard: heard, Interval: i, Minutes: 1, Attenuation: 0},
		{Heard: heard, Interval: i + 2, Minutes: contactlog.MaxMinutes, Attenuation: 255},
	}
	if got := all(d); !slices.Equal(got, want) {
		t.Fatalf("sightings %+v, want %+v", got, want)
	}
	keys := d.Keys(0, math.MaxUint32)
	if len(keys) != 1 {
		t.Fatalf("%d daily keys after two sightings of one day, want 1", len(keys))
	}
	k := keys[0]
	if k.Start != i.RollingStart() || k.Period != enid.RollingPeriod || !k.Contains(i) || !k.Contains(i+2) {
		t.Fatalf("key valid from %d for %d intervals, want the day of interval %d", k.Start, k.Period, i)
	}
	// It is the key the device broadcasts under, so the backend derives
	// the RPI the other phone heard from this device.
	ek, err := k.Key()
	if err != nil {
		t.Fatal(err)
	}
	if own, _ := d.RPI(i); ek.RPI(i) != own {
		t.Fatal("the reported key does not derive the RPI the device broadcasts")
	}
	r := d.Report(policy.Default(), at.Add(time.Hour))
	if err := r.Check(); err != nil {
		t.Fatalf("report after Hear: %v", err)
	}
	if len(r.Sightings) != 2 || len(r.Keys) != 1 {
		t.Fatalf("report of %d keys and %d sightings, want 1 and 2", len(r.Keys), len(r.Sightings))
	}
}

// Keys selects the daily keys valid at any time in [from, to).
func TestKeysBoundaries(t *testing.T) {
	d := newDevice(t, "d")
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var starts []enid.Interval
	for n := range 3 {
		k, err := d.Key(enid.IntervalOf(day.Add(time.Duration(n) * 24 * time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		starts = append(starts, k.Start())
	}
	s := starts[1] // the middle day
	for _, tc := range []struct {
		from, to enid.Interval
		want     []enid.Interval
	}{
		{0, math.MaxUint32, starts},
		{s, s + 1, starts[1:2]},
		{s - 1, s, starts[:1]},
		{s - 1, s + 1, starts[:2]},
		{s + enid.RollingPeriod - 1, s + enid.RollingPeriod, starts[1:2]},
		{s + enid.RollingPeriod - 1, s + enid.RollingPeriod + 1, starts[1:]},
		{s, s + enid.RollingPeriod, starts[1:2]},
		{s + 5, s, nil},
		{starts[2] + enid.RollingPeriod, math.MaxUint32, nil},
	} {
		var got []enid.Interval
		for _, k := range d.Keys(tc.from, tc.to) {
			got = append(got, k.Start)
			if k.Period != enid.RollingPeriod {
				t.Errorf("key from %d: period %d, want %d", k.Start, k.Period, enid.RollingPeriod)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Keys(%d, %d) start at %v, want %v", tc.from-s, tc.to-s, got, tc.want)
		}
	}
}

// A report holds the keys and sightings of the policy's window (whole UTC
// days back to WindowStart, up to the current interval) and nothing else;
// every sighting in it is covered by one of its keys, and it passes the
// checks the backend applies.
func TestReportWindow(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 20, 12, 3, 0, 0, time.UTC)
	for _, days := range []int{14, 2, 1} {
		t.Run(fmt.Sprint(days, " days"), func(t *testing.T) {
			d, other := newDevice(t, "d"), newDevice(t, "other")
			pol := policy.Default()
			pol.RetentionDays = days
			windowStart := pol.WindowStart(now)
			// Minutes tell the sightings apart.
			at := func(t time.Time, minutes uint8) contactlog.Sighting {
				return contactlog.Sighting{Heard: enid.RPI{minutes}, Interval: enid.IntervalOf(t), Minutes: minutes, Attenuation: 40}
			}
			in := []contactlog.Sighting{
				at(windowStart, 1),            // the window's first interval
				at(now.Add(-10*time.Hour), 2), // today
				at(now, 3),                    // the current interval
			}
			out := []contactlog.Sighting{
				at(windowStart.Add(-time.Second), 4), // the last interval before the window
				at(now.Add(enid.IntervalLength), 5),  // the next interval
				at(now.Add(36*time.Hour), 6),         // a day in the future
			}
			for _, s := range append(slices.Clone(out), in...) {
				if err := d.Hear(ctx, s.Heard, s.Interval.Time(), int(s.Minutes), s.Attenuation); err != nil {
					t.Fatal(err)
				}
			}
			// Meet records its sightings under the same keys.
			if _, err := Meet(ctx, d, other, windowStart.Add(time.Hour), 10*time.Minute, 45, 45); err != nil {
				t.Fatal(err)
			}
			met := all(d)
			met = slices.DeleteFunc(met, func(s contactlog.Sighting) bool { return s.Attenuation != 45 })
			in = append(in, met...)

			r := d.Report(pol, now)
			if err := r.Check(); err != nil {
				t.Fatalf("report: %v", err)
			}
			byInterval := func(a, b contactlog.Sighting) int {
				return cmp.Or(cmp.Compare(a.Interval, b.Interval), cmp.Compare(a.Minutes, b.Minutes))
			}
			got, want := slices.Clone(r.Sightings), slices.Clone(in)
			slices.SortFunc(got, byInterval)
			slices.SortFunc(want, byInterval)
			if !slices.Equal(got, want) {
				t.Errorf("report sightings %+v, want those of the window %+v", got, want)
			}
			// One key per day heard in the window: the window's first day
			// and today (one day when the window is one day long).
			wantKeys := min(days, 2)
			if len(r.Keys) != wantKeys {
				t.Errorf("%d keys, want %d", len(r.Keys), wantKeys)
			}
			first, last := enid.IntervalOf(windowStart), enid.IntervalOf(now)
			for _, k := range r.Keys {
				if k.End() <= first || k.Start > last {
					t.Errorf("a key valid from %s is outside the window", k.Start.Time())
				}
				ek, err := k.Key()
				if err != nil {
					t.Fatal(err)
				}
				if own, _ := d.RPI(k.Start); ek.RPI(k.Start) != own {
					t.Errorf("the key valid from %s is not the one the device broadcasts under", k.Start.Time())
				}
			}
			// What the device sends is what the backend accepts, within
			// the policy's limits.
			body, err := r.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			back, err := contactlog.ParseReport(body, contactlog.Limits{MaxKeys: pol.MaxKeys(), MaxSightings: pol.Limits.MaxCheckSightings})
			// Of each heard RPI the report carries its prefix.
			sent := slices.Clone(r.Sightings)
			for i := range sent {
				sent[i].Heard = contactlog.RPIPrefix(sent[i].Heard)
			}
			if err != nil || !slices.Equal(back.Keys, r.Keys) || !slices.Equal(back.Sightings, sent) {
				t.Errorf("the report does not survive its encoding: %v", err)
			}
		})
	}

	// A device that heard nothing sends an empty report.
	quiet := newDevice(t, "quiet")
	if r := quiet.Report(policy.Default(), now); len(r.Keys) != 0 || len(r.Sightings) != 0 || r.Check() != nil {
		t.Errorf("report of a new device: %+v", r)
	}
}

// Prune drops old sightings and keys together: every sighting left is
// still covered by a key.
func TestPruneKeepsSightingsCovered(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, "d")
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	for _, ago := range []time.Duration{20 * 24 * time.Hour, 14*24*time.Hour + time.Minute, 14*24*time.Hour - time.Minute, 3 * time.Hour} {
		if err := d.Hear(ctx, enid.RPI{1}, now.Add(-ago), 5, 50); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Prune(ctx, now); err != nil {
		t.Fatal(err)
	}
	for name, dd := range map[string]*Device{"pruned": d, "reopened": reopen(t, d)} {
		r := contactlog.Report{Keys: dd.Keys(0, math.MaxUint32), Sightings: all(dd)}
		if len(r.Sightings) != 2 {
			t.Errorf("%s: %d sightings left, want the 2 within 14 days", name, len(r.Sightings))
		}
		if err := r.Check(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if first := enid.IntervalOf(now.Add(-14 * 24 * time.Hour)).RollingStart(); len(r.Keys) == 0 || r.Keys[0].Start != first {
			t.Errorf("%s: keys %+v, want the oldest to start on %s", name, r.Keys, first.Time())
		}
	}
}

func TestPruneForgetsOldKeys(t *testing.T) {
	ctx := context.Background()
	a := newDevice(t, "a")
	old := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	now := old.Add(20 * 24 * time.Hour)
	r1, _ := a.RPI(enid.IntervalOf(old))
	if err := a.Prune(ctx, now); err != nil {
		t.Fatal(err)
	}
	a2, err := Open(ctx, a.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if r2, _ := a2.RPI(enid.IntervalOf(old)); r2 == r1 {
		t.Fatal("a daily key older than the retention window survived Prune")
	}
}

func TestRecordPollKeepsTheAuthorization(t *testing.T) {
	d := newDevice(t, "d")
	if _, err := d.RecordPoll(api.PollResultResponse{Result: api.Positive}); !errors.Is(err, ErrNoTest) {
		t.Fatalf("poll without a test: %v", err)
	}
	d.RegisterTest(time.Now())
	auth := []byte("token")
	if _, err := d.RecordPoll(api.PollResultResponse{Result: api.Positive, UploadAuthorization: auth, ExpiresAt: 1e9}); err != nil {
		t.Fatal(err)
	}
	// Once used, the backend no longer returns the authorization.
	tst, err := d.RecordPoll(api.PollResultResponse{Result: api.Positive, Uploaded: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(tst.UploadAuthorization) != "token" || !tst.Uploaded || tst.ExpiresAt.Unix() != 1e9 {
		t.Fatalf("state after the upload: %+v", tst)
	}
	if again, _ := Open(context.Background(), d.Dir()); again != nil {
		if got, _ := again.Test(); !got.Uploaded {
			t.Fatal("the recorded poll was not saved")
		}
	}
}

// An authorization that expired unused is replaced by the one the next
// poll hands out; an upload that is not durable yet hands out none, and
// the saved one stays.
func TestRecordPollTakesAReissuedAuthorization(t *testing.T) {
	d := newDevice(t, "d")
	d.RegisterTest(time.Now())
	if _, err := d.RecordPoll(api.PollResultResponse{Result: api.Positive, UploadAuthorization: []byte("first"), ExpiresAt: 1e9}); err != nil {
		t.Fatal(err)
	}
	tst, err := d.RecordPoll(api.PollResultResponse{Result: api.Positive, UploadAuthorization: []byte("second"), ExpiresAt: 2e9})
	if err != nil {
		t.Fatal(err)
	}
	if string(tst.UploadAuthorization) != "second" || tst.ExpiresAt.Unix() != 2e9 || tst.Uploaded {
		t.Fatalf("state after a reissued authorization: %+v", tst)
	}
	if tst, err = d.RecordPoll(api.PollResultResponse{Result: api.Positive, UploadPending: true}); err != nil {
		t.Fatal(err)
	}
	if string(tst.UploadAuthorization) != "second" || tst.ExpiresAt.Unix() != 2e9 || tst.Uploaded {
		t.Fatalf("state while the upload is pending: %+v; want the authorization kept, not uploaded yet", tst)
	}
	again, err := Open(context.Background(), d.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := again.Test(); string(got.UploadAuthorization) != "second" {
		t.Fatalf("saved state %+v, want the reissued authorization", got)
	}
}

// A device verifies its backend with what it was set up with: the saved
// measurements, and simulation only if it was allowed; a corrupted
// measurement in the state is an error, not "accept any code".
func TestConfigExpectations(t *testing.T) {
	m := strings.Repeat("ab", 32)
	exp, err := Config{Measurements: []string{m}, AllowSimulated: true}.Expectations()
	if err != nil {
		t.Fatal(err)
	}
	if len(exp.Measurements) != 1 || hex.EncodeToString(exp.Measurements[0]) != m || !exp.AllowSimulated {
		t.Errorf("Expectations() = %+v, want measurement %s and simulation allowed", exp, m)
	}
	if exp, _ := (Config{}).Expectations(); exp.AllowSimulated || len(exp.Measurements) != 0 {
		t.Errorf("zero Config gives %+v, want no simulation and no measurements", exp)
	}
	if _, err := (Config{Measurements: []string{m[:62]}}).Expectations(); err == nil {
		t.Error("a truncated saved measurement was accepted")
	}
}

// A sighting longer than the policy allows is sent capped, not refused
// whole by the backend for two weeks.
func TestReportCapsMinutes(t *testing.T) {
	d, err := Create(t.Context(), t.TempDir(), Config{Server: "http://unused.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	if err := d.Hear(t.Context(), enid.RPI{1}, now.Add(-time.Hour), 45, 50); err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	r := d.Report(p, now)
	if len(r.Sightings) != 1 || int(r.Sightings[0].Minutes) != p.Limits.MaxSightingMinutes {
		t.Fatalf("report %+v: want one sighting capped at %d minutes", r.Sightings, p.Limits.MaxSightingMinutes)
	}
	if s := d.Log().Sightings(0, enid.IntervalOf(now)+1); s[0].Minutes != 45 {
		t.Errorf("the log holds %d minutes, want the 45 heard", s[0].Minutes)
	}
}
