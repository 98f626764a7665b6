package ohttp

import (
	"crypto/hpke"
	"encoding/binary"
	"fmt"
)

// RequestContext is what a client keeps of an encapsulated request in
// order to decrypt its response.
type RequestContext struct {
	responseKey
}

// EncapsulateRequest encrypts plaintext, a Binary HTTP request, to the
// gateway key that cfg describes, using the first symmetric suite of cfg
// that this package implements. Every call uses a fresh HPKE context, so
// requests can't be linked by their keys. Pad plaintext first (see the
// package documentation).
func EncapsulateRequest(cfg KeyConfig, plaintext []byte) ([]byte, *RequestContext, error) {
	kp, ok := kemFor(cfg.KEM)
	if !ok {
		return nil, nil, fmt.Errorf("%w: KEM %v", ErrUnsupportedSuite, cfg.KEM)
	}
	var sym symParams
	found := false
	for _, s := range cfg.Suites {
		if sym, found = symFor(s); found {
			break
		}
	}
	if !found {
		return nil, nil, fmt.Errorf("%w: none of the symmetric suites %v", ErrUnsupportedSuite, cfg.Suites)
	}
	pk, err := kp.kem.NewPublicKey(cfg.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v public key: %v", ErrMalformed, cfg.KEM, err)
	}
	hdr := make([]byte, 0, requestHeaderLen)
	hdr = append(hdr, cfg.KeyID)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(cfg.KEM))
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(sym.suite.KDF))
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(sym.suite.AEAD))
	enc, s, err := hpke.NewSender(pk, sym.kdf, sym.aead, requestInfo(hdr))
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: encapsulating to %v key %d: %w", cfg.KEM, cfg.KeyID, err)
	}
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: sealing request: %w", err)
	}
	secret, err := s.Export(LabelResponse, sym.responseNonceSize())
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: exporting response secret: %w", err)
	}
	out := make([]byte, 0, len(hdr)+len(enc)+len(ct))
	out = append(append(append(out, hdr...), enc...), ct...)
	return out, &RequestContext{responseKey{sym: sym, secret: secret, enc: enc}}, nil
}

// DecapsulateResponse decrypts an encapsulated response (message/ohttp-res)
// to the request and returns its plaintext, a Binary HTTP response. Errors
// wrap ErrTruncated or ErrDecrypt. The caller bounds how much it reads from
// the network.
func (rc *RequestContext) DecapsulateResponse(encapsulated []byte) ([]byte, error) {
	n := rc.sym.responseNonceSize()
	if len(encapsulated) < n+aeadTagSize {
		return nil, fmt.Errorf("%w: encapsulated response of %d bytes, want at least %d", ErrTruncated, len(encapsulated), n+aeadTagSize)
	}
	aead, nonce, err := rc.sym.responseAEAD(rc.secret, rc.enc, encapsulated[:n])
	if err != nil {
		return nil, err
	}
	plaintext, err := aead.Open(nil, nonce, encapsulated[n:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: response", ErrDecrypt)
	}
	return plaintext, nil
}
