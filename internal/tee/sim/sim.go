// Package sim is the simulated TEE: a software stand-in that lets the
// backend run, attest and seal on any machine, for development, tests and
// the demo.
//
// THE SIMULATED TEE PROTECTS NOTHING. Nothing isolates the backend from the
// host: the operator can read its memory, its "platform" key is an ordinary
// Ed25519 key in this process (or in a key file on the host's disk), and
// anyone with a key of their own can produce evidence that claims any
// measurement. Its evidence is labelled [attest.Sim], and every verifier
// refuses it unless the caller explicitly allows simulated evidence (see
// package github.com/conftrace/conftrace/attest/sim for the format and the
// verifier).
//
// What it does do is exercise the same code paths as a real TEE:
//
//   - Attest signs sim evidence binding the caller's report data to the
//     measurement of the running code, the SHA-256 of the executable file
//     (computed once, when [New] is called).
//   - SealingKey derives a key from the platform key and the measurement,
//     so that, as with a real TEE, a different binary obtains a different
//     sealing key and cannot open what this one sealed. The key is NOT
//     secret from the host, which can read the key file or the memory.
//
// Give [Options.KeyFile] to keep the same platform key, and so the same
// sealing key, across restarts; without it each [New] generates a fresh key
// and the sealed state of a previous run cannot be opened.
package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/attest"
	attestsim "github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/internal/tee"
)

// sealingInfo is the HKDF info prefix of the sealing key; the measurement
// follows it.
const sealingInfo = "conftrace tee/sim sealing key v1\x00"

// pemType is the PEM block type of the key file (PKCS #8, as written by
// "openssl genpkey -algorithm ed25519").
const pemType = "PRIVATE KEY"

// Options configure the simulated TEE. The zero value is a fresh in-memory
// platform key and the measurement of the running executable.
type Options struct {
	// KeyFile is the path of the platform key, a PEM-encoded PKCS #8
	// Ed25519 private key. It is created (mode 0600) with a new key if it
	// does not exist. Empty means a new key in memory for each New.
	KeyFile string
	// Measurement, if not nil, replaces the SHA-256 of the executable as
	// the measurement. It must be 32 bytes. Tests use it to play different
	// binaries.
	Measurement []byte
	// Debug marks the evidence as coming from a debug-mode TEE.
	Debug bool
}

// TEE is the simulated TEE. It implements [tee.TEE] and is safe for
// concurrent use.
type TEE struct {
	key         ed25519.PrivateKey
	measurement [sha256.Size]byte
	debug       bool
}

var _ tee.TEE = (*TEE)(nil)

// New returns a simulated TEE configured by opts. It reads or creates the
// key file and hashes the running executable.
func New(opts Options) (*TEE, error) {
	t := &TEE{debug: opts.Debug}
	if opts.Measurement != nil {
		if len(opts.Measurement) != sha256.Size {
			return nil, fmt.Errorf("tee/sim: measurement is %d bytes, want %d", len(opts.Measurement), sha256.Size)
		}
		copy(t.measurement[:], opts.Measurement)
	} else {
		m, err := measureExecutable()
		if err != nil {
			return nil, err
		}
		t.measurement = m
	}
	var err error
	if opts.KeyFile != "" {
		t.key, err = loadOrCreateKey(opts.KeyFile, createKey)
	} else {
		_, t.key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// measureExecutable returns the SHA-256 of the running executable.
func measureExecutable() ([sha256.Size]byte, error) {
	var m [sha256.Size]byte
	path, err := os.Executable()
	if err != nil {
		return m, fmt.Errorf("tee/sim: finding the executable to measure: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return m, fmt.Errorf("tee/sim: measuring the executable: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return m, fmt.Errorf("tee/sim: measuring the executable %s: %w", path, err)
	}
	h.Sum(m[:0])
	return m, nil
}

// loadOrCreateKey reads the platform key from path, or creates path with a
// new key by calling create if it does not exist. create must fail with
// fs.ErrExist rather than replace a file; when it does, another process
// created the key between the read and the create, and its key is used.
func loadOrCreateKey(path string, create func(path string) (ed25519.PrivateKey, error)) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, cerr := create(path)
		if !errors.Is(cerr, fs.ErrExist) {
			return key, cerr
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("tee/sim: reading platform key: %w", err)
	}
	return parseKey(path, b)
}

func parseKey(path string, b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("tee/sim: platform key file %s: no PEM %q block", path, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tee/sim: platform key file %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("tee/sim: platform key file %s: %T is not an Ed25519 key", path, k)
	}
	return key, nil
}

// createKey writes a new key to path, failing with fs.ErrExist if the file
// exists, so that two processes never overwrite each other's key; a process
// that reads the file while it is being created sees no file or all of it.
func createKey(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("tee/sim: encoding platform key: %w", err)
	}
	if err := atomicfile.Create(path, pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("tee/sim: creating platform key: %w", err)
	}
	return key, nil
}

// TEE returns [attest.Sim].
func (t *TEE) TEE() attest.TEE { return attest.Sim }

// Attest returns sim evidence binding reportData to the measurement, signed
// by the platform key.
func (t *TEE) Attest(ctx context.Context, reportData attest.ReportData) (attest.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return attest.Evidence{}, fmt.Errorf("tee/sim: attest: %w", err)
	}
	data, err := attestsim.Sign(t.key, attestsim.Claims{
		Measurement: t.measurement,
		ReportData:  reportData,
		Debug:       t.debug,
	})
	if err != nil {
		return attest.Evidence{}, fmt.Errorf("tee/sim: attest: %w", err)
	}
	return attest.Evidence{TEE: attest.Sim, Data: data}, nil
}

// SealingKey returns HKDF-SHA256 with the platform key's 32-byte seed as
// secret, no salt, and as info "conftrace tee/sim sealing key v1", a zero
// byte and the measurement. It is stable for the same key file and
// executable, and differs for a different executable. It is not secret
// from the host.
func (t *TEE) SealingKey(ctx context.Context) ([tee.SealingKeySize]byte, error) {
	var k [tee.SealingKeySize]byte
	if err := ctx.Err(); err != nil {
		return k, fmt.Errorf("tee/sim: sealing key: %w", err)
	}
	info := string(slices.Concat([]byte(sealingInfo), t.measurement[:]))
	b, err := hkdf.Key(sha256.New, t.key.Seed(), nil, info, len(k))
	if err != nil {
		return k, fmt.Errorf("tee/sim: sealing key: %w", err)
	}
	copy(k[:], b)
	return k, nil
}

// PlatformKey returns the platform's public key, which a verifier may pin.
func (t *TEE) PlatformKey() ed25519.PublicKey {
	return t.key.Public().(ed25519.PublicKey)
}

// Measurement returns the measurement that the evidence states.
func (t *TEE) Measurement() []byte {
	return slices.Clone(t.measurement[:])
}
