package sim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/conftrace/conftrace/attest"
	attestsim "github.com/conftrace/conftrace/attest/sim"
)

var allowSim = attestsim.NewVerifier(attestsim.VerifierOptions{AllowSimulated: true})

func measurement(s string) []byte {
	m := sha256.Sum256([]byte(s))
	return m[:]
}

func newTEE(t *testing.T, opts Options) *TEE {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func reportData(s string) attest.ReportData {
	var rd attest.ReportData
	copy(rd[:], s)
	return rd
}

func TestAttestVerify(t *testing.T) {
	ctx := context.Background()
	m := measurement("backend v1")
	s := newTEE(t, Options{Measurement: m})
	if s.TEE() != attest.Sim {
		t.Fatalf("TEE() = %q", s.TEE())
	}
	rd := reportData("hash of the key configs and policy")
	ev, err := s.Attest(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	pinned := attestsim.NewVerifier(attestsim.VerifierOptions{AllowSimulated: true, PlatformKeys: []ed25519.PublicKey{s.PlatformKey()}})
	for name, v := range map[string]attest.Verifier{"allow": allowSim, "pinned": pinned} {
		id, err := attest.Verify(ctx, ev, rd, attest.Expectations{AllowSimulated: true, Measurements: [][]byte{m}}, v)
		if err != nil {
			t.Fatalf("%s: attest.Verify: %v", name, err)
		}
		if id.TEE != attest.Sim || !bytes.Equal(id.Measurement, m) || id.Debug || id.ReportData != rd {
			t.Errorf("%s: identity %+v", name, id)
		}
	}
}

func TestAttestDebug(t *testing.T) {
	ctx := context.Background()
	s := newTEE(t, Options{Measurement: measurement("x"), Debug: true})
	rd := reportData("rd")
	ev, err := s.Attest(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	var me *attest.MismatchError
	if _, err := attest.Verify(ctx, ev, rd, attest.Expectations{AllowSimulated: true}, allowSim); !errors.As(err, &me) || me.Field != "debug" {
		t.Errorf("debug evidence without AllowDebug: %v, want a debug mismatch", err)
	}
	id, err := attest.Verify(ctx, ev, rd, attest.Expectations{AllowSimulated: true, AllowDebug: true}, allowSim)
	if err != nil || !id.Debug {
		t.Errorf("debug evidence with AllowDebug: %+v, %v", id, err)
	}
}

func TestSimulatedRefused(t *testing.T) {
	ctx := context.Background()
	s := newTEE(t, Options{Measurement: measurement("backend")})
	rd := reportData("rd")
	ev, err := s.Attest(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		exp  attest.Expectations
		v    attest.Verifier
	}{
		{"expectations refuse", attest.Expectations{}, allowSim},
		{"verifier refuses", attest.Expectations{AllowSimulated: true}, &attestsim.Verifier{}},
		{"both refuse", attest.Expectations{}, attestsim.NewVerifier(attestsim.VerifierOptions{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := attest.Verify(ctx, ev, rd, tt.exp, tt.v); !errors.Is(err, attest.ErrSimulated) {
				t.Errorf("attest.Verify: %v, want %v", err, attest.ErrSimulated)
			}
		})
	}
}

func TestFlippedByteRefused(t *testing.T) {
	ctx := context.Background()
	s := newTEE(t, Options{Measurement: measurement("backend")})
	rd := reportData("rd")
	ev, err := s.Attest(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	exp := attest.Expectations{AllowSimulated: true, AllowDebug: true}
	for i := range ev.Data {
		bad := ev
		bad.Data = bytes.Clone(ev.Data)
		bad.Data[i] ^= 0x01
		if _, err := attest.Verify(ctx, bad, rd, exp, allowSim); err == nil {
			t.Errorf("evidence with byte %d flipped verified", i)
		}
	}
}

func TestWrongReportData(t *testing.T) {
	ctx := context.Background()
	s := newTEE(t, Options{Measurement: measurement("backend")})
	ev, err := s.Attest(ctx, reportData("attested"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = attest.Verify(ctx, ev, reportData("expected"), attest.Expectations{AllowSimulated: true}, allowSim)
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "report_data" {
		t.Fatalf("attest.Verify: %v, want a report_data mismatch", err)
	}
}

func TestAttestCanceled(t *testing.T) {
	s := newTEE(t, Options{Measurement: measurement("backend")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Attest(ctx, attest.ReportData{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Attest: %v, want %v", err, context.Canceled)
	}
	if _, err := s.SealingKey(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("SealingKey: %v, want %v", err, context.Canceled)
	}
}

func sealingKey(t *testing.T, s *TEE) [32]byte {
	t.Helper()
	k, err := s.SealingKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealingKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "platform.pem")
	m1, m2 := measurement("backend v1"), measurement("backend v2")

	first := newTEE(t, Options{KeyFile: path, Measurement: m1})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}

	reloaded := newTEE(t, Options{KeyFile: path, Measurement: m1})
	if !first.PlatformKey().Equal(reloaded.PlatformKey()) {
		t.Error("platform key changed across reloads of the key file")
	}
	k1 := sealingKey(t, first)
	if k1 != sealingKey(t, reloaded) {
		t.Error("sealing key changed across reloads of the key file")
	}
	if k1 == ([32]byte{}) {
		t.Error("sealing key is all zeros")
	}
	if k1 == sealingKey(t, newTEE(t, Options{KeyFile: path, Measurement: m2})) {
		t.Error("a different measurement got the same sealing key")
	}
	if k1 == sealingKey(t, newTEE(t, Options{KeyFile: filepath.Join(dir, "other.pem"), Measurement: m1})) {
		t.Error("a different platform key got the same sealing key")
	}
	if k1 == sealingKey(t, newTEE(t, Options{Measurement: m1})) {
		t.Error("an in-memory platform key got the key file's sealing key")
	}
}

// TestSealingKeyConstruction recomputes the sealing key as its doc comment
// describes, from the key file that a user can read.
func TestSealingKeyConstruction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "platform.pem")
	m := measurement("backend")
	s := newTEE(t, Options{KeyFile: path, Measurement: m})

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PEM PRIVATE KEY: %q", b)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	seed := k.(ed25519.PrivateKey).Seed()
	want, err := hkdf.Key(sha256.New, seed, nil, "conftrace tee/sim sealing key v1\x00"+string(m), 32)
	if err != nil {
		t.Fatal(err)
	}
	if got := sealingKey(t, s); !bytes.Equal(got[:], want) {
		t.Errorf("sealing key %x, want %x", got, want)
	}
}

// TestExistingKeyFile checks that a key made by other tools (as openssl
// genpkey would) is used as is.
func TestExistingKeyFile(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if s := newTEE(t, Options{KeyFile: path, Measurement: measurement("x")}); !s.PlatformKey().Equal(pub) {
		t.Errorf("platform key %x, want the key file's %x", s.PlatformKey(), pub)
	}
}

func TestExecutableMeasurement(t *testing.T) {
	path, err := os.Executable()
	if err != nil {
		t.Skipf("no executable path: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(b)
	s := newTEE(t, Options{})
	if !bytes.Equal(s.Measurement(), want[:]) {
		t.Errorf("measurement %x, want SHA-256 of %s %x", s.Measurement(), path, want)
	}
	ev, err := s.Attest(context.Background(), attest.ReportData{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(context.Background(), ev, attest.ReportData{}, attest.Expectations{AllowSimulated: true, Measurements: [][]byte{want[:]}}, allowSim); err != nil {
		t.Errorf("evidence does not carry the executable's measurement: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	m := measurement("x")
	tests := []struct {
		name string
		opts Options
	}{
		{"short measurement", Options{Measurement: m[:31]}},
		{"long measurement", Options{Measurement: append(m, 0)}},
		{"empty measurement", Options{Measurement: []byte{}}},
		{"empty key file", Options{Measurement: m, KeyFile: write("empty.pem", nil)}},
		{"not PEM", Options{Measurement: m, KeyFile: write("garbage.pem", []byte("not a key"))}},
		{"wrong PEM type", Options{Measurement: m, KeyFile: write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))}},
		{"bad PKCS8", Options{Measurement: m, KeyFile: write("bad.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))}},
		{"ECDSA key", Options{Measurement: m, KeyFile: write("ec.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))}},
		{"missing directory", Options{Measurement: m, KeyFile: filepath.Join(dir, "no", "such", "dir", "k.pem")}},
		{"key file is a directory", Options{Measurement: m, KeyFile: dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := New(tt.opts); err == nil {
				t.Fatalf("New succeeded: %+v", s)
			}
		})
	}
}

// TestMeasurementCopied checks that changing the caller's measurement slice
// after New does not change what is attested.
func TestMeasurementCopied(t *testing.T) {
	m := measurement("backend")
	want := bytes.Clone(m)
	s := newTEE(t, Options{Measurement: m})
	m[0] ^= 1
	if got := s.Measurement(); !bytes.Equal(got, want) {
		t.Errorf("measurement %x, want %x", got, want)
	}
	s.Measurement()[0] ^= 1
	if got := s.Measurement(); !bytes.Equal(got, want) {
		t.Errorf("Measurement() aliases internal state: %x", got)
	}
}

// FuzzParseKey checks that a key file from the host's disk never makes the
// TEE panic, and that an accepted key survives being written back.
func FuzzParseKey(f *testing.F) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		f.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKey("fuzz.pem", data)
		if err != nil {
			return
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("accepted key does not re-encode: %v", err)
		}
		again, err := parseKey("fuzz.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err != nil || !again.Equal(key) {
			t.Fatalf("re-encoded key parses as %x, %v; want %x", again, err, key)
		}
	})
}

// Two backends starting at once on one data directory: the one that finds
// no key file but loses the race to create it must use the winner's key,
// as the key file's documentation promises, not fail.
func TestKeyFileCreatedByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "platform.key")
	var theirs ed25519.PrivateKey
	lostRace := func(p string) (ed25519.PrivateKey, error) {
		k, err := createKey(p) // the other process, between our read and our create
		if err != nil {
			t.Fatal(err)
		}
		theirs = k
		return createKey(p) // ours, now refused with fs.ErrExist
	}
	got, err := loadOrCreateKey(path, lostRace)
	if err != nil {
		t.Fatalf("loadOrCreateKey after losing the race to create the key: %v", err)
	}
	if !got.Equal(theirs) {
		t.Fatal("loadOrCreateKey did not return the key the other process created")
	}
}

// Many simulated TEEs started at once on one key file all seal with the
// same key.
func TestKeyFileConcurrentStarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "platform.key")
	m := bytes.Repeat([]byte{7}, 32)
	keys := make([][32]byte, 8)
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			tee, err := New(Options{KeyFile: path, Measurement: m})
			if err != nil {
				errs[i] = err
				return
			}
			keys[i], errs[i] = tee.SealingKey(context.Background())
		})
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if keys[i] != keys[0] {
			t.Fatalf("start %d sealed with a different key than start 0", i)
		}
	}
}
