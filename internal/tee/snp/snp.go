// Package snp is the backend's TEE when conftrace runs in an AMD SEV-SNP
// confidential VM.
//
// Evidence comes from Linux's configfs-tsm report interface
// (/sys/kernel/config/tsm/report, Linux 6.7 and later), through
// github.com/google/go-configfs-tsm: the guest writes its 64 bytes of report
// data and reads back the attestation report the AMD secure processor signed
// (outblob) and the certificate table the host provisioned (auxblob). The
// evidence is the two concatenated, the format attest/snp defines and
// verifies. The host must provision the VCEK (or VLEK) certificate in that
// table, since verifiers do not fetch it from AMD.
//
// # Sealing key
//
// SEV-SNP guests can ask the secure processor for derived keys
// (MSG_KEY_REQ, through /dev/sev-guest and go-sev-guest's client).
// [TEE.SealingKey] asks for a key derived from the chip's VCEK, mixed
// with the VM's launch measurement and guest policy and bound to the VM
// privilege level the guest runs at, then passes it through HKDF-SHA256
// with a conftrace label. The same measured VM with the same policy on the
// same chip gets the same key after a restart; a VM with another
// measurement, a debug policy, or on another machine does not. Because the
// key is tied to the chip, data sealed with it cannot be opened after the VM
// moves to another host: replicas and migrations need the key-release paths
// of docs/key-release.md. conftrace does not ask for the guest SVN or the
// platform TCB version to be mixed in, so that the key is meant to survive
// guest and firmware updates that keep the measurement; this has not been
// tried on hardware, so treat platform updates like releases and keep a
// release path ready.
//
// The key is only as specific as the measurement: SNP measures what the
// hypervisor loaded at launch (the firmware and, with measured direct boot,
// the kernel, initrd and command line). If that does not pin the conftrace
// binary (for example through a dm-verity root hash on the measured command
// line), any VM booting the same firmware and kernel on the same machine
// derives the same key.
package snp

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/attest"
	attestsnp "github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/internal/tee/tsm"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/client"
)

// DefaultConfigfsRoot is where Linux mounts configfs-tsm.
const DefaultConfigfsRoot = tsm.DefaultRoot

// DefaultDevicePath is the SEV guest device that derives keys.
const DefaultDevicePath = "/dev/sev-guest"

// provider is what configfs-tsm's provider attribute says in an SNP guest.
const provider = "sev_guest"

// sealingKeyLabel separates conftrace's sealing key from any other key
// derived by the same VM with the same parameters.
const sealingKeyLabel = "conftrace internal/tee/snp sealing key v1"

// Offsets of the report data in an SEV-SNP attestation report.
const (
	reportDataStart = 0x50
	reportDataEnd   = reportDataStart + attest.ReportDataSize
)

var (
	// ErrNotFound is returned when there is no SEV-SNP guest interface:
	// configfs-tsm is absent or serves another kind of TEE.
	ErrNotFound = errors.New("tee/snp: SEV-SNP guest interface not found")
	// ErrNoSealingKey is returned by SealingKey when the secure processor
	// cannot be asked for a derived key.
	ErrNoSealingKey = errors.New("tee/snp: no SEV-SNP derived key")
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
	// DevicePath is the SEV guest device used for derived keys; empty means
	// [DefaultDevicePath].
	DevicePath string
	// Device, when not nil, replaces the device at DevicePath (tests use
	// go-sev-guest's fake device).
	Device client.Device
}

// TEE is the TEE of an SEV-SNP confidential VM. It implements [tee.TEE].
type TEE struct {
	tsm        configfsi.Client
	root       string
	device     client.Device
	devicePath string
}

var _ tee.TEE = (*TEE)(nil)

// New returns the TEE of the SEV-SNP VM the process runs in. It fails with
// an error wrapping [ErrNotFound] when configfs-tsm is absent or is not
// backed by SEV-SNP.
func New(opts Options) (*TEE, error) {
	t := &TEE{tsm: opts.TSM, root: opts.ConfigfsRoot, device: opts.Device, devicePath: opts.DevicePath}
	if t.root == "" {
		t.root = DefaultConfigfsRoot
	}
	if t.devicePath == "" {
		t.devicePath = DefaultDevicePath
	}
	c, err := tsm.Open(t.root, opts.TSM, provider, "an SEV-SNP", ErrNotFound)
	if err != nil {
		return nil, err
	}
	t.tsm = c
	return t, nil
}

// readOption reads an attribute of a fresh configfs-tsm report entry.
func (t *TEE) readOption(name string) ([]byte, error) {
	return tsm.ReadOption(t.tsm, t.root, name, ErrNotFound)
}

// TEE returns [attest.SNP].
func (t *TEE) TEE() attest.TEE { return attest.SNP }

// Attest returns fresh SEV-SNP evidence binding reportData: the signed
// report and the certificate table the host provisioned. If ctx ends first,
// Attest returns ctx's error and the request finishes in the background.
func (t *TEE) Attest(ctx context.Context, reportData attest.ReportData) (attest.Evidence, error) {
	resp, err := tsm.Get(ctx, t.tsm, &report.Request{InBlob: reportData[:], GetAuxBlob: true}, provider, ErrNotFound)
	if err != nil {
		return attest.Evidence{}, fmt.Errorf("tee/snp: attest: %w", err)
	}
	rep := resp.OutBlob
	// A report for other report data would fail verification anyway; catch
	// it here, where the cause (a confused kernel or a racing writer) is known.
	if len(rep) < reportDataEnd || !bytes.Equal(rep[reportDataStart:reportDataEnd], reportData[:]) {
		return attest.Evidence{}, fmt.Errorf("tee/snp: attest: configfs-tsm returned a %d-byte report that does not carry the requested report data", len(rep))
	}
	ev, err := attestsnp.NewEvidence(rep, resp.AuxBlob)
	if err != nil {
		return attest.Evidence{}, fmt.Errorf("tee/snp: attest: %w", err)
	}
	return ev, nil
}

// SealingKey returns the VM's sealing key, derived by the AMD secure
// processor from the chip's VCEK, the launch measurement and the guest
// policy (see the package documentation). It fails with an error wrapping
// [ErrNoSealingKey] when the SEV guest device is absent or refuses.
func (t *TEE) SealingKey(ctx context.Context) ([tee.SealingKeySize]byte, error) {
	var key [tee.SealingKeySize]byte
	if err := ctx.Err(); err != nil {
		return key, fmt.Errorf("tee/snp: sealing key: %w", err)
	}
	vmpl, err := t.vmpl()
	if err != nil {
		return key, err
	}
	dev := t.device
	if dev == nil {
		d := new(client.LinuxDevice)
		if err := d.Open(t.devicePath); err != nil {
			return key, fmt.Errorf("%w: %v; without it the storage key-encryption key must be released to this VM by an attested peer or a key broker, or entered from the offline recovery key (see docs/key-release.md)", ErrNoSealingKey, err)
		}
		defer d.Close()
		dev = d
	}
	resp, err := client.GetDerivedKeyAcknowledgingItsLimitations(dev, &client.SnpDerivedKeyReq{
		// The VCEK, not the VM root key: the VMRK is chosen afresh at each
		// launch (or by a migration agent), so keys derived from it would
		// not survive a restart.
		UseVCEK: true,
		GuestFieldSelect: client.GuestFieldSelect{
			Measurement: true,
			// A debug launch of the same image must not get the key.
			GuestPolicy: true,
		},
		Vmpl: vmpl,
	})
	if err != nil {
		return key, fmt.Errorf("%w: %v", ErrNoSealingKey, err)
	}
	defer clear(resp.Data[:])
	if resp.Status != 0 {
		return key, fmt.Errorf("%w: the secure processor refused with status %#x", ErrNoSealingKey, resp.Status)
	}
	k, err := hkdf.Key(sha256.New, resp.Data[:], nil, sealingKeyLabel, tee.SealingKeySize)
	if err != nil {
		return key, fmt.Errorf("tee/snp: sealing key: %w", err)
	}
	copy(key[:], k)
	clear(k)
	return key, nil
}

// vmpl returns the VM privilege level the guest runs at, configfs-tsm's
// privlevel_floor, which is the lowest level a derived key may be bound to.
// Kernels without the attribute run guests at VMPL 0.
func (t *TEE) vmpl() (uint32, error) {
	b, err := t.readOption("privlevel_floor")
	if err != nil {
		return 0, nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || v > 3 {
		return 0, fmt.Errorf("%w: configfs-tsm privlevel_floor %q is not a VM privilege level", ErrNoSealingKey, b)
	}
	return uint32(v), nil
}
