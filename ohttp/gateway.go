package ohttp

import (
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// DefaultMaxRequestSize is the maximum encapsulated request a Gateway
// accepts when its MaxRequestSize is zero: the largest Binary HTTP size
// class (1 MiB) plus room for the header, the hybrid KEM's 1,120-byte
// encapsulated key and the AEAD tag.
const DefaultMaxRequestSize = 1<<20 + 4<<10

// requestHeaderLen is the length of key_id, kem_id, kdf_id and aead_id.
const requestHeaderLen = 7

// Gateway decapsulates requests encrypted to any of its keys. Its methods
// are safe for concurrent use once it is set up.
type Gateway struct {
	// MaxRequestSize bounds the encapsulated requests DecapsulateRequest
	// accepts; zero means DefaultMaxRequestSize. Set it before use.
	MaxRequestSize int

	keys  map[uint8]*PrivateKey
	order []*PrivateKey
}

// NewGateway returns a gateway holding keys, which must have distinct key
// identifiers. KeyConfigs lists them in the order given.
func NewGateway(keys ...*PrivateKey) (*Gateway, error) {
	g := &Gateway{keys: make(map[uint8]*PrivateKey, len(keys))}
	for _, k := range keys {
		if k == nil {
			return nil, fmt.Errorf("ohttp: nil gateway key")
		}
		if _, dup := g.keys[k.cfg.KeyID]; dup {
			return nil, fmt.Errorf("ohttp: two gateway keys with key identifier %d", k.cfg.KeyID)
		}
		g.keys[k.cfg.KeyID] = k
		g.order = append(g.order, k)
	}
	return g, nil
}

// KeyConfigs returns the public configurations of the gateway's keys, for
// MarshalKeyConfigs.
func (g *Gateway) KeyConfigs() []KeyConfig {
	cs := make([]KeyConfig, len(g.order))
	for i, k := range g.order {
		cs[i] = k.KeyConfig()
	}
	return cs
}

// ResponseContext is what a gateway keeps of a decapsulated request in
// order to encrypt its response.
type ResponseContext struct {
	responseKey
}

// DecapsulateRequest decrypts an encapsulated request (message/ohttp-req)
// and returns its plaintext, a Binary HTTP request, with the context to
// encrypt the response. Errors wrap ErrTooLarge, ErrTruncated,
// ErrUnknownKeyID, ErrUnsupportedSuite or ErrDecrypt.
func (g *Gateway) DecapsulateRequest(encapsulated []byte) ([]byte, *ResponseContext, error) {
	limit := g.MaxRequestSize
	if limit <= 0 {
		limit = DefaultMaxRequestSize
	}
	if len(encapsulated) > limit {
		return nil, nil, fmt.Errorf("%w: encapsulated request of %d bytes exceeds %d", ErrTooLarge, len(encapsulated), limit)
	}
	if len(encapsulated) < requestHeaderLen {
		return nil, nil, fmt.Errorf("%w: request header", ErrTruncated)
	}
	hdr := encapsulated[:requestHeaderLen]
	keyID := hdr[0]
	kem := KEM(binary.BigEndian.Uint16(hdr[1:]))
	suite := SymmetricSuite{KDF(binary.BigEndian.Uint16(hdr[3:])), AEAD(binary.BigEndian.Uint16(hdr[5:]))}
	k, ok := g.keys[keyID]
	if !ok {
		return nil, nil, fmt.Errorf("%w %d", ErrUnknownKeyID, keyID)
	}
	if kem != k.cfg.KEM {
		return nil, nil, fmt.Errorf("%w: KEM %v for key %d, which is %v", ErrUnsupportedSuite, kem, keyID, k.cfg.KEM)
	}
	i := slices.IndexFunc(k.sym, func(p symParams) bool { return p.suite == suite })
	if i < 0 {
		return nil, nil, fmt.Errorf("%w: %v not accepted with key %d", ErrUnsupportedSuite, suite, keyID)
	}
	sym := k.sym[i]
	kp, _ := kemFor(kem)
	body := encapsulated[requestHeaderLen:]
	if len(body) < kp.nenc+aeadTagSize {
		return nil, nil, fmt.Errorf("%w: %d bytes after the header, want at least %d", ErrTruncated, len(body), kp.nenc+aeadTagSize)
	}
	enc, ct := body[:kp.nenc], body[kp.nenc:]
	r, err := hpke.NewRecipient(enc, k.sk, sym.kdf, sym.aead, requestInfo(hdr))
	if err != nil {
		// Only a malformed encapsulated key gets here (for X25519, one
		// that yields the all-zero shared secret): a forgery.
		return nil, nil, fmt.Errorf("%w: encapsulated key: %v", ErrDecrypt, err)
	}
	plaintext, err := r.Open(nil, ct)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: request", ErrDecrypt)
	}
	secret, err := r.Export(LabelResponse, sym.responseNonceSize())
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: exporting response secret: %w", err)
	}
	return plaintext, &ResponseContext{responseKey{sym: sym, secret: secret, enc: slices.Clone(enc)}}, nil
}

// EncapsulateResponse encrypts plaintext, a Binary HTTP response, for the
// client that sent the request (message/ohttp-res). Pad plaintext first
// (see the package documentation).
func (rc *ResponseContext) EncapsulateResponse(plaintext []byte) ([]byte, error) {
	return rc.encapsulateResponse(rand.Reader, plaintext)
}

// encapsulateResponse reads the response nonce from random, so that tests
// can reproduce RFC 9458's example.
func (rc *ResponseContext) encapsulateResponse(random io.Reader, plaintext []byte) ([]byte, error) {
	n := rc.sym.responseNonceSize()
	out := make([]byte, n, n+len(plaintext)+aeadTagSize)
	if _, err := io.ReadFull(random, out); err != nil {
		return nil, fmt.Errorf("ohttp: response nonce: %w", err)
	}
	aead, nonce, err := rc.sym.responseAEAD(rc.secret, rc.enc, out)
	if err != nil {
		return nil, err
	}
	return aead.Seal(out, nonce, plaintext, nil), nil
}

// responseKey is what both ends derive the response encryption from.
type responseKey struct {
	sym    symParams
	secret []byte // exported from the HPKE context with LabelResponse
	enc    []byte // the request's encapsulated key
}

// requestInfo is the HPKE info of a request: LabelRequest, a zero byte and
// the request header.
func requestInfo(hdr []byte) []byte {
	info := make([]byte, 0, len(LabelRequest)+1+len(hdr))
	info = append(info, LabelRequest...)
	info = append(info, 0)
	return append(info, hdr...)
}
