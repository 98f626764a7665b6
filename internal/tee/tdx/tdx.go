// Package tdx is the backend's TEE when conftrace runs in an Intel TDX
// confidential VM (a trust domain).
//
// Evidence comes from Linux's configfs-tsm report interface
// (/sys/kernel/config/tsm/report, Linux 6.7 and later), through
// github.com/google/go-configfs-tsm: the guest writes its 64 bytes of report
// data, the kernel has the TDX module produce a TD report and the quoting
// enclave on the host turn it into a signed quote, which the guest reads
// back. The evidence is that raw quote, as attest/tdx verifies it.
//
// TDX gives a trust domain no sealing key: nothing on the platform derives a
// key from the TD's measurement that only the same TD could obtain again
// after a restart. [TEE.SealingKey] therefore always fails, with an error
// that says how the storage key-encryption key must reach the VM instead:
// released by an attested peer replica or key broker, or entered from an
// offline recovery key. docs/key-release.md describes these paths.
package tdx

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/internal/tee/tsm"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
)

// DefaultConfigfsRoot is where Linux mounts configfs-tsm.
const DefaultConfigfsRoot = tsm.DefaultRoot

// provider is what configfs-tsm's provider attribute says in a TDX guest.
const provider = "tdx_guest"

// Offsets of the report data in a version 4 TDX quote: a 48-byte header,
// then the TD report body, whose last 64 bytes are the report data.
const (
	quoteReportDataStart = 0x30 + 0x208
	quoteReportDataEnd   = quoteReportDataStart + attest.ReportDataSize
)

var (
	// ErrNotFound is returned when there is no TDX guest interface:
	// configfs-tsm is absent or serves another kind of TEE.
	ErrNotFound = errors.New("tee/tdx: TDX guest interface not found")
	// ErrNoSealingKey is returned by SealingKey: TDX has no sealing key.
	ErrNoSealingKey = errors.New("tee/tdx: TDX has no sealing key")
)

// Options configure a [TEE].
type Options struct {
	// ConfigfsRoot is where configfs-tsm is mounted; empty means
	// [DefaultConfigfsRoot].
	ConfigfsRoot string
	// TSM, when not nil, replaces the file system access to configfs-tsm
	// altogether (tests use go-configfs-tsm's faketsm); ConfigfsRoot is then
	// only used in messages.
	TSM configfsi.Client
}

// TEE is the TEE of a TDX confidential VM. It implements [tee.TEE].
type TEE struct {
	client configfsi.Client
	root   string
}

var _ tee.TEE = (*TEE)(nil)

// New returns the TEE of the TDX VM the process runs in. It fails with an
// error wrapping [ErrNotFound] when configfs-tsm is absent or is not backed
// by TDX.
func New(opts Options) (*TEE, error) {
	root := opts.ConfigfsRoot
	if root == "" {
		root = DefaultConfigfsRoot
	}
	c, err := tsm.Open(root, opts.TSM, provider, "a TDX", ErrNotFound)
	if err != nil {
		return nil, err
	}
	return &TEE{client: c, root: root}, nil
}

// TEE returns [attest.TDX].
func (t *TEE) TEE() attest.TEE { return attest.TDX }

// Attest returns a fresh TDX quote binding reportData. The quote is made by
// the host's quoting service and may take a while; if ctx ends first,
// Attest returns ctx's error and the request finishes in the background.
func (t *TEE) Attest(ctx context.Context, reportData attest.ReportData) (attest.Evidence, error) {
	resp, err := tsm.Get(ctx, t.client, &report.Request{InBlob: reportData[:]}, provider, ErrNotFound)
	if err != nil {
		return attest.Evidence{}, fmt.Errorf("tee/tdx: attest: %w", err)
	}
	quote := resp.OutBlob
	// A quote for other report data would fail verification anyway; catch it
	// here, where the cause (a confused kernel or a racing writer) is known.
	if len(quote) < quoteReportDataEnd || !bytes.Equal(quote[quoteReportDataStart:quoteReportDataEnd], reportData[:]) {
		return attest.Evidence{}, fmt.Errorf("tee/tdx: attest: configfs-tsm returned a %d-byte quote that does not carry the requested report data", len(quote))
	}
	return attest.Evidence{TEE: attest.TDX, Data: bytes.Clone(quote)}, nil
}

// SealingKey always fails with an error wrapping [ErrNoSealingKey]: a TDX
// trust domain has no key that only its own measurement can obtain.
func (t *TEE) SealingKey(ctx context.Context) ([tee.SealingKeySize]byte, error) {
	return [tee.SealingKeySize]byte{}, fmt.Errorf("%w: the storage key-encryption key must be released to this VM by an attested peer replica or a key broker, or entered from the offline recovery key (see docs/key-release.md)", ErrNoSealingKey)
}
