package gaen

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen/internal/pb"
)

const (
	binName = "export.bin"
	sigName = "export.sig"

	// header starts every export.bin: "EK Export v1" padded to 16 bytes.
	header = "EK Export v1    "

	// algECDSAP256SHA256 is the OID of ECDSA with SHA-256, the one
	// signature algorithm GAEN phones verify.
	algECDSAP256SHA256 = "1.2.840.10045.4.3.2"

	// maxSignatures is how many signatures of export.sig Open looks at:
	// the format allows 10, and phones check no more.
	maxSignatures = 10

	// Field numbers of keys and revised_keys in TemporaryExposureKeyExport.
	fieldKeys        = 7
	fieldRevisedKeys = 8
)

// Open reads an export file, checks that a signature in export.sig by one of
// the trusted keys verifies over export.bin, and returns the export's
// content with [Export.SignedBy] and [Export.Digest] set.
//
// A signature counts only if its algorithm is ECDSA P-256 with SHA-256 and
// its labels match a key (see [VerifyingKey]); Open looks at the first 10
// signatures, as phones do. lim bounds the decompressed entries and the
// number of keys; zipBytes is already in memory, so bound the download
// before calling Open.
//
// Open refuses the whole file with an error wrapping one of [ErrNotZip],
// [ErrTooLarge], [ErrMissingEntry], [ErrDuplicateEntry], [ErrHeader],
// [ErrBadSignature], [ErrUnknownSigner], [ErrUnsupportedAlgorithm],
// [ErrMalformed] or [ErrTooManyKeys]; any other error means that keys holds a
// key that is not ECDSA P-256. It returns keys that cannot be matched
// instead of refusing the file for them: check each with [Key.Valid].
func Open(zipBytes []byte, keys []VerifyingKey, lim Limits) (*Export, error) {
	if len(keys) == 0 {
		return nil, errors.New("gaen: no verifying keys given")
	}
	for _, k := range keys {
		if k.Key == nil || k.Key.Curve != elliptic.P256() {
			return nil, fmt.Errorf("gaen: verifying key %q is not an ECDSA P-256 key", k.Name)
		}
	}
	lim = lim.withDefaults()

	bin, sig, err := readZip(zipBytes, lim)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(bin, []byte(header)) {
		return nil, fmt.Errorf("%w: export.bin starts with %q", ErrHeader, bin[:min(len(bin), len(header))])
	}
	digest := sha256.Sum256(bin)
	signer, err := verify(digest[:], sig, keys)
	if err != nil {
		return nil, err
	}
	// Only now, with the bytes vouched for, does the protocol buffer parser
	// see them.
	exp, err := parseExport(bin[len(header):], lim.MaxKeys)
	if err != nil {
		return nil, err
	}
	exp.SignedBy = signer
	exp.Digest = digest
	return exp, nil
}

// readZip returns the contents of export.bin and export.sig.
func readZip(zipBytes []byte, lim Limits) (bin, sig []byte, err error) {
	zr, err := zip.NewReader(bytes.NewReader(zipBytes), int64(len(zipBytes)))
	// ErrInsecurePath (names like "../x", under GODEBUG zipinsecurepath=0)
	// comes with a usable reader; Open extracts nothing to disk, and such
	// names are neither export.bin nor export.sig.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, nil, fmt.Errorf("%w: %v", ErrNotZip, err)
	}
	var binFile, sigFile *zip.File
	for _, f := range zr.File {
		var slot **zip.File
		switch f.Name {
		case binName:
			slot = &binFile
		case sigName:
			slot = &sigFile
		default:
			continue // the format has no other entries; ignore what is not read
		}
		if *slot != nil {
			return nil, nil, fmt.Errorf("%w: %s appears more than once", ErrDuplicateEntry, f.Name)
		}
		*slot = f
	}
	if binFile == nil || sigFile == nil {
		missing := binName
		if binFile != nil {
			missing = sigName
		}
		return nil, nil, fmt.Errorf("%w: no %s among the archive's %d entries", ErrMissingEntry, missing, len(zr.File))
	}
	if bin, err = readEntry(binFile, lim.MaxExportBytes); err != nil {
		return nil, nil, err
	}
	if sig, err = readEntry(sigFile, lim.MaxSignatureBytes); err != nil {
		return nil, nil, err
	}
	return bin, sig, nil
}

// readEntry decompresses f, reading at most limit bytes whatever f declares.
// It decompresses itself rather than through f.Open so that an entry that
// inflates past its declared size is told apart from other damage.
func readEntry(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%w: %s declares %d bytes, limit %d", ErrTooLarge, f.Name, f.UncompressedSize64, limit)
	}
	raw, err := f.OpenRaw()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotZip, f.Name, err)
	}
	var r io.Reader
	switch f.Method {
	case zip.Store:
		r = raw
	case zip.Deflate:
		fr := flate.NewReader(raw)
		defer fr.Close()
		r = fr
	default:
		return nil, fmt.Errorf("%w: %s uses compression method %d", ErrNotZip, f.Name, f.Method)
	}
	// The declared size is only the sender's word: read one byte past the
	// limit to learn whether the real content is larger.
	buf := bytes.NewBuffer(make([]byte, 0, min(f.UncompressedSize64, uint64(limit))+1))
	_, err = buf.ReadFrom(io.LimitReader(r, limit+1))
	data := buf.Bytes()
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s inflates past the limit of %d bytes (it declares %d)", ErrTooLarge, f.Name, limit, f.UncompressedSize64)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotZip, f.Name, err)
	}
	if uint64(len(data)) != f.UncompressedSize64 {
		return nil, fmt.Errorf("%w: %s inflates to %d bytes but declares %d", ErrNotZip, f.Name, len(data), f.UncompressedSize64)
	}
	// Like archive/zip, trust a zero CRC to mean "not recorded". The
	// signature protects export.bin either way; the CRC tells damage in
	// transit from forgery.
	if f.CRC32 != 0 && crc32.ChecksumIEEE(data) != f.CRC32 {
		return nil, fmt.Errorf("%w: %s fails its CRC-32 check", ErrNotZip, f.Name)
	}
	return data, nil
}

// verify returns the Name of the key whose signature in sig verifies over
// digest, the SHA-256 of export.bin.
func verify(digest, sig []byte, keys []VerifyingKey) (string, error) {
	var list pb.TEKSignatureList
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(sig, &list); err != nil {
		return "", fmt.Errorf("%w: export.sig: %v", ErrMalformed, err)
	}
	sigs := list.GetSignatures()
	if len(sigs) == 0 {
		return "", fmt.Errorf("%w: export.sig holds no signatures", ErrUnknownSigner)
	}
	ignored := ""
	if len(sigs) > maxSignatures {
		ignored = fmt.Sprintf(" (%d signatures past the first %d ignored)", len(sigs)-maxSignatures, maxSignatures)
		sigs = sigs[:maxSignatures]
	}
	var bad, unsupported error
	for _, s := range sigs {
		info := s.GetSignatureInfo()
		for _, k := range keys {
			if !k.labels(info) {
				continue
			}
			if alg := info.GetSignatureAlgorithm(); alg != algECDSAP256SHA256 {
				unsupported = fmt.Errorf("%w: %q in the signature labelled %s for key %q", ErrUnsupportedAlgorithm, clip(alg), label(info), k.Name)
				continue
			}
			if ecdsa.VerifyASN1(k.Key, digest, s.GetSignature()) {
				return k.Name, nil
			}
			bad = fmt.Errorf("%w: the signature labelled %s, checked with key %q%s", ErrBadSignature, label(info), k.Name, ignored)
		}
	}
	if bad != nil {
		return "", bad
	}
	if unsupported != nil {
		return "", unsupported
	}
	var seen []string
	for _, s := range sigs {
		seen = append(seen, label(s.GetSignatureInfo()))
	}
	return "", fmt.Errorf("%w: export.sig has signatures labelled %s%s", ErrUnknownSigner, strings.Join(seen, ", "), ignored)
}

// labels reports whether a signature with info claims to be by k.
func (k VerifyingKey) labels(info *pb.SignatureInfo) bool {
	if k.KeyID == "" {
		return true
	}
	return info.GetVerificationKeyId() == k.KeyID &&
		(k.KeyVersion == "" || info.GetVerificationKeyVersion() == k.KeyVersion)
}

// label formats a signature's key labels for errors.
func label(info *pb.SignatureInfo) string {
	return fmt.Sprintf("id %q version %q", clip(info.GetVerificationKeyId()), clip(info.GetVerificationKeyVersion()))
}

// clip cuts a string of export.sig short for an error message: it is
// unsigned input, and errors end up in logs.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// parseExport parses the protocol buffer of export.bin, after its header.
func parseExport(b []byte, maxKeys int) (*Export, error) {
	// Count the keys before unmarshalling: a key costs the parser a few
	// hundred bytes of memory but can take as little as 2 bytes of input.
	n, err := countKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%w: export.bin: %v", ErrMalformed, err)
	}
	if n > maxKeys {
		return nil, fmt.Errorf("%w: export.bin holds %d keys, limit %d", ErrTooManyKeys, n, maxKeys)
	}
	var m pb.TemporaryExposureKeyExport
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: export.bin: %v", ErrMalformed, err)
	}
	start, end := m.GetStartTimestamp(), m.GetEndTimestamp()
	if start > math.MaxInt64 || end > math.MaxInt64 {
		return nil, fmt.Errorf("%w: export.bin: timestamps %d..%d out of range", ErrMalformed, start, end)
	}
	return &Export{
		Region:    m.GetRegion(),
		Start:     time.Unix(int64(start), 0).UTC(),
		End:       time.Unix(int64(end), 0).UTC(),
		BatchNum:  int(m.GetBatchNum()),
		BatchSize: int(m.GetBatchSize()),
		Keys:      convertKeys(m.GetKeys()),
		Revised:   convertKeys(m.GetRevisedKeys()),
	}, nil
}

// countKeys counts the keys and revised keys in an encoded
// TemporaryExposureKeyExport without decoding them.
func countKeys(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		if num == fieldKeys || num == fieldRevisedKeys {
			n++
		}
	}
	return n, nil
}

// convertKeys converts the keys of a parsed export, recording in each what
// its fields cannot hold.
func convertKeys(ms []*pb.TemporaryExposureKey) []Key {
	if len(ms) == 0 {
		return nil
	}
	keys := make([]Key, len(ms))
	for i, m := range ms {
		k := &keys[i]
		data := m.GetKeyData()
		copy(k.TEK[:], data)
		start := m.GetRollingStartIntervalNumber()
		k.RollingStart = enid.Interval(start)
		k.RollingPeriod = int(m.GetRollingPeriod())
		k.ReportType = ReportType(m.GetReportType())
		k.DaysSinceOnset = m.GetDaysSinceOnsetOfSymptoms()
		k.HasOnset = m.DaysSinceOnsetOfSymptoms != nil
		k.TransmissionRisk = m.GetTransmissionRiskLevel()
		switch {
		case len(data) != len(k.TEK):
			k.problem = fmt.Errorf("%w: key data is %d bytes, want %d", ErrInvalidKey, len(data), len(k.TEK))
		case start < 0:
			k.problem = fmt.Errorf("%w: rolling start interval %d is negative", ErrInvalidKey, start)
		}
	}
	return keys
}
