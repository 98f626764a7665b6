package gaen

import (
	"archive/zip"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/conftrace/conftrace/gaen/internal/pb"
)

// Write returns an export file of exp's region, window, batch and keys,
// signed by every one of signers (a key server rolling its key over signs
// with the old and the new one). It ignores exp.SignedBy and exp.Digest.
//
// Write sorts the keys by TEK, so that their order does not tell which keys
// belong to the same user. It writes them as they are, invalid ones
// included, so that tests and simulations can feed an importer keys it must
// skip. It refuses only what the format cannot hold: a window before 1970, a
// negative batch number, a rolling start or period past the format's int32
// range.
func Write(exp *Export, signers ...SigningKey) ([]byte, error) {
	if len(signers) == 0 {
		return nil, errors.New("gaen: Write needs at least one signing key")
	}
	for _, s := range signers {
		if s.Key == nil || s.Key.Curve != elliptic.P256() {
			return nil, fmt.Errorf("gaen: signing key %q is not an ECDSA P-256 key", s.KeyID)
		}
	}
	start, end := exp.Start.Unix(), exp.End.Unix()
	if start < 0 || end < 0 {
		return nil, fmt.Errorf("gaen: export window %v..%v starts before 1970", exp.Start, exp.End)
	}
	for _, n := range []int{exp.BatchNum, exp.BatchSize} {
		if n < 0 || n > math.MaxInt32 {
			return nil, fmt.Errorf("gaen: batch %d of %d does not fit the format's int32", exp.BatchNum, exp.BatchSize)
		}
	}
	keys, err := encodeKeys(exp.Keys)
	if err != nil {
		return nil, err
	}
	revised, err := encodeKeys(exp.Revised)
	if err != nil {
		return nil, err
	}
	infos := make([]*pb.SignatureInfo, len(signers))
	for i, s := range signers {
		infos[i] = &pb.SignatureInfo{
			VerificationKeyId:      proto.String(s.KeyID),
			VerificationKeyVersion: proto.String(s.KeyVersion),
			SignatureAlgorithm:     proto.String(algECDSAP256SHA256),
		}
	}
	m := &pb.TemporaryExposureKeyExport{
		StartTimestamp: proto.Uint64(uint64(start)),
		EndTimestamp:   proto.Uint64(uint64(end)),
		Region:         proto.String(exp.Region),
		BatchNum:       proto.Int32(oneIfZero(exp.BatchNum)),
		BatchSize:      proto.Int32(oneIfZero(exp.BatchSize)),
		SignatureInfos: infos,
		Keys:           keys,
		RevisedKeys:    revised,
	}
	body, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gaen: encoding export.bin: %w", err)
	}
	bin := append([]byte(header), body...)

	digest := sha256.Sum256(bin)
	var list pb.TEKSignatureList
	for i, s := range signers {
		sig, err := ecdsa.SignASN1(rand.Reader, s.Key, digest[:])
		if err != nil {
			return nil, fmt.Errorf("gaen: signing with key %q: %w", s.KeyID, err)
		}
		list.Signatures = append(list.Signatures, &pb.TEKSignature{
			SignatureInfo: infos[i],
			BatchNum:      m.BatchNum,
			BatchSize:     m.BatchSize,
			Signature:     sig,
		})
	}
	sig, err := proto.Marshal(&list)
	if err != nil {
		return nil, fmt.Errorf("gaen: encoding export.sig: %w", err)
	}

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{{binName, bin}, {sigName, sig}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Deflate})
		if err != nil {
			return nil, fmt.Errorf("gaen: zip: %w", err)
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, fmt.Errorf("gaen: zip: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gaen: zip: %w", err)
	}
	return buf.Bytes(), nil
}

// oneIfZero returns n, or 1 for 0: exports are numbered from 1.
func oneIfZero(n int) int32 {
	if n == 0 {
		return 1
	}
	return int32(n)
}

// encodeKeys converts keys to their protocol buffer form, sorted by TEK as
// key servers sort them: in the caller's order, the keys of one user's
// consecutive days would likely sit together and could be linked.
func encodeKeys(keys []Key) ([]*pb.TemporaryExposureKey, error) {
	keys = slices.SortedFunc(slices.Values(keys), func(a, b Key) int { return bytes.Compare(a.TEK[:], b.TEK[:]) })
	ms := make([]*pb.TemporaryExposureKey, len(keys))
	for i, k := range keys {
		if k.RollingStart > math.MaxInt32 || k.RollingPeriod < math.MinInt32 || k.RollingPeriod > math.MaxInt32 {
			return nil, fmt.Errorf("gaen: a key's rolling start %d or period %d does not fit the format's int32", k.RollingStart, k.RollingPeriod)
		}
		m := &pb.TemporaryExposureKey{
			KeyData:                    k.TEK[:],
			RollingStartIntervalNumber: proto.Int32(int32(k.RollingStart)),
			// Written even when it is the default of 144, so that what is
			// read back is what was written.
			RollingPeriod: proto.Int32(int32(k.RollingPeriod)),
		}
		if k.ReportType != ReportUnknown {
			m.ReportType = pb.TemporaryExposureKey_ReportType(k.ReportType).Enum()
		}
		if k.HasOnset {
			m.DaysSinceOnsetOfSymptoms = proto.Int32(k.DaysSinceOnset)
		}
		if k.TransmissionRisk != 0 {
			m.TransmissionRiskLevel = proto.Int32(k.TransmissionRisk)
		}
		ms[i] = m
	}
	return ms, nil
}
