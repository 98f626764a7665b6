// Package authority is the health authority's side of conftrace: the
// signing key that lets a test lab or hospital declare test results, and
// the signed statements themselves.
//
// A backend accepts a result only when it is signed by a key that its
// attested policy lists (see package policy), so an authority's first step is
// to make a key pair and have the public half put into the policy:
//
//	key, err := authority.GenerateKey("lab-1")
//	priv, pub, err := key.MarshalPEM() // keep priv secret; pub goes into the policy
//
// Then, for every test, it signs the result for the code the patient shows:
//
//	res, err := key.SignResult(code, api.Positive, testDate, time.Time{}, time.Now())
//
// and submits it through the client package. The authority never sees who
// the patient met: it learns only the test code.
package authority

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/policy"
)

// Key is an authority's signing key with the name the policy lists it under.
type Key struct {
	Name string
	priv ed25519.PrivateKey
}

// GenerateKey makes a new signing key for the authority called name.
func GenerateKey(name string) (*Key, error) {
	if err := policy.CheckAuthorityName(name); err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("authority: generating key: %w", err)
	}
	return &Key{Name: name, priv: priv}, nil
}

// PublicKey returns the key the policy must list.
func (k *Key) PublicKey() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

const nameHeader = "Authority"

// MarshalPEM returns the private key (PKCS #8) and the public key (PKIX),
// both PEM-encoded and carrying the authority's name as a header, so that
// standard tools (openssl pkey) read them too.
func (k *Key) MarshalPEM() (priv, pub []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: encoding private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		return nil, nil, fmt.Errorf("authority: encoding public key: %w", err)
	}
	h := map[string]string{nameHeader: k.Name}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: h, Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: h, Bytes: pubDER}), nil
}

// ParsePrivateKeyPEM reads a key written by MarshalPEM.
func ParsePrivateKeyPEM(b []byte) (*Key, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("authority: no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("authority: private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("authority: private key is %T, want Ed25519", k)
	}
	name := blk.Headers[nameHeader]
	if name == "" {
		return nil, errors.New("authority: private key has no Authority header naming the authority")
	}
	return &Key{Name: name, priv: priv}, nil
}

// ParsePublicKeyPEM reads a public key written by MarshalPEM and returns it
// with the authority's name.
func ParsePublicKeyPEM(b []byte) (name string, pub ed25519.PublicKey, err error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return "", nil, errors.New("authority: no PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return "", nil, fmt.Errorf("authority: public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return "", nil, fmt.Errorf("authority: public key is %T, want Ed25519", k)
	}
	return blk.Headers[nameHeader], pub, nil
}

// SignTrace signs an infected patient's GPS trace for upload. now is the
// signing time, signed with it, which the backend checks for freshness and
// moves its clock to (see SignResult).
func (k *Key) SignTrace(tr gps.Trace, now time.Time) (api.SignedTrace, error) {
	wire, err := tr.MarshalBinary()
	if err != nil {
		return api.SignedTrace{}, fmt.Errorf("authority: %w", err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return api.SignedTrace{}, fmt.Errorf("authority: nonce: %w", err)
	}
	t := api.SignedTrace{Authority: k.Name, Trace: wire, IssuedAt: now.Unix(), Nonce: nonce}
	t.Signature = ed25519.Sign(k.priv, t.SignedBytes())
	return t, nil
}

// SignResult signs a test result for the given test code. symptomOnset may
// be the zero time when unknown; now is the signing time, signed with the
// result (api.SignedResult.IssuedAt). It must be the real time: the
// backend refuses a result dated more than a few minutes after its own
// clock (api.CodeFutureDated), and moves its clock forward to the signing
// time of every result it accepts, so that a host cannot stop its time.
func (k *Key) SignResult(code string, result api.Result, testDate, symptomOnset, now time.Time) (api.SignedResult, error) {
	code, err := api.NormalizeTestCode(code)
	if err != nil {
		return api.SignedResult{}, err
	}
	if result != api.Positive && result != api.Negative {
		return api.SignedResult{}, fmt.Errorf("authority: result must be positive or negative, not %q", result)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return api.SignedResult{}, fmt.Errorf("authority: nonce: %w", err)
	}
	r := api.SignedResult{
		Authority: k.Name,
		TestCode:  code,
		Result:    result,
		TestDate:  testDate.UTC().Format(api.DateLayout),
		IssuedAt:  now.Unix(),
		Nonce:     nonce,
	}
	if !symptomOnset.IsZero() {
		r.SymptomOnset = symptomOnset.UTC().Format(api.DateLayout)
	}
	r.Signature = ed25519.Sign(k.priv, r.SignedBytes())
	return r, nil
}
