package snp

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/conftrace/conftrace/attest"
	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/uuid"
)

// certTableEntrySize is the size of one certificate table header entry:
// a 16-byte GUID, a 32-bit offset and a 32-bit length.
const certTableEntrySize = 24

// certEntry is one certificate of a certificate table.
type certEntry struct {
	guid uuid.UUID
	data []byte
}

// NewEvidence returns SNP evidence made of report, a raw attestation report
// of [ReportSize] bytes, and certTable, the certificate table of the
// extended guest request (configfs-tsm's auxblob; may be empty). It checks
// that both parse; it does not verify anything.
func NewEvidence(report, certTable []byte) (attest.Evidence, error) {
	if len(report) != ReportSize {
		return attest.Evidence{}, fmt.Errorf("%w: report is %d bytes, want %d", ErrMalformed, len(report), ReportSize)
	}
	data := make([]byte, 0, len(report)+len(certTable))
	data = append(append(data, report...), certTable...)
	if _, err := decodeEvidence(data); err != nil {
		return attest.Evidence{}, err
	}
	return attest.Evidence{TEE: attest.SNP, Data: data}, nil
}

// decodeEvidence splits SNP evidence into its report and certificates.
func decodeEvidence(data []byte) (*spb.Attestation, error) {
	if len(data) < ReportSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a %d-byte report", ErrMalformed, len(data), ReportSize)
	}
	report, err := abi.ReportToProto(data[:ReportSize])
	if err != nil {
		return nil, fmt.Errorf("%w: report: %v", ErrMalformed, err)
	}
	entries, err := parseCertTable(data[ReportSize:])
	if err != nil {
		return nil, err
	}
	chain := &spb.CertificateChain{Extras: make(map[string][]byte)}
	for _, e := range entries {
		switch e.guid.String() {
		case abi.VcekGUID:
			chain.VcekCert = e.data
		case abi.VlekGUID:
			chain.VlekCert = e.data
		case abi.AskGUID:
			chain.AskCert = e.data
		case abi.ArkGUID:
			chain.ArkCert = e.data
		default:
			chain.Extras[e.guid.String()] = e.data
		}
	}
	return &spb.Attestation{Report: report, CertificateChain: chain}, nil
}

// parseCertTable decodes a GHCB certificate table. It checks every offset
// and length against the table's size (go-sev-guest's own parser can be
// made to panic by lengths that overflow 32 bits) and refuses duplicate
// GUIDs, which would make it ambiguous which certificate is meant.
func parseCertTable(b []byte) ([]certEntry, error) {
	if len(b) == 0 {
		return nil, nil
	}
	type header struct {
		guid        uuid.UUID
		off, length uint32
	}
	var hdrs []header
	end := 0
	for {
		if len(b)-end < certTableEntrySize {
			return nil, fmt.Errorf("%w: certificate table has no terminating entry", ErrMalformed)
		}
		e := b[end : end+certTableEntrySize]
		end += certTableEntrySize
		var h header
		copy(h.guid[:], e[:16])
		h.off = binary.LittleEndian.Uint32(e[16:20])
		h.length = binary.LittleEndian.Uint32(e[20:24])
		if h.guid == (uuid.UUID{}) && h.off == 0 && h.length == 0 {
			break
		}
		hdrs = append(hdrs, h)
	}
	entries := make([]certEntry, 0, len(hdrs))
	for i, h := range hdrs {
		lo, hi := uint64(h.off), uint64(h.off)+uint64(h.length)
		if lo < uint64(end) || hi > uint64(len(b)) {
			return nil, fmt.Errorf("%w: certificate table entry %d (%s) points at bytes %d to %d, outside %d to %d",
				ErrMalformed, i, h.guid, lo, hi, end, len(b))
		}
		if slices.ContainsFunc(entries, func(e certEntry) bool { return e.guid == h.guid }) {
			return nil, fmt.Errorf("%w: certificate table lists %s twice", ErrMalformed, h.guid)
		}
		entries = append(entries, certEntry{guid: h.guid, data: b[lo:hi:hi]})
	}
	return entries, nil
}

// marshalCertTable encodes entries as a GHCB certificate table, the inverse
// of parseCertTable.
func marshalCertTable(entries []certEntry) []byte {
	if len(entries) == 0 {
		return nil
	}
	size := (len(entries) + 1) * certTableEntrySize
	for _, e := range entries {
		size += len(e.data)
	}
	out := make([]byte, (len(entries)+1)*certTableEntrySize, size)
	for i, e := range entries {
		h := out[i*certTableEntrySize:]
		copy(h[:16], e.guid[:])
		binary.LittleEndian.PutUint32(h[16:20], uint32(len(out)))
		binary.LittleEndian.PutUint32(h[20:24], uint32(len(e.data)))
		out = append(out, e.data...)
	}
	return out
}
