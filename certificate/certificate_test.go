package certificate_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/policy"
)

var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize))
	issued   = time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
)

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// testCert is a Bluetooth certificate of order 1 as a coarse default
// policy issues it, signed with testKey.
func testCert(t testing.TB) certificate.Certificate {
	t.Helper()
	c := certificate.Certificate{
		Kind:      certificate.Bluetooth,
		Order:     1,
		Date:      time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC),
		IssuedAt:  issued,
		ExpiresAt: issued.Add(policy.Default().CertificateValidity()),
		Nonce:     [certificate.NonceSize]byte(bytes.Repeat([]byte{0x3c}, certificate.NonceSize)),
	}
	s, err := certificate.Sign(c, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func opts(p policy.Policy) certificate.VerifyOptions {
	return certificate.VerifyOptions{Key: pub(testKey), Policy: p, Now: issued.Add(time.Hour)}
}

// The encoding is the documented one, byte for byte.
func TestLayout(t *testing.T) {
	c := testCert(t)
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != certificate.Size || certificate.Size != 121 {
		t.Fatalf("%d bytes, Size %d; want 121", len(b), certificate.Size)
	}
	want := []byte{1, 1, 1, 0, 0}
	want = binary.BigEndian.AppendUint32(want, uint32(c.Date.Unix()/86400))
	want = binary.BigEndian.AppendUint32(want, uint32(issued.Unix()/3600))
	want = binary.BigEndian.AppendUint32(want, uint32(c.ExpiresAt.Unix()/3600))
	want = append(want, c.Nonce[:]...)
	id := certificate.KeyIDOf(pub(testKey))
	want = append(want, id[:]...)
	if !bytes.Equal(b[:57], want) {
		t.Fatalf("encoding %x, want %x", b[:57], want)
	}
	msg := append([]byte("conftrace exposure certificate v1\x00"), b[:57]...)
	if !ed25519.Verify(pub(testKey), msg, b[57:]) {
		t.Error("the signature is not an Ed25519 signature of the label and the first 57 bytes")
	}
}

func TestRoundTrip(t *testing.T) {
	c := testCert(t)
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := certificate.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Errorf("parsed %+v, want %+v", got, c)
	}
	text, err := c.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if len(text) != certificate.TextSize || !bytes.HasPrefix(text, []byte(certificate.TextPrefix)) {
		t.Errorf("text %q: want %d bytes starting %q", text, certificate.TextSize, certificate.TextPrefix)
	}
	var fromText certificate.Certificate
	if err := fromText.UnmarshalText(text); err != nil || fromText != c {
		t.Errorf("text %q parsed as %+v (%v), want %+v", text, fromText, err, c)
	}
}

func TestParseRefuses(t *testing.T) {
	good, err := testCert(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func([]byte)) []byte { b := bytes.Clone(good); f(b); return b }
	for name, b := range map[string][]byte{
		"empty":               nil,
		"one byte short":      good[:len(good)-1],
		"one byte more":       append(bytes.Clone(good), 0),
		"version 0":           edit(func(b []byte) { b[0] = 0 }),
		"version 2":           edit(func(b []byte) { b[0] = 2 }),
		"kind 0":              edit(func(b []byte) { b[1] = 0 }),
		"kind 3":              edit(func(b []byte) { b[1] = 3 }),
		"order 0":             edit(func(b []byte) { b[2] = 0 }),
		"GPS of order 2":      edit(func(b []byte) { b[1], b[2] = 2, 2 }),
		"expires at issue":    edit(func(b []byte) { copy(b[13:17], b[9:13]) }),
		"exposed after issue": edit(func(b []byte) { binary.BigEndian.PutUint32(b[5:], uint32(issued.Unix()/86400+1)) }),
		"nonce of zeros":      edit(func(b []byte) { clear(b[17:49]) }),
	} {
		if c, err := certificate.Parse(b); !errors.Is(err, certificate.ErrMalformed) {
			t.Errorf("%s: parsed %+v (%v), want ErrMalformed", name, c, err)
		}
	}
	text, _ := testCert(t).MarshalText()
	for name, s := range map[string]string{
		"no prefix":         strings.TrimPrefix(string(text), certificate.TextPrefix),
		"other prefix":      "conftrace-cert:" + strings.TrimPrefix(string(text), certificate.TextPrefix),
		"padded":            string(text) + "==",
		"a line feed":       string(text) + "\n",
		"a line feed in it": string(text[:60]) + "\n" + string(text[61:]),
		"standard base64":   strings.ReplaceAll(strings.ReplaceAll(string(text), "-", "+"), "_", "/") + "+",
		"not canonical":     string(text[:len(text)-1]) + string(rune(text[len(text)-1]+1)),
		"truncated":         string(text[:len(text)-1]),
	} {
		if s == string(text) {
			continue
		}
		if c, err := certificate.ParseText([]byte(s)); !errors.Is(err, certificate.ErrMalformed) {
			t.Errorf("%s: parsed %+v (%v), want ErrMalformed", name, c, err)
		}
	}
}

func TestSignRefuses(t *testing.T) {
	good := testCert(t)
	for name, edit := range map[string]func(*certificate.Certificate){
		"order 256":              func(c *certificate.Certificate) { c.Order = 256 },
		"risk of 65536":          func(c *certificate.Certificate) { c.RiskMinutes = 1 << 16 },
		"a date not at midnight": func(c *certificate.Certificate) { c.Date = c.Date.Add(time.Hour) },
		"an issue off the hour":  func(c *certificate.Certificate) { c.IssuedAt = c.IssuedAt.Add(time.Minute) },
		"an issue before 1970":   func(c *certificate.Certificate) { c.IssuedAt = time.Unix(-3600, 0) },
		"no nonce":               func(c *certificate.Certificate) { c.Nonce = [certificate.NonceSize]byte{} },
	} {
		c := good
		edit(&c)
		if _, err := certificate.Sign(c, testKey); !errors.Is(err, certificate.ErrMalformed) {
			t.Errorf("%s: Sign: %v, want ErrMalformed", name, err)
		}
	}
}

func TestVerify(t *testing.T) {
	c := testCert(t)
	if err := c.Verify(opts(policy.Default())); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	o := opts(policy.Default())
	o.Nonce = c.Nonce[:]
	if err := c.Verify(o); err != nil {
		t.Errorf("Verify with the verifier's nonce: %v", err)
	}
}

// Every refusal names its reason.
func TestVerifyRefuses(t *testing.T) {
	good := testCert(t)
	resign := func(f func(*certificate.Certificate)) certificate.Certificate {
		c := good
		f(&c)
		s, err := certificate.Sign(c, testKey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	detailed := policy.Default()
	detailed.Answers = policy.AnswersDetailed
	short := policy.Default()
	short.Certificates = policy.Certificates{ValidDays: 2}
	for _, tc := range []struct {
		name   string
		c      certificate.Certificate
		edit   func(*certificate.VerifyOptions)
		reason string
	}{
		{name: "an order raised after signing", c: func() certificate.Certificate { c := good; c.Order = 2; return c }(), reason: "tampered"},
		{name: "an exposure day moved after signing", c: func() certificate.Certificate { c := good; c.Date = c.Date.AddDate(0, 0, -1); return c }(), reason: "tampered"},
		{name: "an expiry extended after signing", c: func() certificate.Certificate { c := good; c.ExpiresAt = c.ExpiresAt.Add(24 * time.Hour); return c }(), reason: "tampered"},
		{name: "a signature bit flipped", c: func() certificate.Certificate { c := good; c.Signature[0] ^= 1; return c }(), reason: "tampered"},
		{name: "signed by another backend", c: func() certificate.Certificate {
			s, _ := certificate.Sign(good, otherKey)
			return s
		}(), reason: "foreign"},
		{name: "another key's id kept with a signature by it", c: func() certificate.Certificate {
			s, _ := certificate.Sign(good, otherKey)
			s.KeyID = good.KeyID
			return s
		}(), reason: "tampered"},
		{name: "verified against another attested key", c: good, edit: func(o *certificate.VerifyOptions) { o.Key = pub(otherKey) }, reason: "foreign"},
		{name: "another nonce than the verifier's", c: good, edit: func(o *certificate.VerifyOptions) { o.Nonce = bytes.Repeat([]byte{1}, 32) }, reason: "nonce"},
		{name: "expired", c: good, edit: func(o *certificate.VerifyOptions) { o.Now = good.ExpiresAt }, reason: "expired"},
		{name: "issued in the future", c: good, edit: func(o *certificate.VerifyOptions) { o.Now = issued.Add(-time.Hour) }, reason: "not_yet_valid"},
		{name: "an order above max_order", c: resign(func(c *certificate.Certificate) { c.Order = 2 }), reason: "policy"},
		{name: "a risk under coarse answers", c: resign(func(c *certificate.Certificate) { c.RiskMinutes = 20 }), reason: "policy"},
		{name: "a risk below the threshold", c: resign(func(c *certificate.Certificate) { c.RiskMinutes = 14 }),
			edit: func(o *certificate.VerifyOptions) { o.Policy = detailed }, reason: "policy"},
		{name: "valid longer than the policy's valid_days", c: good, edit: func(o *certificate.VerifyOptions) { o.Policy = short }, reason: "policy"},
		{name: "an exposure before the retention window", c: resign(func(c *certificate.Certificate) { c.Date = c.Date.AddDate(0, 0, -30) }), reason: "policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts(policy.Default())
			if tc.edit != nil {
				tc.edit(&o)
			}
			err := tc.c.Verify(o)
			if got := certificate.Reason(err); got != tc.reason {
				t.Fatalf("Verify: %v (reason %q), want reason %q", err, got, tc.reason)
			}
		})
	}
	// A detailed policy takes a risk at or above its threshold.
	o := opts(detailed)
	if err := resign(func(c *certificate.Certificate) { c.RiskMinutes = 15 }).Verify(o); err != nil {
		t.Errorf("a risk of 15 minutes under a detailed policy: %v", err)
	}
}

// Certificates of n-order exposures and GPS matches are judged by their
// own thresholds.
func TestVerifyThresholds(t *testing.T) {
	p := policy.Default()
	p.Answers = policy.AnswersDetailed
	p.Orders = policy.DefaultOrders(2, p.Risk.MinimumWeightedMinutes)
	second := p.OrderRisk(2).MinimumWeightedMinutes
	for _, tc := range []struct {
		kind  certificate.Kind
		order int
		risk  int
		ok    bool
	}{
		{certificate.Bluetooth, 2, second, true},
		{certificate.Bluetooth, 2, second - 1, false},
		{certificate.Bluetooth, 3, second, false}, // above max_order
		{certificate.GPS, 1, p.GPS.MinimumMinutes, true},
		{certificate.GPS, 1, p.GPS.MinimumMinutes - 1, false},
	} {
		c := testCert(t)
		c.Kind, c.Order, c.RiskMinutes = tc.kind, tc.order, tc.risk
		s, err := certificate.Sign(c, testKey)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Verify(opts(p))
		if (err == nil) != tc.ok || (err != nil && certificate.Reason(err) != "policy") {
			t.Errorf("%s order %d risk %d: %v, want accepted %v", tc.kind, tc.order, tc.risk, err, tc.ok)
		}
	}
}

func TestReason(t *testing.T) {
	if r := certificate.Reason(errors.New("other")); r != "" {
		t.Errorf("Reason of an unrelated error: %q", r)
	}
	if r := certificate.Reason(certificate.ErrReplayed); r != "replayed" {
		t.Errorf("Reason(ErrReplayed) = %q", r)
	}
}
