package snp

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	attestsnp "github.com/conftrace/conftrace/attest/snp"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-sev-guest/abi"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
)

var testTime = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

// fakeSNP is a guest on go-sev-guest's test-only AMD: its configfs-tsm
// returns reports signed by the fake VCEK, with the fake certificate table.
type fakeSNP struct {
	signer *sevtest.AmdSigner
	debug  bool
	floor  string
	// tamper, if set, changes the report after signing.
	tamper func(report []byte) []byte
}

func newFakeSNP(t *testing.T, debug bool) *fakeSNP {
	t.Helper()
	s, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", testTime.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeSNP{signer: s, debug: debug, floor: "0"}
}

func (f *fakeSNP) report(reportData []byte) ([]byte, error) {
	r := &spb.Report{
		Version:         2,
		Policy:          abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, Debug: f.debug}),
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		FamilyId:        make([]byte, 16),
		ImageId:         make([]byte, 16),
		ReportData:      reportData,
		Measurement:     bytes.Repeat([]byte{0x5A}, 48),
		HostData:        make([]byte, 32),
		IdKeyDigest:     make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48),
		ReportId:        make([]byte, 32),
		ReportIdMa:      make([]byte, 32),
		ChipId:          make([]byte, 64),
		Signature:       make([]byte, 512),
	}
	raw, err := abi.ReportToAbiBytes(r)
	if err != nil {
		return nil, err
	}
	rr, ss, err := f.signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		return nil, err
	}
	if err := abi.SetSignature(rr, ss, raw); err != nil {
		return nil, err
	}
	if f.tamper != nil {
		raw = f.tamper(raw)
	}
	return raw, nil
}

func (f *fakeSNP) tsm(provider string) configfsi.Client {
	sub := &faketsm.ReportSubsystem{
		MakeEntry: func() *faketsm.ReportEntry {
			return &faketsm.ReportEntry{
				InAttrs: map[string]*faketsm.ReportAttributeState{"inblob": {}, "privlevel": {}},
				// faketsm answers reads of a fresh entry from this cache only.
				ROAttrs: map[string][]byte{"provider": []byte(provider + "\n"), "privlevel_floor": []byte(f.floor + "\n")},
			}
		},
		CheckInAttr: func(_ *faketsm.ReportEntry, attr string, contents []byte) error {
			if attr == "inblob" && len(contents) != 64 {
				return syscall.EINVAL
			}
			return nil
		},
		ReadAttr: func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
			switch attr {
			case "provider":
				return []byte(provider + "\n"), nil
			case "outblob":
				return f.report(e.InAttrs["inblob"].Value)
			case "auxblob":
				return f.signer.CertTableBytes()
			}
			return nil, os.ErrNotExist
		},
		Random: rand.Reader,
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}

func (f *fakeSNP) verifier(t *testing.T) *attestsnp.Verifier {
	t.Helper()
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.signer.Ask.Raw})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.signer.Ark.Raw})...)
	v, err := attestsnp.NewVerifier(attestsnp.VerifierOptions{
		Now:   func() time.Time { return testTime },
		Roots: map[string][][]byte{"Milan": {chain}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAttestRoundTrip(t *testing.T) {
	var rd attest.ReportData
	copy(rd[:], "hash of the OHTTP key configuration and policy")
	for _, debug := range []bool{false, true} {
		f := newFakeSNP(t, debug)
		g, err := New(Options{TSM: f.tsm("sev_guest")})
		if err != nil {
			t.Fatal(err)
		}
		if g.TEE() != attest.SNP {
			t.Errorf("TEE() = %q", g.TEE())
		}
		ev, err := g.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		id, err := f.verifier(t).Verify(context.Background(), ev)
		if err != nil {
			t.Fatalf("debug=%v: %v", debug, err)
		}
		if id.ReportData != rd || id.Debug != debug || !bytes.Equal(id.Measurement, bytes.Repeat([]byte{0x5A}, 48)) {
			t.Errorf("identity %+v, want report data %x and debug %v", id, rd, debug)
		}
		// The default expectations refuse the debug guest.
		_, err = attest.Verify(context.Background(), ev, rd, attest.Expectations{MinSNPTCB: id.PlatformTCB}, f.verifier(t))
		if (err != nil) != debug {
			t.Errorf("debug=%v: attest.Verify: %v", debug, err)
		}
		// AMD's real roots do not vouch for the fake AMD.
		var real attestsnp.Verifier
		if _, err := real.Verify(context.Background(), ev); !errors.Is(err, attestsnp.ErrVerification) {
			t.Errorf("real AMD roots accepted fake evidence: %v", err)
		}
	}
}

func TestAttestFailures(t *testing.T) {
	var rd attest.ReportData
	rd[0] = 7
	tests := []struct {
		name   string
		tamper func([]byte) []byte
		want   string
	}{
		{"report for other data", func(r []byte) []byte { r[reportDataStart] ^= 1; return r }, "does not carry the requested report data"},
		{"short report", func(r []byte) []byte { return r[:reportDataEnd] }, "malformed"},
		{"long report", func(r []byte) []byte { return append(r, 0) }, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSNP(t, false)
			f.tamper = tt.tamper
			g, err := New(Options{TSM: f.tsm("sev_guest")})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.Attest(context.Background(), rd); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Attest: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAttestCanceled(t *testing.T) {
	f := newFakeSNP(t, false)
	release := make(chan struct{})
	defer close(release)
	f.tamper = func(r []byte) []byte { <-release; return r }
	g, err := New(Options{TSM: f.tsm("sev_guest")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := g.Attest(ctx, attest.ReportData{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Attest with a stuck secure processor: %v", err)
	}
}

func TestNewNotSNP(t *testing.T) {
	f := newFakeSNP(t, false)
	if _, err := New(Options{TSM: f.tsm("tdx_guest")}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"tdx_guest"`) {
		t.Errorf("New on a TDX guest: %v", err)
	}
	root := t.TempDir()
	_, err := New(Options{ConfigfsRoot: root})
	want := "tee/snp: SEV-SNP guest interface not found: no configfs-tsm at " + filepath.Join(root, "report") + " (not running in an SEV-SNP confidential VM?)"
	if !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("New without configfs-tsm: %v\nwant %s", err, want)
	}
}

// deviceWithKey is go-sev-guest's fake SEV guest device, answering only the
// derived-key request conftrace must make: VCEK root key, measurement and
// guest policy mixed in, at the given VMPL.
func deviceWithKey(vmpl uint32, key []byte) *sevtest.Device {
	req := &labi.SnpDerivedKeyReqABI{
		RootKeySelect:    0,           // VCEK
		GuestFieldSelect: 1<<3 | 1<<0, // MEASUREMENT, GUEST_POLICY
		Vmpl:             vmpl,
	}
	return &sevtest.Device{Keys: map[string][]byte{sevtest.DerivedKeyRequestToString(req): key}}
}

func TestSealingKey(t *testing.T) {
	derived := bytes.Repeat([]byte{0xD7}, 32)
	want, err := hkdf.Key(sha256.New, derived, nil, sealingKeyLabel, 32)
	if err != nil {
		t.Fatal(err)
	}
	for _, vmpl := range []uint32{0, 2} {
		f := newFakeSNP(t, false)
		f.floor = string(rune('0' + vmpl))
		g, err := New(Options{TSM: f.tsm("sev_guest"), Device: deviceWithKey(vmpl, derived)})
		if err != nil {
			t.Fatal(err)
		}
		k1, err := g.SealingKey(context.Background())
		if err != nil {
			t.Fatalf("VMPL %d: %v", vmpl, err)
		}
		if !bytes.Equal(k1[:], want) {
			t.Errorf("VMPL %d: sealing key %x, want HKDF of the derived key %x", vmpl, k1, want)
		}
		k2, err := g.SealingKey(context.Background())
		if err != nil || k2 != k1 {
			t.Errorf("second SealingKey: %x, %v; want the same key", k2, err)
		}
	}
}

func TestSealingKeyFailures(t *testing.T) {
	f := newFakeSNP(t, false)
	// A device that derives keys only for VMPL 1 refuses conftrace's request
	// at VMPL 0.
	g, err := New(Options{TSM: f.tsm("sev_guest"), Device: deviceWithKey(1, make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.SealingKey(context.Background()); !errors.Is(err, ErrNoSealingKey) {
		t.Errorf("SealingKey with a refusing device: %v", err)
	}

	g, err = New(Options{TSM: f.tsm("sev_guest"), DevicePath: filepath.Join(t.TempDir(), "sev-guest")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.SealingKey(context.Background())
	if !errors.Is(err, ErrNoSealingKey) || !strings.Contains(err.Error(), "docs/key-release.md") {
		t.Errorf("SealingKey without a device: %v", err)
	}

	f.floor = "seven"
	g, err = New(Options{TSM: f.tsm("sev_guest"), Device: deviceWithKey(0, make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.SealingKey(context.Background()); !errors.Is(err, ErrNoSealingKey) {
		t.Errorf("SealingKey with a bad privlevel_floor: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.SealingKey(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("SealingKey with a canceled context: %v", err)
	}
}
