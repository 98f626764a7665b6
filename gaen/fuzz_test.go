package gaen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/conftrace/conftrace/gaen/internal/pb"
)

// fuzzKey is a fixed signing key, so that the seed corpus under
// testdata/fuzz/FuzzOpen stays signed by the key the fuzz target trusts.
func fuzzKey(t testing.TB) (SigningKey, VerifyingKey) {
	t.Helper()
	d := sha256.Sum256([]byte("gaen fuzz signing key"))
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return SigningKey{KeyID: "fuzz", KeyVersion: "v1", Key: priv},
		VerifyingKey{Name: "fuzz", KeyID: "fuzz", Key: &priv.PublicKey}
}

// FuzzOpen checks that Open never panics and that what it accepts keeps
// within its limits.
func FuzzOpen(f *testing.F) {
	s, v := fuzzKey(f)
	good, err := Write(sampleExport(), s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	odd := binOf(f, &pb.TemporaryExposureKeyExport{Keys: []*pb.TemporaryExposureKey{
		{KeyData: []byte{1}, RollingStartIntervalNumber: proto.Int32(-1), RollingPeriod: proto.Int32(0)},
		{DaysSinceOnsetOfSymptoms: proto.Int32(-14), ReportType: pb.TemporaryExposureKey_REVOKED.Enum()},
	}})
	f.Add(signedZip(f, odd, s))
	f.Add(odd) // not a zip: fuzzes the protocol buffer parser below
	lim := Limits{MaxExportBytes: 1 << 16, MaxSignatureBytes: 1 << 12, MaxKeys: 50}

	f.Fuzz(func(t *testing.T, b []byte) {
		exp, err := Open(b, []VerifyingKey{v}, lim)
		if err == nil {
			if exp.SignedBy != v.Name {
				t.Errorf("SignedBy %q", exp.SignedBy)
			}
			checkKeys(t, exp)
		}
		// The fuzzer cannot forge signatures, so the parser that only
		// signed bytes reach gets the input directly as well.
		if len(b) >= len(header) {
			if exp, err := parseExport(b[len(header):], lim.MaxKeys); err == nil {
				checkKeys(t, exp)
			}
		}
	})
}

func checkKeys(t *testing.T, exp *Export) {
	if n := len(exp.Keys) + len(exp.Revised); n > 50 {
		t.Errorf("%d keys past the limit", n)
	}
	for _, k := range append(exp.Keys, exp.Revised...) {
		if k.Valid() == nil && (k.RollingPeriod < 1 || k.RollingPeriod > 144) {
			t.Errorf("key with rolling period %d passes Valid", k.RollingPeriod)
		}
	}
}
