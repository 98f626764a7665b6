package device

import (
	"context"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/enid"
)

func newDevice(t *testing.T, name string) *Device {
	t.Helper()
	d, err := Create(context.Background(), filepath.Join(t.TempDir(), name), Config{Server: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMeetLogsMirrorTuples(t *testing.T) {
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
		t.Fatalf("logged %d tuples, want 3", n)
	}
	ta := a.Log().Tuples(0, 1<<32-1)
	tc := c.Log().Tuples(0, 1<<32-1)
	if len(ta) != 3 || len(tc) != 3 {
		t.Fatalf("a has %d tuples, c has %d; want 3 each", len(ta), len(tc))
	}
	wantMinutes := []uint16{5, 10, 5}
	first := enid.IntervalOf(start)
	for k := range ta {
		if ta[k].Mirror().Own != tc[k].Own || ta[k].Mirror().Heard != tc[k].Heard {
			t.Fatalf("tuple %d: c's record is not the mirror of a's", k)
		}
		if ta[k].Interval != first+enid.Interval(k) || ta[k].Duration != wantMinutes[k] {
			t.Fatalf("tuple %d: interval %d duration %d", k, ta[k].Interval, ta[k].Duration)
		}
		if ta[k].Attenuation != 50 || tc[k].Attenuation != 60 {
			t.Fatal("attenuations not recorded per direction")
		}
		rpi, _ := a.RPI(ta[k].Interval)
		if ta[k].Own != rpi {
			t.Fatal("own RPI is not the one the device broadcasts")
		}
	}
	if _, err := Meet(ctx, a, a, start, time.Minute, 1, 1); err == nil {
		t.Fatal("a device met itself")
	}
	if _, err := Meet(ctx, a, c, start, 0, 1, 1); err == nil {
		t.Fatal("zero-length encounter accepted")
	}
}

func TestStateSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	a, c := newDevice(t, "a"), newDevice(t, "c")
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	if _, err := Meet(ctx, a, c, start, 10*time.Minute, 50, 50); err != nil {
		t.Fatal(err)
	}
	code, err := a.RegisterTest(start)
	if err != nil {
		t.Fatal(err)
	}
	rpi, _ := a.RPI(enid.IntervalOf(start))
	a2, err := Open(ctx, a.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if r2, _ := a2.RPI(enid.IntervalOf(start)); r2 != rpi {
		t.Fatal("daily key changed across reopen")
	}
	if a2.Log().Len() != 1 {
		t.Fatalf("log has %d tuples after reopen, want 1", a2.Log().Len())
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
