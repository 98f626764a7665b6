// Package gramine is the backend's TEE when conftrace runs as an Intel SGX
// enclave under Gramine (gramine-sgx, with sgx.remote_attestation = "dcap"
// in the manifest; see deploy/gramine).
//
// Gramine exposes the enclave's attestation and sealing to the program as
// pseudo-files under /dev/attestation:
//
//   - attestation_type reads "dcap" when the manifest enables DCAP remote
//     attestation.
//   - Writing 64 bytes to user_report_data, then reading quote, returns an
//     SGX DCAP quote whose report data are those 64 bytes, produced by the
//     platform's quoting enclave.
//   - keys/_sgx_mrenclave reads a 16-byte SGX sealing key bound to the
//     enclave's MRENCLAVE and to the CPU.
//   - my_target_info reads the enclave's own SGX TARGETINFO, which begins
//     with its MRENCLAVE ([TEE.Measurement]).
//
// [TEE.Attest] wraps the quote as [attest.SGX] evidence, which
// github.com/conftrace/conftrace/attest/sgx verifies, with the Intel-signed
// collateral for the platform that [Options.Collateral] provides: clients
// refuse SGX evidence without it, since they cannot judge the platform's
// TCB otherwise, and do not fetch it themselves (which would tell Intel or
// a PCCS operator who uses the backend).
//
// [TEE.SealingKey] derives the backend's 32-byte sealing key from the
// MRENCLAVE-bound key. MRENCLAVE binding means only the same enclave build
// (the same binary and manifest, so the same measurement) on the same CPU
// obtains the key: a modified build, even one signed by the same key, gets
// a different key and cannot open what this one sealed. The flip side is
// that a new release cannot open its predecessor's sealed state directly;
// state must move through an attested channel (key release from an attested
// peer). MRSIGNER binding, which would let any build signed by the same key
// unseal, is deliberately not used: the signer could then sign a build that
// leaks everything.
//
// Gramine derives the key with the CPU's current security version (CPUSVN)
// and the enclave's ISVSVN. So a microcode or firmware update that raises
// CPUSVN (a TCB recovery) also changes the key, and sealed state from before
// the update cannot be opened after it: treat platform updates like
// releases, and move the state through an attested peer first.
package gramine

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	"github.com/conftrace/conftrace/internal/tee"
)

// DefaultDir is where Gramine mounts its attestation pseudo-files.
const DefaultDir = "/dev/attestation"

// sealingInfo is the HKDF info of the sealing key. Deriving (rather than
// using Gramine's key directly) also keeps our use of the key apart from
// Gramine's own use of it for encrypted files.
const sealingInfo = "conftrace tee/gramine sealing key v1 (_sgx_mrenclave)"

// Pseudo-file names under the attestation directory.
const (
	fileAttestationType = "attestation_type"
	fileUserReportData  = "user_report_data"
	fileQuote           = "quote"
	fileMyTargetInfo    = "my_target_info"
	fileMREnclaveKey    = "keys/_sgx_mrenclave"
)

// targetInfoSize is the size of an SGX TARGETINFO.
const targetInfoSize = 512

// Errors of [New], [TEE.Attest] and [TEE.SealingKey], wrapped with details.
var (
	// ErrNotGramine means the attestation directory does not exist: the
	// process is not running under Gramine-SGX.
	ErrNotGramine = errors.New("gramine: not running under Gramine-SGX")
	// ErrNotDCAP means Gramine runs without DCAP remote attestation
	// (attestation_type is not "dcap"), so it cannot produce quotes.
	ErrNotDCAP = errors.New("gramine: remote attestation type is not dcap")
	// ErrStaleQuote means the quote Gramine returned does not carry the
	// report data just written.
	ErrStaleQuote = errors.New("gramine: quote does not carry the requested report data")
)

// Options configure a [TEE]. The zero value uses [DefaultDir] and attaches
// no collateral.
type Options struct {
	// Dir is the attestation directory; empty means [DefaultDir]. Tests
	// point it at a stand-in.
	Dir string
	// Collateral, if not nil, provides the collateral attached to each
	// quote, asked anew at every attestation so that what the operator
	// refreshes (a directory, a PCCS) is served from the next one on.
	Collateral sgx.CollateralSource
	// Logger hears when the collateral source fails and the last
	// collateral it gave is served instead; nil discards.
	Logger *slog.Logger
}

// TEE is the Gramine-SGX environment. It implements [tee.TEE].
type TEE struct {
	dir         string
	collateral  sgx.CollateralSource
	log         *slog.Logger
	measurement []byte
	// lastGood holds the last collateral the source gave for each
	// platform, served when the source fails: a PCCS outage must not stop
	// the re-attestations that keep phones' bundles fresh. Clients still
	// refuse collateral past its next update, so a long outage shows.
	lastGood   map[[6]byte]*sgx.Collateral
	lastGoodMu sync.Mutex
	// mu serializes Attest: writing the report data and reading the quote
	// are two steps on process-wide files.
	mu sync.Mutex
}

var _ tee.TEE = (*TEE)(nil)

// New checks that the process runs under Gramine-SGX with DCAP attestation
// and returns its TEE. It returns an error wrapping [ErrNotGramine] or
// [ErrNotDCAP] otherwise.
func New(opts Options) (*TEE, error) {
	dir := opts.Dir
	if dir == "" {
		dir = DefaultDir
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s not found", ErrNotGramine, dir)
	} else if err != nil {
		return nil, fmt.Errorf("gramine: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, fileAttestationType))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s", ErrNotGramine, dir, fileAttestationType)
	} else if err != nil {
		return nil, fmt.Errorf("gramine: %w", err)
	}
	if typ := string(bytes.TrimSpace(b)); typ != "dcap" {
		return nil, fmt.Errorf("%w: %s reads %q (set sgx.remote_attestation = \"dcap\" in the manifest)", ErrNotDCAP, filepath.Join(dir, fileAttestationType), typ)
	}
	// The enclave's own TARGETINFO begins with its MRENCLAVE.
	ti, err := os.ReadFile(filepath.Join(dir, fileMyTargetInfo))
	if err != nil {
		return nil, fmt.Errorf("gramine: reading own target info: %w", err)
	}
	if len(ti) != targetInfoSize {
		return nil, fmt.Errorf("gramine: %s is %d bytes, want %d", filepath.Join(dir, fileMyTargetInfo), len(ti), targetInfoSize)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TEE{dir: dir, collateral: opts.Collateral, log: log, measurement: bytes.Clone(ti[:sha256.Size]),
		lastGood: map[[6]byte]*sgx.Collateral{}}, nil
}

// Measurement returns the enclave's MRENCLAVE, the measurement its quotes
// carry.
func (t *TEE) Measurement() []byte { return bytes.Clone(t.measurement) }

// TEE returns [attest.SGX].
func (t *TEE) TEE() attest.TEE { return attest.SGX }

// Attest returns an SGX DCAP quote binding reportData, as [attest.SGX]
// evidence, with the collateral for the quote's platform when
// [Options.Collateral] is set. Concurrent calls are serialized.
func (t *TEE) Attest(ctx context.Context, reportData attest.ReportData) (attest.Evidence, error) {
	quote, q, err := t.quote(ctx, reportData)
	if err != nil {
		return attest.Evidence{}, err
	}
	ev := attest.Evidence{TEE: attest.SGX, Data: quote}
	if t.collateral == nil {
		return ev, nil
	}
	fmspc, err := q.FMSPC()
	if err != nil {
		return attest.Evidence{}, fmt.Errorf("gramine: platform of the quote: %w", err)
	}
	c, err := t.platformCollateral(ctx, fmspc)
	if err != nil {
		return attest.Evidence{}, err
	}
	if ev.Collateral, err = c.Marshal(); err != nil {
		return attest.Evidence{}, fmt.Errorf("gramine: %w", err)
	}
	return ev, nil
}

// platformCollateral asks the source for fmspc's collateral and, when it
// fails, falls back to the last it gave.
func (t *TEE) platformCollateral(ctx context.Context, fmspc [6]byte) (*sgx.Collateral, error) {
	c, err := t.collateral.Collateral(ctx, fmspc)
	t.lastGoodMu.Lock()
	defer t.lastGoodMu.Unlock()
	if err == nil {
		t.lastGood[fmspc] = c
		return c, nil
	}
	if prev := t.lastGood[fmspc]; prev != nil {
		t.log.WarnContext(ctx, "collateral source failed; serving the last collateral it gave", "fmspc", fmt.Sprintf("%x", fmspc[:]), "err", err)
		return prev, nil
	}
	return nil, fmt.Errorf("gramine: collateral for FMSPC %x: %w", fmspc[:], err)
}

// quote asks Gramine for a quote binding reportData and returns it, raw
// and parsed.
func (t *TEE) quote(ctx context.Context, reportData attest.ReportData) ([]byte, *sgx.Quote, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := writeExisting(filepath.Join(t.dir, fileUserReportData), reportData[:]); err != nil {
		return nil, nil, fmt.Errorf("gramine: writing report data: %w", err)
	}
	quote, err := os.ReadFile(filepath.Join(t.dir, fileQuote))
	if err != nil {
		return nil, nil, fmt.Errorf("gramine: reading quote: %w", err)
	}
	// Check that Gramine took our report data: a quote for other data
	// would fail every client's verification, with a less clear error.
	q, err := sgx.ParseQuote(quote)
	if err != nil {
		return nil, nil, fmt.Errorf("gramine: quote from %s: %w", t.dir, err)
	}
	if q.Report.ReportData != reportData {
		return nil, nil, fmt.Errorf("%w: got %x", ErrStaleQuote, q.Report.ReportData[:8])
	}
	return quote, q, nil
}

// writeExisting writes b to the existing file name in one write, without
// creating or truncating it (Gramine's pseudo-files take the data when
// closed).
func writeExisting(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SealingKey derives the backend's sealing key from Gramine's
// MRENCLAVE-bound SGX sealing key with HKDF-SHA256 (see the package
// documentation for why MRENCLAVE).
func (t *TEE) SealingKey(ctx context.Context) ([tee.SealingKeySize]byte, error) {
	var key [tee.SealingKeySize]byte
	if err := ctx.Err(); err != nil {
		return key, err
	}
	name := filepath.Join(t.dir, fileMREnclaveKey)
	secret, err := os.ReadFile(name)
	if err != nil {
		return key, fmt.Errorf("gramine: reading sealing key: %w", err)
	}
	defer clear(secret)
	if len(secret) != 16 {
		return key, fmt.Errorf("gramine: %s is %d bytes, want 16", name, len(secret))
	}
	k, err := hkdf.Key(sha256.New, secret, nil, sealingInfo, tee.SealingKeySize)
	if err != nil {
		return key, fmt.Errorf("gramine: deriving sealing key: %w", err)
	}
	copy(key[:], k)
	clear(k)
	return key, nil
}
