package gaen

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"hash/crc32"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen/internal/pb"
)

// newKeyPair returns a fresh P-256 signing key labelled id/v1 and the
// verifying key that trusts it under the name name.
func newKeyPair(t testing.TB, name, id string) (SigningKey, VerifyingKey) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return SigningKey{KeyID: id, KeyVersion: "v1", Key: priv},
		VerifyingKey{Name: name, KeyID: id, KeyVersion: "v1", Key: &priv.PublicKey}
}

func sampleExport() *Export {
	day := enid.IntervalOf(time.Date(2020, 10, 1, 0, 0, 0, 0, time.UTC))
	return &Export{
		Region:    "DE",
		Start:     time.Date(2020, 10, 2, 0, 0, 0, 0, time.UTC),
		End:       time.Date(2020, 10, 3, 0, 0, 0, 0, time.UTC),
		BatchNum:  1,
		BatchSize: 1,
		Keys: []Key{
			{TEK: enid.TEK{1, 2, 3}, RollingStart: day, RollingPeriod: 144, ReportType: ConfirmedTest, DaysSinceOnset: -2, HasOnset: true},
			{TEK: enid.TEK{4, 5, 6}, RollingStart: day + 144, RollingPeriod: 100, TransmissionRisk: 6},
			{TEK: enid.TEK{7}, RollingStart: day + 288, RollingPeriod: 144, ReportType: SelfReport, DaysSinceOnset: 0, HasOnset: true},
		},
		Revised: []Key{
			{TEK: enid.TEK{9, 9}, RollingStart: day - 144, RollingPeriod: 144, ReportType: Revoked},
		},
	}
}

// entry is one zip entry of a hand-made archive.
type entry struct {
	name string
	data []byte
}

// zipOf builds a zip archive of entries, deflated.
func zipOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// unzip returns the entries of a Write result by name.
func unzip(t testing.TB, b []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, f := range zr.File {
		data, err := readEntry(f, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		m[f.Name] = data
	}
	return m
}

// binOf encodes m as export.bin.
func binOf(t testing.TB, m *pb.TemporaryExposureKeyExport) []byte {
	t.Helper()
	body, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(header), body...)
}

// sigOf returns export.sig for bin, signed by each signer under the
// algorithm OID alg.
func sigOf(t testing.TB, bin []byte, alg string, signers ...SigningKey) []byte {
	t.Helper()
	digest := sha256.Sum256(bin)
	var list pb.TEKSignatureList
	for _, s := range signers {
		sig, err := ecdsa.SignASN1(rand.Reader, s.Key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		list.Signatures = append(list.Signatures, &pb.TEKSignature{
			SignatureInfo: &pb.SignatureInfo{
				VerificationKeyId:      proto.String(s.KeyID),
				VerificationKeyVersion: proto.String(s.KeyVersion),
				SignatureAlgorithm:     proto.String(alg),
			},
			BatchNum:  proto.Int32(1),
			BatchSize: proto.Int32(1),
			Signature: sig,
		})
	}
	b, err := proto.Marshal(&list)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signedZip is a correctly signed export of an arbitrary export.bin.
func signedZip(t testing.TB, bin []byte, s SigningKey) []byte {
	t.Helper()
	return zipOf(t, entry{binName, bin}, entry{sigName, sigOf(t, bin, algECDSAP256SHA256, s)})
}

// rawEntry adds an entry whose central directory says what declared says,
// whatever data inflates to.
func rawEntry(t testing.TB, zw *zip.Writer, name string, data []byte, declared uint64) {
	t.Helper()
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	fw.Write(data)
	fw.Close()
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name:               name,
		Method:             zip.Deflate,
		CRC32:              crc32.ChecksumIEEE(data),
		CompressedSize64:   uint64(comp.Len()),
		UncompressedSize64: declared,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(comp.Bytes())
}

func TestRoundTrip(t *testing.T) {
	s, v := newKeyPair(t, "de-cwa", "262")
	want := sampleExport() // its keys are sorted by TEK, as Write sorts them
	in := sampleExport()
	slices.Reverse(in.Keys)
	b, err := Write(in, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(b, []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want.SignedBy = "de-cwa"
	want.Digest = sha256.Sum256(unzip(t, b)[binName])
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Open(Write(exp)) =\n%+v\nwant\n%+v", got, want)
	}
	for _, k := range got.Keys {
		if err := k.Valid(); err != nil {
			t.Errorf("key %x: %v", k.TEK, err)
		}
		if _, err := enid.NewKey(k.TEK, k.RollingStart, k.RollingPeriod); err != nil {
			t.Errorf("enid.NewKey of a valid key: %v", err)
		}
	}
}

// TestWriteFormat checks the bytes Write produces against the format, not
// against Open: the header, the entry names, and a signature that plain
// crypto/ecdsa verifies over the whole export.bin.
func TestWriteFormat(t *testing.T) {
	s, _ := newKeyPair(t, "x", "262")
	b, err := Write(sampleExport(), s)
	if err != nil {
		t.Fatal(err)
	}
	entries := unzip(t, b)
	if len(entries) != 2 {
		t.Fatalf("entries %v, want export.bin and export.sig", reflect.ValueOf(entries).MapKeys())
	}
	bin := entries[binName]
	if string(bin[:16]) != "EK Export v1    " {
		t.Errorf("header %q", bin[:16])
	}
	var list pb.TEKSignatureList
	if err := proto.Unmarshal(entries[sigName], &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Signatures) != 1 {
		t.Fatalf("%d signatures, want 1", len(list.Signatures))
	}
	sig := list.Signatures[0]
	info := sig.GetSignatureInfo()
	if info.GetVerificationKeyId() != "262" || info.GetVerificationKeyVersion() != "v1" || info.GetSignatureAlgorithm() != "1.2.840.10045.4.3.2" {
		t.Errorf("signature info %v", info)
	}
	digest := sha256.Sum256(bin)
	if !ecdsa.VerifyASN1(&s.Key.PublicKey, digest[:], sig.GetSignature()) {
		t.Error("signature does not verify over export.bin")
	}
	var m pb.TemporaryExposureKeyExport
	if err := proto.Unmarshal(bin[16:], &m); err != nil {
		t.Fatal(err)
	}
	if len(m.SignatureInfos) != 1 || !proto.Equal(m.SignatureInfos[0], info) {
		t.Errorf("export.bin signature_infos %v, want the one of export.sig", m.SignatureInfos)
	}
	if m.GetBatchNum() != 1 || m.GetBatchSize() != 1 || m.GetStartTimestamp() != 1601596800 {
		t.Errorf("export.bin batch %d/%d start %d", m.GetBatchNum(), m.GetBatchSize(), m.GetStartTimestamp())
	}
}

func TestOpenRefuses(t *testing.T) {
	s, v := newKeyPair(t, "de-cwa", "262")
	other, _ := newKeyPair(t, "other", "999")
	impostor, _ := newKeyPair(t, "impostor", "262") // claims the listed id
	good, err := Write(sampleExport(), s)
	if err != nil {
		t.Fatal(err)
	}
	entries := unzip(t, good)
	bin, sig := entries[binName], entries[sigName]

	tampered := bytes.Clone(bin)
	tampered[len(tampered)-1] ^= 1

	tooMany := sampleExport()
	tooMany.Keys = append(tooMany.Keys, tooMany.Keys[0])
	tooManyZip, err := Write(tooMany, s)
	if err != nil {
		t.Fatal(err)
	}

	unsupported := sigOf(t, bin, "1.2.840.10045.4.3.4", s) // ECDSA with SHA-512
	noAlg := sigOf(t, bin, "", s)

	var bomb bytes.Buffer
	zw := zip.NewWriter(&bomb)
	rawEntry(t, zw, binName, append([]byte(header), make([]byte, 1<<20)...), 100)
	rawEntry(t, zw, sigName, sig, uint64(len(sig)))
	zw.Close()

	var short bytes.Buffer
	zw = zip.NewWriter(&short)
	rawEntry(t, zw, binName, bin, uint64(len(bin))+10)
	rawEntry(t, zw, sigName, sig, uint64(len(sig)))
	zw.Close()

	var huge bytes.Buffer
	zw = zip.NewWriter(&huge)
	rawEntry(t, zw, binName, bin, 1<<40)
	rawEntry(t, zw, sigName, sig, uint64(len(sig)))
	zw.Close()

	var badCRC bytes.Buffer
	zw = zip.NewWriter(&badCRC)
	w, _ := zw.CreateRaw(&zip.FileHeader{Name: binName, Method: zip.Store, CRC32: crc32.ChecksumIEEE(bin) ^ 1,
		CompressedSize64: uint64(len(bin)), UncompressedSize64: uint64(len(bin))})
	w.Write(bin)
	rawEntry(t, zw, sigName, sig, uint64(len(sig)))
	zw.Close()

	badHeader := binOf(t, &pb.TemporaryExposureKeyExport{Region: proto.String("DE")})
	copy(badHeader, "EK Export v2    ")

	keys := []VerifyingKey{v}
	anyKey := []VerifyingKey{{Name: "de-cwa", Key: v.Key}}
	for _, c := range []struct {
		name string
		zip  []byte
		keys []VerifyingKey
		lim  Limits
		want error
	}{
		{"not a zip", []byte("EK Export v1    not a zip"), keys, Limits{}, ErrNotZip},
		{"empty input", nil, keys, Limits{}, ErrNotZip},
		{"truncated zip", good[:len(good)-10], keys, Limits{}, ErrNotZip},
		{"entry shorter than its declared size", short.Bytes(), keys, Limits{}, ErrNotZip},
		{"entry fails its CRC", badCRC.Bytes(), keys, Limits{}, ErrNotZip},
		{"declared size over limit", good, keys, Limits{MaxExportBytes: int64(len(bin)) - 1}, ErrTooLarge},
		{"declares 1 TiB", huge.Bytes(), keys, Limits{}, ErrTooLarge},
		{"declares 100 bytes, inflates to 1 MiB", bomb.Bytes(), keys, Limits{MaxExportBytes: 1 << 10}, ErrTooLarge},
		{"export.sig over limit", good, keys, Limits{MaxSignatureBytes: int64(len(sig)) - 1}, ErrTooLarge},
		{"no export.sig", zipOf(t, entry{binName, bin}), keys, Limits{}, ErrMissingEntry},
		{"no export.bin", zipOf(t, entry{sigName, sig}, entry{"Export.bin", bin}), keys, Limits{}, ErrMissingEntry},
		{"empty archive", zipOf(t), keys, Limits{}, ErrMissingEntry},
		{"two export.bin", zipOf(t, entry{binName, bin}, entry{sigName, sig}, entry{binName, tampered}), keys, Limits{}, ErrDuplicateEntry},
		{"two export.sig", zipOf(t, entry{binName, bin}, entry{sigName, sig}, entry{sigName, sig}), keys, Limits{}, ErrDuplicateEntry},
		{"wrong header", signedZip(t, badHeader, s), keys, Limits{}, ErrHeader},
		{"export.bin shorter than the header", signedZip(t, []byte("EK Export"), s), keys, Limits{}, ErrHeader},
		{"tampered export.bin", zipOf(t, entry{binName, tampered}, entry{sigName, sig}), keys, Limits{}, ErrBadSignature},
		{"listed id, other key", signedZip(t, bin, impostor), keys, Limits{}, ErrBadSignature},
		{"unlisted key, key listed without id", signedZip(t, bin, other), anyKey, Limits{}, ErrBadSignature},
		{"garbage signature", zipOf(t, entry{binName, bin}, entry{sigName, mustMarshal(t, &pb.TEKSignatureList{Signatures: []*pb.TEKSignature{{
			SignatureInfo: &pb.SignatureInfo{VerificationKeyId: proto.String("262"), VerificationKeyVersion: proto.String("v1"), SignatureAlgorithm: proto.String(algECDSAP256SHA256)},
			Signature:     []byte("not DER")}}})}), keys, Limits{}, ErrBadSignature},
		{"unlisted key", signedZip(t, bin, other), keys, Limits{}, ErrUnknownSigner},
		{"listed id, other version", signedZip(t, bin, SigningKey{KeyID: "262", KeyVersion: "v2", Key: s.Key}), keys, Limits{}, ErrUnknownSigner},
		{"no signatures", zipOf(t, entry{binName, bin}, entry{sigName, nil}), keys, Limits{}, ErrUnknownSigner},
		{"ECDSA SHA-512", zipOf(t, entry{binName, bin}, entry{sigName, unsupported}), keys, Limits{}, ErrUnsupportedAlgorithm},
		{"no algorithm", zipOf(t, entry{binName, bin}, entry{sigName, noAlg}), keys, Limits{}, ErrUnsupportedAlgorithm},
		{"garbage export.sig", zipOf(t, entry{binName, bin}, entry{sigName, []byte{0xff, 0xff, 0xff}}), keys, Limits{}, ErrMalformed},
		{"garbage protobuf, signed", signedZip(t, []byte(header+"\x0a\xff\xff\xff"), s), keys, Limits{}, ErrMalformed},
		{"truncated start_timestamp, signed", signedZip(t, []byte(header+"\x09\x01\x02"), s), keys, Limits{}, ErrMalformed},
		{"more keys than the limit", tooManyZip, keys, Limits{MaxKeys: 4}, ErrTooManyKeys},
		{"revised keys count too", good, keys, Limits{MaxKeys: 3}, ErrTooManyKeys},
		{"empty key messages count too", signedZip(t, []byte(header+strings.Repeat("\x3a\x00", 5)), s), keys, Limits{MaxKeys: 4}, ErrTooManyKeys},
	} {
		t.Run(c.name, func(t *testing.T) {
			exp, err := Open(c.zip, c.keys, c.lim)
			if !errors.Is(err, c.want) {
				t.Fatalf("Open = %v, %v; want %v", exp, err, c.want)
			}
			if exp != nil {
				t.Errorf("Open returned an export with error %v", err)
			}
		})
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenSignatureChoice checks that one good signature among others is
// enough, and that Open looks no further than the first 10.
func TestOpenSignatureChoice(t *testing.T) {
	s, v := newKeyPair(t, "de-cwa", "262")
	other, otherV := newKeyPair(t, "other", "999")
	b, err := Write(sampleExport(), other, s)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := Open(b, []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if exp.SignedBy != "de-cwa" {
		t.Errorf("SignedBy = %q", exp.SignedBy)
	}
	exp, err = Open(b, []VerifyingKey{v, otherV}, Limits{})
	if err != nil || exp.SignedBy != "other" {
		t.Errorf("with both keys listed: SignedBy %q, %v; want the first signature's, other", exp.SignedBy, err)
	}
	// An unsupported signature for the listed key does not hide a good one.
	bin := unzip(t, b)[binName]
	var list pb.TEKSignatureList
	proto.Unmarshal(sigOf(t, bin, "1.2.840.10045.4.3.4", s), &list)
	var good pb.TEKSignatureList
	proto.Unmarshal(sigOf(t, bin, algECDSAP256SHA256, s), &good)
	list.Signatures = append(list.Signatures, good.Signatures...)
	if _, err := Open(zipOf(t, entry{binName, bin}, entry{sigName, mustMarshal(t, &list)}), []VerifyingKey{v}, Limits{}); err != nil {
		t.Errorf("SHA-512 signature then a good one: %v", err)
	}

	signers := make([]SigningKey, 10, 11)
	for i := range signers {
		signers[i] = other
	}
	sig11 := sigOf(t, bin, algECDSAP256SHA256, append(signers, s)...)
	if _, err := Open(zipOf(t, entry{binName, bin}, entry{sigName, sig11}), []VerifyingKey{v}, Limits{}); !errors.Is(err, ErrUnknownSigner) {
		t.Errorf("good signature in 11th place: %v, want ErrUnknownSigner", err)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	s, v := newKeyPair(t, "de", "262")
	b, err := Write(sampleExport(), s)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, keys := range map[string][]VerifyingKey{
		"no keys":  nil,
		"nil key":  {v, {Name: "nil"}},
		"P-384":    {{Name: "p384", Key: &p384.PublicKey}},
		"also bad": {{Name: "p384", Key: &p384.PublicKey}, v},
	} {
		if _, err := Open(b, keys, Limits{}); err == nil {
			t.Errorf("%s: Open accepted", name)
		}
	}
}

// TestOpenReturnsInvalidKeys checks that keys that cannot be matched come
// back flagged instead of spoiling the file.
func TestOpenReturnsInvalidKeys(t *testing.T) {
	s, v := newKeyPair(t, "de", "262")
	tek := func(n int) []byte { return bytes.Repeat([]byte{7}, n) }
	m := &pb.TemporaryExposureKeyExport{
		StartTimestamp: proto.Uint64(1601596800),
		Region:         proto.String("DE"),
		Keys: []*pb.TemporaryExposureKey{
			{KeyData: tek(16), RollingStartIntervalNumber: proto.Int32(2669760)}, // period left out: 144
			{KeyData: tek(16), RollingStartIntervalNumber: proto.Int32(2669760), RollingPeriod: proto.Int32(0)},
			{KeyData: tek(16), RollingStartIntervalNumber: proto.Int32(2669760), RollingPeriod: proto.Int32(145)},
			{KeyData: tek(16), RollingStartIntervalNumber: proto.Int32(-144), RollingPeriod: proto.Int32(144)},
			{KeyData: tek(15), RollingStartIntervalNumber: proto.Int32(2669760), RollingPeriod: proto.Int32(144)},
			{KeyData: tek(17), RollingStartIntervalNumber: proto.Int32(2669760), RollingPeriod: proto.Int32(144)},
			{RollingStartIntervalNumber: proto.Int32(2669760)},
			{KeyData: tek(16), RollingStartIntervalNumber: proto.Int32(1), RollingPeriod: proto.Int32(144)}, // 1970: old, but valid
		},
	}
	exp, err := Open(signedZip(t, binOf(t, m), s), []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	wantValid := []bool{true, false, false, false, false, false, false, true}
	if len(exp.Keys) != len(wantValid) {
		t.Fatalf("%d keys, want %d", len(exp.Keys), len(wantValid))
	}
	for i, k := range exp.Keys {
		err := k.Valid()
		if (err == nil) != wantValid[i] {
			t.Errorf("key %d: Valid() = %v, want valid %v", i, err, wantValid[i])
		}
		if err != nil && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("key %d: %v does not wrap ErrInvalidKey", i, err)
		}
	}
	if p := exp.Keys[0].RollingPeriod; p != enid.RollingPeriod {
		t.Errorf("absent rolling period read as %d, want %d", p, enid.RollingPeriod)
	}
	if exp.Keys[0].HasOnset || exp.Keys[0].ReportType != ReportUnknown {
		t.Errorf("absent onset and report type read as %+v", exp.Keys[0])
	}
}

func TestKeyValid(t *testing.T) {
	for _, c := range []struct {
		k    Key
		want bool
	}{
		{Key{RollingStart: 100, RollingPeriod: 1}, true},
		{Key{RollingStart: 100, RollingPeriod: 144}, true},
		{Key{RollingStart: 100, RollingPeriod: 0}, false},
		{Key{RollingStart: 100, RollingPeriod: -1}, false},
		{Key{RollingStart: 100, RollingPeriod: 145}, false},
		{Key{RollingStart: 1<<32 - 144, RollingPeriod: 144}, false},
		{Key{RollingStart: 1<<32 - 145, RollingPeriod: 144}, true},
	} {
		err := c.k.Valid()
		if (err == nil) != c.want {
			t.Errorf("%+v: Valid() = %v, want valid %v", c.k, err, c.want)
		}
		// enid.NewKey must agree, or the importer would skip keys it could use.
		_, nerr := enid.NewKey(c.k.TEK, c.k.RollingStart, c.k.RollingPeriod)
		if (nerr == nil) != c.want {
			t.Errorf("%+v: enid.NewKey disagrees with Valid: %v", c.k, nerr)
		}
	}
}

// TestDigest checks that Digest recognises the same content however often
// it is signed, and tells different content apart.
func TestDigest(t *testing.T) {
	s, v := newKeyPair(t, "de", "262")
	exp := sampleExport()
	a, _ := Write(exp, s)
	b, _ := Write(exp, s)
	if bytes.Equal(a, b) {
		t.Fatal("two ECDSA signatures came out equal; the test shows nothing")
	}
	ea, err := Open(a, []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := Open(b, []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ea.Digest != eb.Digest {
		t.Error("same content, different digests")
	}
	exp.End = exp.End.Add(time.Second)
	c, _ := Write(exp, s)
	ec, err := Open(c, []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ec.Digest == ea.Digest {
		t.Error("different content, same digest")
	}
}

func TestWriteRefuses(t *testing.T) {
	s, _ := newKeyPair(t, "de", "262")
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, c := range map[string]struct {
		exp     *Export
		signers []SigningKey
	}{
		"no signer":      {sampleExport(), nil},
		"nil key":        {sampleExport(), []SigningKey{{KeyID: "x"}}},
		"P-384":          {sampleExport(), []SigningKey{{KeyID: "x", Key: p384}}},
		"zero time":      {&Export{}, []SigningKey{s}},
		"negative batch": {&Export{Start: time.Unix(0, 0), End: time.Unix(0, 0), BatchNum: -1}, []SigningKey{s}},
		"start past int32": {&Export{Start: time.Unix(0, 0), End: time.Unix(0, 0),
			Keys: []Key{{RollingStart: 1 << 31, RollingPeriod: 1}}}, []SigningKey{s}},
	} {
		if _, err := Write(c.exp, c.signers...); err == nil {
			t.Errorf("%s: Write accepted", name)
		}
	}
}

func TestWriteDefaultsBatch(t *testing.T) {
	s, v := newKeyPair(t, "de", "262")
	b, err := Write(&Export{Region: "DE", Start: time.Unix(0, 0), End: time.Unix(600, 0)}, s)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := Open(b, []VerifyingKey{v}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if exp.BatchNum != 1 || exp.BatchSize != 1 || exp.Keys != nil || exp.Revised != nil {
		t.Errorf("empty export read back as %+v", exp)
	}
}

func TestReportTypeMatchesFormat(t *testing.T) {
	for _, rt := range []ReportType{ReportUnknown, ConfirmedTest, ConfirmedClinicalDiagnosis, SelfReport, Recursive, Revoked} {
		if got := pb.TemporaryExposureKey_ReportType(rt).String(); got != rt.String() {
			t.Errorf("ReportType %d is %s here, %s in the format", rt, rt, got)
		}
	}
	if got := ReportType(9).String(); got != "ReportType(9)" {
		t.Errorf("unknown report type prints as %q", got)
	}
}

func TestParsePublicKeyPEM(t *testing.T) {
	pemOf := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	spki := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	good := pemOf("PUBLIC KEY", spki(&p256.PublicKey))

	got, err := ParsePublicKeyPEM(append([]byte("a comment before the key\n"), good...))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(&p256.PublicKey) {
		t.Error("parsed key differs")
	}
	privDER, _ := x509.MarshalECPrivateKey(p256)
	for name, b := range map[string][]byte{
		"empty":       nil,
		"P-384":       pemOf("PUBLIC KEY", spki(&p384.PublicKey)),
		"Ed25519":     pemOf("PUBLIC KEY", spki(edPub)),
		"private key": pemOf("EC PRIVATE KEY", privDER),
		"two keys":    append(bytes.Clone(good), good...),
		"bad DER":     pemOf("PUBLIC KEY", []byte("nope")),
	} {
		if _, err := ParsePublicKeyPEM(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPublishedExport opens an export that this package did not write: the
// example of Google's reference key server, github.com/google/
// exposure-notifications-server, examples/export/
// testExport-2-records-1-of-1.zip and its public.pem (Apache-2.0). They are
// not part of this repository; see testdata/README.md to run the test.
func TestPublishedExport(t *testing.T) {
	zipBytes, err := os.ReadFile("testdata/en-server-example.zip")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("testdata/en-server-example.zip is absent; see testdata/README.md")
	}
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile("testdata/en-server-example.pem")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := Open(zipBytes, []VerifyingKey{{Name: "en-server", KeyID: "some_id", KeyVersion: "1", Key: pub}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	tek := func(b64 string) enid.TEK {
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		return enid.TEK(b)
	}
	// The keys are those of the example's keys.json.
	want := &Export{
		Region: "US", Start: time.Unix(1590159600, 0).UTC(), End: time.Unix(1590246000, 0).UTC(),
		BatchNum: 1, BatchSize: 1,
		Keys: []Key{
			{TEK: tek("Fy/EgOWYSQw0F3YEM5sVQw=="), RollingStart: 2649980, RollingPeriod: 1, TransmissionRisk: 8},
			{TEK: tek("K2MFOsSDI43hdhaehh89zQ=="), RollingStart: 2649866, RollingPeriod: 114, TransmissionRisk: 1},
		},
		SignedBy: "en-server",
		Digest:   exp.Digest,
	}
	if !reflect.DeepEqual(exp, want) {
		t.Errorf("Open =\n%+v\nwant\n%+v", exp, want)
	}
	other, _ := newKeyPair(t, "other", "some_id")
	if _, err := Open(zipBytes, []VerifyingKey{{Name: "other", KeyID: "some_id", Key: &other.Key.PublicKey}}, Limits{}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("with another key: %v, want ErrBadSignature", err)
	}
}
