package attest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/ohttp"
)

// simAttester attests with a sim platform key, as the simulated TEE does.
type simAttester struct {
	key         ed25519.PrivateKey
	measurement [sha256.Size]byte
	err         error
}

func (a simAttester) TEE() attest.TEE { return attest.Sim }

func (a simAttester) Attest(ctx context.Context, rd attest.ReportData) (attest.Evidence, error) {
	if a.err != nil {
		return attest.Evidence{}, a.err
	}
	data, err := sim.Sign(a.key, sim.Claims{Measurement: a.measurement, ReportData: rd})
	if err != nil {
		return attest.Evidence{}, err
	}
	return attest.Evidence{TEE: attest.Sim, Data: data}, nil
}

func newAttester(t testing.TB) simAttester {
	return simAttester{
		key:         ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)),
		measurement: sha256.Sum256([]byte("conftrace backend")),
	}
}

var allowSim = sim.NewVerifier(sim.VerifierOptions{AllowSimulated: true})

// keyConfigs returns "application/ohttp-keys" bytes holding the key
// configuration of RFC 9458's example with the given key ID.
func keyConfigs(t testing.TB, keyID byte) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/rfc9458-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		KeyConfig string `json:"key_config"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	kc, err := hex.DecodeString(v.KeyConfig)
	if err != nil {
		t.Fatal(err)
	}
	kc[0] = keyID
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(kc))), kc...)
}

const testPolicy = `{
  "version": 1,
  "retention_days": 14,
  "health_authorities": ["R&D <lab>"],
  "risk": {"min_duration_minutes": 15, "max_attenuation_db": 63}
}`

// The validity period of the tests' bundles, and a time inside it.
var (
	issuedAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	notAfter = issuedAt.Add(24 * time.Hour)
	now      = issuedAt.Add(time.Hour)
)

// certKey is the certificate key of the tests' bundles, otherKey another.
var (
	certKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{10}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
)

// contents returns a bundle of kc, policy and certKey, valid for the
// tests' period, without evidence.
func contents(kc []byte, policy string) attest.Bundle {
	return attest.Bundle{KeyConfigs: kc, Policy: []byte(policy), IssuedAt: issuedAt.Unix(), NotAfter: notAfter.Unix(), CertificateKey: certKey}
}

func newBundle(t testing.TB) (simAttester, attest.Bundle) {
	t.Helper()
	a := newAttester(t)
	b, err := attest.NewBundle(context.Background(), a, contents(keyConfigs(t, 1), testPolicy))
	if err != nil {
		t.Fatalf("NewBundle: %v", err)
	}
	return a, b
}

func simExpectations(a simAttester) attest.Expectations {
	return attest.Expectations{AllowSimulated: true, Measurements: [][]byte{a.measurement[:]}}
}

func compact(t testing.TB, s string) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBundleVerifies(t *testing.T) {
	a, b := newBundle(t)
	vb, err := attest.VerifyBundle(context.Background(), b, now, simExpectations(a), allowSim)
	if err != nil {
		t.Fatalf("VerifyBundle: %v", err)
	}
	want, err := ohttp.ParseKeyConfigs(keyConfigs(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(vb.KeyConfigs, want) {
		t.Errorf("key configs %+v, want %+v", vb.KeyConfigs, want)
	}
	// The policy comes back as a readable, equivalent JSON document.
	var got, orig any
	if err := json.Unmarshal(vb.Policy, &got); err != nil {
		t.Fatalf("verified policy is not JSON: %v", err)
	}
	json.Unmarshal([]byte(testPolicy), &orig)
	if !reflect.DeepEqual(got, orig) {
		t.Errorf("policy %s, want %s", vb.Policy, testPolicy)
	}
	if vb.Identity.TEE != attest.Sim || !bytes.Equal(vb.Identity.Measurement, a.measurement[:]) {
		t.Errorf("identity %+v", vb.Identity)
	}
	if !vb.CertificateKey.Equal(certKey) {
		t.Errorf("certificate key %x, want %x", vb.CertificateKey, certKey)
	}
}

// TestBundleJSON checks that a bundle survives being served and read as
// JSON, whichever way the server escapes HTML characters, and that its
// fields have the documented names.
func TestBundleJSON(t *testing.T) {
	a, b := newBundle(t)

	marshaled, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var unescaped bytes.Buffer
	enc := json.NewEncoder(&unescaped)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "\t")
	if err := enc.Encode(b); err != nil {
		t.Fatal(err)
	}

	for name, data := range map[string][]byte{"json.Marshal": marshaled, "unescaped, indented": unescaped.Bytes()} {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(data, &fields); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"evidence", "ohttp_keys", "policy", "issued_at", "not_after", "certificate_key"} {
			if _, ok := fields[f]; !ok {
				t.Errorf("%s: bundle JSON has no %q field: %s", name, f, data)
			}
		}
		if !bytes.HasPrefix(bytes.TrimSpace(fields["policy"]), []byte("{")) {
			t.Errorf("%s: policy is not inline JSON: %s", name, fields["policy"])
		}
		var got attest.Bundle
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if _, err := attest.VerifyBundle(context.Background(), got, now, simExpectations(a), allowSim); err != nil {
			t.Errorf("%s: decoded bundle does not verify: %v", name, err)
		}
	}
}

func TestBundlePolicyWhitespace(t *testing.T) {
	a, b := newBundle(t)
	var indented bytes.Buffer
	if err := json.Indent(&indented, b.Policy, "\n  ", "\t\t"); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{
		"indented":       indented.Bytes(),
		"as written":     []byte(testPolicy),
		"compact":        compact(t, testPolicy),
		"padded":         []byte(" \r\n" + testPolicy + "\n\n"),
		"html unescaped": []byte(strings.ReplaceAll(string(b.Policy), `\u0026`, `&`)),
	} {
		b.Policy = p
		if _, err := attest.VerifyBundle(context.Background(), b, now, simExpectations(a), allowSim); err != nil {
			t.Errorf("%s policy: %v", name, err)
		}
	}
}

func TestBundleSwapped(t *testing.T) {
	a, good := newBundle(t)
	tests := []struct {
		name string
		edit func(b *attest.Bundle)
	}{
		{"other key configs", func(b *attest.Bundle) { b.KeyConfigs = keyConfigs(t, 2) }},
		{"extra key config", func(b *attest.Bundle) { b.KeyConfigs = append(keyConfigs(t, 1), keyConfigs(t, 2)...) }},
		{"other policy", func(b *attest.Bundle) {
			b.Policy = []byte(strings.Replace(testPolicy, `"retention_days": 14`, `"retention_days": 140`, 1))
		}},
		{"policy keys reordered", func(b *attest.Bundle) {
			b.Policy = []byte(`{"retention_days":14,"version":1,"health_authorities":["R\u0026D \u003clab\u003e"],"risk":{"min_duration_minutes":15,"max_attenuation_db":63}}`)
		}},
		{"policy string escaped differently", func(b *attest.Bundle) {
			b.Policy = []byte(strings.Replace(string(b.Policy), "lab", `l\u0061b`, 1))
		}},
		{"issued earlier", func(b *attest.Bundle) { b.IssuedAt-- }},
		{"valid longer", func(b *attest.Bundle) { b.NotAfter += 3600 }},
		{"release added", func(b *attest.Bundle) { b.Release = []byte("conftrace release v1\n") }},
		// Whoever swaps the certificate key could sign certificates that
		// verifiers would take for the enclave's.
		{"certificate key swapped", func(b *attest.Bundle) { b.CertificateKey = otherKey }},
		{"certificate key removed", func(b *attest.Bundle) { b.CertificateKey = nil }},
		{"evidence from another bundle", func(b *attest.Bundle) {
			other, err := attest.NewBundle(context.Background(), a, contents(keyConfigs(t, 2), testPolicy))
			if err != nil {
				t.Fatal(err)
			}
			b.Evidence = other.Evidence
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := good
			tt.edit(&b)
			_, err := attest.VerifyBundle(context.Background(), b, now, simExpectations(a), allowSim)
			var me *attest.MismatchError
			if !errors.As(err, &me) || me.Field != "report_data" {
				t.Fatalf("VerifyBundle: %v, want a report_data mismatch", err)
			}
			if !strings.Contains(err.Error(), "not the attested ones") {
				t.Errorf("error %q does not say the bundle's contents are not the attested ones", err)
			}
		})
	}
}

func TestBundleRefused(t *testing.T) {
	a, b := newBundle(t)
	other := sha256.Sum256([]byte("another backend"))
	tests := []struct {
		name      string
		b         attest.Bundle
		exp       attest.Expectations
		v         attest.Verifier
		wantErr   error
		wantField string
	}{
		{name: "wrong measurement", b: b, exp: attest.Expectations{AllowSimulated: true, Measurements: [][]byte{other[:]}}, v: allowSim, wantField: "measurement"},
		{name: "simulated not allowed", b: b, exp: attest.Expectations{Measurements: [][]byte{a.measurement[:]}}, v: allowSim, wantErr: attest.ErrSimulated},
		{name: "verifier refuses sim", b: b, exp: simExpectations(a), v: &sim.Verifier{}, wantErr: attest.ErrSimulated},
		{name: "tampered evidence", b: func() attest.Bundle {
			c := b
			c.Evidence.Data = bytes.Clone(b.Evidence.Data)
			c.Evidence.Data[len(c.Evidence.Data)-1] ^= 1
			return c
		}(), exp: simExpectations(a), v: allowSim, wantErr: sim.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := attest.VerifyBundle(context.Background(), tt.b, now, tt.exp, tt.v)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifyBundle: %v, want %v", err, tt.wantErr)
			}
			if tt.wantField != "" {
				var me *attest.MismatchError
				if !errors.As(err, &me) || me.Field != tt.wantField {
					t.Fatalf("VerifyBundle: %v, want a %s mismatch", err, tt.wantField)
				}
			}
		})
	}
}

func TestBundleMalformed(t *testing.T) {
	ctx := context.Background()
	a, good := newBundle(t)

	// Evidence that binds key configurations that do not parse: only an
	// attacker-controlled attester would make it, and it must not pass.
	junk := []byte{0, 3, 1, 2, 3}
	rd, err := attest.BindReportData(contents(junk, testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := a.Attest(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		b    attest.Bundle
	}{
		{"empty bundle", attest.Bundle{}},
		{"no policy", attest.Bundle{Evidence: good.Evidence, KeyConfigs: good.KeyConfigs, IssuedAt: good.IssuedAt, NotAfter: good.NotAfter}},
		{"policy not JSON", attest.Bundle{Evidence: good.Evidence, KeyConfigs: good.KeyConfigs, Policy: []byte("{version: 1}"), IssuedAt: good.IssuedAt, NotAfter: good.NotAfter}},
		{"no validity", attest.Bundle{Evidence: good.Evidence, KeyConfigs: good.KeyConfigs, Policy: good.Policy}},
		{"attested junk key configs", func() attest.Bundle { b := contents(junk, testPolicy); b.Evidence = ev; return b }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if vb, err := attest.VerifyBundle(ctx, tt.b, now, simExpectations(a), allowSim); err == nil {
				t.Fatalf("VerifyBundle succeeded: %+v", vb)
			}
		})
	}
}

// TestBundleCertificateKeyLength checks that a bundle whose evidence binds
// a certificate key that is not an Ed25519 public key is refused, though
// only an attacker's attester would bind one.
func TestBundleCertificateKeyLength(t *testing.T) {
	ctx := context.Background()
	a, good := newBundle(t)
	b := contents(good.KeyConfigs, testPolicy)
	b.CertificateKey = certKey[:31]
	if _, err := attest.BindReportData(b); err == nil || !strings.Contains(err.Error(), "certificate key") {
		t.Fatalf("BindReportData of a 31-byte certificate key: %v, want a refusal of the key", err)
	}
	// The binding as documented, which BindReportData refuses to compute.
	h := sha512.New()
	h.Write([]byte("conftrace/attest bundle v3\x00"))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(b.IssuedAt)))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(b.NotAfter)))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b.KeyConfigs))))
	h.Write(b.KeyConfigs)
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(good.Policy))))
	h.Write(good.Policy)
	r := sha256.Sum256(nil)
	h.Write(r[:])
	h.Write(binary.BigEndian.AppendUint64(nil, 31))
	h.Write(b.CertificateKey)
	ev, err := a.Attest(ctx, attest.ReportData(h.Sum(nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.Evidence = ev
	_, err = attest.VerifyBundle(ctx, b, now, simExpectations(a), allowSim)
	if err == nil || !strings.Contains(err.Error(), "certificate key is 31 bytes") {
		t.Fatalf("VerifyBundle: %v, want a refusal of the 31-byte certificate key", err)
	}
}

func TestNewBundleErrors(t *testing.T) {
	ctx := context.Background()
	a := newAttester(t)
	errTEE := errors.New("TEE unavailable")
	tests := []struct {
		name    string
		a       attest.Attester
		kc      []byte
		policy  string
		wantErr error
		// issuedAt and notAfter, if not zero, replace the tests' period.
		issuedAt, notAfter time.Time
		// certKey, if not nil, replaces the certificate key.
		certKey ed25519.PublicKey
	}{
		{name: "policy not JSON", a: a, kc: keyConfigs(t, 1), policy: "{"},
		{name: "empty policy", a: a, kc: keyConfigs(t, 1), policy: ""},
		{name: "no key configs", a: a, kc: nil, policy: testPolicy},
		{name: "junk key configs", a: a, kc: []byte{0, 3, 1, 2, 3}, policy: testPolicy},
		{name: "attester fails", a: simAttester{err: errTEE}, kc: keyConfigs(t, 1), policy: testPolicy, wantErr: errTEE},
		{name: "empty validity", a: a, kc: keyConfigs(t, 1), policy: testPolicy, notAfter: issuedAt},
		{name: "validity before 1970", a: a, kc: keyConfigs(t, 1), policy: testPolicy, issuedAt: time.Unix(-10, 0)},
		{name: "certificate key of 31 bytes", a: a, kc: keyConfigs(t, 1), policy: testPolicy, certKey: certKey[:31]},
		{name: "certificate key of 33 bytes", a: a, kc: keyConfigs(t, 1), policy: testPolicy, certKey: append(bytes.Clone(certKey), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := contents(tt.kc, tt.policy)
			if tt.certKey != nil {
				b.CertificateKey = tt.certKey
			}
			if !tt.issuedAt.IsZero() {
				b.IssuedAt = tt.issuedAt.Unix()
			}
			if !tt.notAfter.IsZero() {
				b.NotAfter = tt.notAfter.Unix()
			}
			_, err := attest.NewBundle(ctx, tt.a, b)
			if err == nil {
				t.Fatal("NewBundle succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewBundle: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestBindReportDataConstruction recomputes the binding as its doc comment
// describes it, so an auditor's recipe and the code cannot drift apart.
func TestBindReportDataConstruction(t *testing.T) {
	kc := keyConfigs(t, 1)
	policy := []byte("{ \"a\" : \"x<y\" ,\n \"b\": [1, 2] }")
	canon := []byte(`{"a":"x\u003cy","b":[1,2]}`)
	release := []byte("conftrace release v1\nsequence 1\n")

	for _, tc := range []struct {
		rel []byte
		key ed25519.PublicKey
	}{{nil, nil}, {release, nil}, {nil, certKey}, {release, certKey}} {
		rel := tc.rel
		var msg []byte
		msg = append(msg, "conftrace/attest bundle v3\x00"...)
		msg = binary.BigEndian.AppendUint64(msg, uint64(issuedAt.Unix()))
		msg = binary.BigEndian.AppendUint64(msg, uint64(notAfter.Unix()))
		msg = binary.BigEndian.AppendUint64(msg, uint64(len(kc)))
		msg = append(msg, kc...)
		msg = binary.BigEndian.AppendUint64(msg, uint64(len(canon)))
		msg = append(msg, canon...)
		rh := sha256.Sum256(rel)
		msg = append(msg, rh[:]...)
		msg = binary.BigEndian.AppendUint64(msg, uint64(len(tc.key)))
		msg = append(msg, tc.key...)
		want := sha512.Sum512(msg)

		b := contents(kc, string(policy))
		b.Release, b.CertificateKey = rel, tc.key
		got, err := attest.BindReportData(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != attest.ReportData(want) {
			t.Errorf("release %q: BindReportData = %x, want %x", rel, got, want)
		}
		// The canonical form is also what NewBundle publishes.
		nb, err := attest.NewBundle(context.Background(), newAttester(t), b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(nb.Policy, canon) || !bytes.Equal(nb.Release, rel) || nb.IssuedAt != b.IssuedAt || nb.NotAfter != b.NotAfter || !bytes.Equal(nb.CertificateKey, tc.key) {
			t.Errorf("NewBundle published %s, release %q, %d to %d; want %s, %q, %d to %d",
				nb.Policy, nb.Release, nb.IssuedAt, nb.NotAfter, canon, rel, b.IssuedAt, b.NotAfter)
		}
	}
}

// TestAuditorRecipe runs the shell recipe of BindReportData's documentation,
// as written there, on a bundle with a release statement and on one
// without, and checks that it computes the report data the evidence binds.
func TestAuditorRecipe(t *testing.T) {
	for _, tool := range []string{"sh", "jq", "base64", "xxd", "sha256sum", "sha512sum", "sed", "tr", "wc", "cut"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s to run the recipe with", tool)
		}
	}
	src, err := os.ReadFile("bundle.go")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(src), "with common tools:\n//\n")
	if !ok {
		t.Fatal("bundle.go has no auditor's recipe")
	}
	var script strings.Builder
	for _, l := range strings.Split(after, "\n") {
		cmd, ok := strings.CutPrefix(l, "//\t")
		if !ok {
			break
		}
		script.WriteString(cmd + "\n")
	}
	a := newAttester(t)
	for i, rel := range [][]byte{nil, []byte("conftrace release v1\nnote R&D <lab>\n")} {
		b := contents(keyConfigs(t, 3), testPolicy)
		b.Release = rel
		if i == 0 {
			b.CertificateKey = nil // the recipe with an empty key file
		}
		b, err := attest.NewBundle(context.Background(), a, b)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		j, err := json.MarshalIndent(b, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bundle.json"), j, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-e", "-c", script.String())
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the recipe failed: %v\n%s\n%s", err, script.String(), out)
		}
		want, err := attest.BindReportData(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(out)); len(got) == 0 || got[0] != hex.EncodeToString(want[:]) {
			t.Errorf("release %q: the recipe printed %q, want %x", rel, out, want)
		}
	}
}

// TestBindReportDataSeparatesFields checks that the length prefixes keep
// bytes from moving between the key configurations and the policy.
func TestBindReportDataSeparatesFields(t *testing.T) {
	x, err := attest.BindReportData(contents([]byte("1"), "2"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := attest.BindReportData(contents(nil, "12"))
	if err != nil {
		t.Fatal(err)
	}
	if x == y {
		t.Error("moving a byte from the key configs to the policy kept the binding")
	}
}

// A bundle is usable from a little before it was issued (phones' clocks
// are a few minutes off) until NotAfter, and no longer: a bundle
// replayed after NotAfter, or one issued in the future, is refused.
func TestBundleValidity(t *testing.T) {
	a, b := newBundle(t)
	for _, tc := range []struct {
		name    string
		at      time.Time
		wantErr error
	}{
		{"at issue", issuedAt, nil},
		{"a clock a few minutes slow", issuedAt.Add(-attest.MaxClockSkew), nil},
		{"the last second", notAfter.Add(-time.Second), nil},
		{"past not_after", notAfter, attest.ErrBundleExpired},
		{"a year later", notAfter.AddDate(1, 0, 0), attest.ErrBundleExpired},
		{"issued in the future", issuedAt.Add(-attest.MaxClockSkew - time.Second), attest.ErrBundleNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vb, err := attest.VerifyBundle(context.Background(), b, tc.at, simExpectations(a), allowSim)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("VerifyBundle: %v", err)
				}
				if !vb.IssuedAt.Equal(issuedAt) || !vb.NotAfter.Equal(notAfter) || vb.Lifetime() != 24*time.Hour {
					t.Errorf("verified validity %v to %v, want %v to %v", vb.IssuedAt, vb.NotAfter, issuedAt, notAfter)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("VerifyBundle: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzBindReportData checks that the binding never panics and ignores
// whitespace and HTML escaping in the policy, as the JSON encodings of a
// bundle do.
func FuzzBindReportData(f *testing.F) {
	f.Add([]byte{0, 1, 2}, []byte(testPolicy))
	f.Add([]byte{}, []byte(`"<&>\u2028"`))
	f.Add([]byte{}, []byte(`[1, 2.5e3, null, true, {"":""}]`))
	f.Fuzz(func(t *testing.T, kc, policy []byte) {
		rd, err := attest.BindReportData(contents(kc, string(policy)))
		if err != nil {
			if json.Valid(policy) {
				t.Fatalf("valid policy %q refused: %v", policy, err)
			}
			return
		}
		var indented bytes.Buffer
		if err := json.Indent(&indented, policy, "", "  "); err != nil {
			t.Fatalf("json.Indent of an accepted policy: %v", err)
		}
		marshaled, err := json.Marshal(json.RawMessage(policy))
		if err != nil {
			t.Fatalf("json.Marshal of an accepted policy: %v", err)
		}
		for _, p := range [][]byte{indented.Bytes(), marshaled} {
			rd2, err := attest.BindReportData(contents(kc, string(p)))
			if err != nil || rd2 != rd {
				t.Fatalf("policy %q re-encoded as %q binds differently (%v)", policy, p, err)
			}
		}
	})
}

// FuzzVerifyBundle checks that VerifyBundle never panics on a bundle read
// from the network, and accepts only the bundles it should.
func FuzzVerifyBundle(f *testing.F) {
	a, good := newBundle(f)
	goodJSON, err := json.Marshal(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(goodJSON)
	f.Add([]byte(`{"evidence":{"tee":"sim","data":""},"ohttp_keys":"","policy":{},"issued_at":1,"not_after":2}`))
	f.Add([]byte(`{}`))
	exp := simExpectations(a)
	f.Fuzz(func(t *testing.T, data []byte) {
		var b attest.Bundle
		if json.Unmarshal(data, &b) != nil {
			return
		}
		vb, err := attest.VerifyBundle(context.Background(), b, now, exp, allowSim)
		if err != nil {
			return
		}
		// Only the test platform key could have signed an accepted bundle.
		if e, err := sim.Parse(b.Evidence.Data); err != nil || !e.PlatformKey.Equal(a.key.Public()) {
			t.Fatalf("accepted a bundle not signed by the test platform key: %v", err)
		}
		if vb.Identity.TEE != attest.Sim || len(vb.KeyConfigs) == 0 || !now.Before(vb.NotAfter) {
			t.Fatalf("accepted bundle vouches for %+v", vb)
		}
		// The good bundle's evidence vouches for its certificate key only.
		if bytes.Equal(b.Evidence.Data, good.Evidence.Data) && !vb.CertificateKey.Equal(certKey) {
			t.Fatalf("accepted the good evidence with certificate key %x", vb.CertificateKey)
		}
	})
}

// TestBundleGatewayKeys checks a bundle of the keys a gateway actually
// serves: the verified configurations are those of the gateway's keys.
func TestBundleGatewayKeys(t *testing.T) {
	a := newAttester(t)
	var want []ohttp.KeyConfig
	for i, kem := range []ohttp.KEM{ohttp.KEMMLKEM768X25519, ohttp.KEMX25519} {
		k, err := ohttp.GenerateKey(uint8(i+1), kem)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k.KeyConfig())
	}
	kc, err := ohttp.MarshalKeyConfigs(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := attest.NewBundle(context.Background(), a, contents(kc, testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	vb, err := attest.VerifyBundle(context.Background(), b, now, simExpectations(a), allowSim)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(vb.KeyConfigs, want) {
		t.Errorf("verified key configs %+v, want %+v", vb.KeyConfigs, want)
	}
}
