// Package ohttp implements Oblivious HTTP (RFC 9458): HTTP requests and
// responses encrypted end to end between a client and a gateway with HPKE
// (RFC 9180, Go's crypto/hpke), so that they can travel through a relay that
// learns nothing from them.
//
// # What it gives a contact-tracing app
//
// A phone that polls for exposure, uploads contact tuples or registers a
// test reveals two things: who it is (its network address) and what it
// says. Oblivious HTTP splits them. The client encrypts its request to the
// gateway's public key and sends it to a relay run by a third party. The
// relay sees the client's address but only ciphertext; the gateway, which
// in conftrace runs inside the attested TEE, sees the request but only the
// relay's address. Neither alone can link a person to what their phone
// sent, and TLS terminators and load balancers in front of the gateway see
// only ciphertext too.
//
// # Keys
//
// The gateway publishes its public keys as key configurations ([KeyConfig]),
// served as a list in the [MediaTypeKeys] format ([MarshalKeyConfigs],
// [ParseKeyConfigs]). A client must get that list from a source it
// authenticates: conftrace binds its hash into the TEE's attestation
// evidence. Two suites are supported:
//
//   - DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256 and AES-128-GCM, the
//     suite of RFC 9458's example, which every OHTTP implementation knows.
//   - The hybrid post-quantum KEM MLKEM768-X25519 (X-Wing) with HKDF-SHA256
//     and AES-256-GCM. A recorded exchange stays secret unless both
//     ML-KEM-768 and X25519 are broken. AES-256 rather than AES-128 because
//     the point of this suite is to outlast a future quantum adversary, and
//     Grover's algorithm halves AES's effective key length; the cost is a
//     few more AES rounds.
//
// A gateway serves one configuration of each, under distinct key
// identifiers; [SelectKeyConfig] picks the hybrid one when it is offered.
// [GenerateKey] makes a key, and [PrivateKey.MarshalBinary] and
// [ParsePrivateKey] serialize it so that a backend can seal its keys and
// restore them after a restart.
//
// # Client
//
//	cfgs, err := ohttp.ParseKeyConfigs(attestedKeyList)
//	cfg, err := ohttp.SelectKeyConfig(cfgs)
//	plain, err := bhttpRequest.MarshalPadded()            // package bhttp
//	encReq, rc, err := ohttp.EncapsulateRequest(cfg, plain)
//	// POST encReq to the relay as message/ohttp-req; read the body.
//	plainResp, err := rc.DecapsulateResponse(body)
//
// # Gateway
//
//	gw, err := ohttp.NewGateway(hybridKey, x25519Key)
//	plain, rc, err := gw.DecapsulateRequest(body)  // on error: plain 4xx
//	// ...decode plain with bhttp, serve it, pad the response...
//	encResp, err := rc.EncapsulateResponse(paddedResponse)
//	// answer 200 with encResp as message/ohttp-res.
//
// # Sizes
//
// Encryption hides content but not length, and the length of a message can
// tell an observer whether a phone is polling or uploading. So the client
// pads the Binary HTTP request to a fixed size class before encapsulating
// it (bhttp's MarshalPadded: 1 KiB, 1.5 KiB, 2 KiB, 3 KiB, ... 1 MiB) and
// the gateway pads the response the same way. An encapsulated message then
// adds a fixed overhead for its suite (request: 7-byte header,
// encapsulated key and 16-byte tag; response: nonce and tag), so every
// message on the wire has one of a score of lengths. The suite itself shows in the length (the
// hybrid KEM's encapsulated key is 1,120 bytes, X25519's 32), so all
// clients should pick the same configuration, as [SelectKeyConfig] does.
// This package does not pad: it encrypts the bytes it is given.
//
// # Errors
//
// Failures wrap one of [ErrTruncated], [ErrMalformed], [ErrTooLarge],
// [ErrUnknownKeyID], [ErrUnsupportedSuite] and [ErrDecrypt]; test for them
// with errors.Is. A gateway answers every decapsulation failure with an
// unencrypted 4xx status (RFC 9458, section 5.2); [ErrUnknownKeyID] tells
// it the client's key configuration is outdated.
package ohttp

import "errors"

// Media types (RFC 9458, section 9).
const (
	// MediaTypeKeys is the media type of a key configuration list.
	MediaTypeKeys = "application/ohttp-keys"
	// MediaTypeRequest is the media type of an encapsulated request.
	MediaTypeRequest = "message/ohttp-req"
	// MediaTypeResponse is the media type of an encapsulated response.
	MediaTypeResponse = "message/ohttp-res"
)

// Labels that bind the encryption to Binary HTTP (RFC 9458, section 4.6).
const (
	// LabelRequest starts the HPKE info of a request: the label, a zero
	// byte, then the 7-byte request header.
	LabelRequest = "message/bhttp request"
	// LabelResponse is the HPKE exporter context from which the response
	// key is derived.
	LabelResponse = "message/bhttp response"
)

// Errors, one for each kind of failure. Returned errors wrap them with
// detail; test with errors.Is.
var (
	// ErrTruncated means the input is shorter than its format requires.
	ErrTruncated = errors.New("ohttp: truncated input")
	// ErrMalformed means the input is invalid in a way other than its
	// length: bytes left over, a bad length field, an invalid public or
	// private key.
	ErrMalformed = errors.New("ohttp: malformed input")
	// ErrTooLarge means an encapsulated request exceeds the gateway's
	// maximum size.
	ErrTooLarge = errors.New("ohttp: message too large")
	// ErrUnknownKeyID means a request names a key identifier the gateway
	// does not hold: the client's key configuration is out of date.
	ErrUnknownKeyID = errors.New("ohttp: unknown key identifier")
	// ErrUnsupportedSuite means a KEM, KDF or AEAD that the key
	// configuration does not list or that this package does not implement.
	ErrUnsupportedSuite = errors.New("ohttp: unsupported algorithm")
	// ErrDecrypt means a ciphertext failed authentication: it was
	// modified, or it was not encrypted to this key or for this request.
	ErrDecrypt = errors.New("ohttp: message authentication failed")
)
