package device

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/release"
)

func governanceFile(t *testing.T) string {
	t.Helper()
	k, err := release.GenerateKey("auditor")
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&release.Governance{Members: []release.Member{k.Member()}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A device pins its backend one way: measurements (with the policy), a
// governance set, or explicitly nothing.
func TestConfigPinned(t *testing.T) {
	m := strings.Repeat("ab", 32)
	pol := strings.Repeat("cd", 32)
	gov := governanceFile(t)
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"measurements and policy", Config{Measurements: []string{m}, PolicySHA256: pol}, ""},
		{"measurements alone", Config{Measurements: []string{m}}, ""},
		{"governance", Config{Governance: gov, ReleaseSequence: 3}, ""},
		{"any code", Config{AnyCode: true}, ""},
		{"nothing", Config{AllowSimulated: true}, "pins no code"},
		{"measurements and governance", Config{Measurements: []string{m}, Governance: gov}, "exactly one"},
		{"governance and any", Config{Governance: gov, AnyCode: true}, "exactly one"},
		{"a policy alone", Config{PolicySHA256: pol}, "goes with pinned measurements"},
		{"a policy with governance", Config{Governance: gov, PolicySHA256: pol}, "goes with pinned measurements"},
		{"bad measurement", Config{Measurements: []string{"zz"}}, "not valid hex"},
		{"uppercase policy hash", Config{Measurements: []string{m}, PolicySHA256: strings.ToUpper(pol)}, "lowercase hex"},
		{"bad governance", Config{Governance: "conftrace governance v1\n"}, "members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Pinned()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Pinned: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Pinned: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := Create(context.Background(), filepath.Join(t.TempDir(), "d"), Config{Measurements: []string{m}, AnyCode: true}); err == nil {
		t.Error("Create accepted a device pinned two ways")
	}
}

// The highest release sequence number accepted survives a restart of the
// phone, and never goes down.
func TestAcceptReleaseIsRemembered(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "phone")
	d, err := Create(ctx, dir, Config{Server: "http://127.0.0.1:1", Governance: governanceFile(t), ReleaseSequence: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{5, 3} {
		if err := d.AcceptRelease(release.Statement{Sequence: seq}); err != nil {
			t.Fatal(err)
		}
	}
	d, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Config().ReleaseSequence; got != 5 {
		t.Errorf("after a restart the device remembers release %d, want 5", got)
	}
}

// Pin pins the first backend a device that pins nothing sees, once.
func TestPinOnFirstUse(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "phone")
	d, err := Create(ctx, dir, Config{Server: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	m, pol := bytes.Repeat([]byte{1}, 32), sha256.Sum256([]byte("policy"))
	if err := d.Pin(m, pol[:]); err != nil {
		t.Fatal(err)
	}
	if err := d.Pin(bytes.Repeat([]byte{2}, 32), pol[:]); err == nil {
		t.Error("Pin replaced what the device pinned")
	}
	d, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := d.Config().Expectations()
	if err != nil || len(exp.Measurements) != 1 || !bytes.Equal(exp.Measurements[0], m) {
		t.Errorf("after a restart the device expects %v (%v), want the pinned measurement", exp.Measurements, err)
	}
	if p, err := d.Config().PolicyPin(); err != nil || !bytes.Equal(p, pol[:]) {
		t.Errorf("after a restart the device pins policy %x (%v), want %x", p, err, pol)
	}
	if err := d.Config().Pinned(); errors.Is(err, ErrNothingPinned) || err != nil {
		t.Errorf("Pinned after Pin: %v", err)
	}
}
