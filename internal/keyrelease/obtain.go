package keyrelease

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/attest"
)

// Peer is a live replica that may release the KEK: a [Releaser] reached
// in-process or over HTTP ([HTTPPeer]).
type Peer interface {
	// Nonce returns a fresh nonce for one release.
	Nonce(ctx context.Context) ([]byte, error)
	// Release asks for the KEK.
	Release(ctx context.Context, req Request) (*Response, error)
}

// Released is what a peer released: the KEK and the store heads it wrote.
type Released struct {
	KEK   [KEKSize]byte
	Heads Heads
}

// Obtain asks peer for the KEK on behalf of self: it proves self's code
// and policy with fresh evidence bound to the peer's nonce and an
// ephemeral key, and accepts the answer only if the peer's own evidence
// proves code and policy that self admits ([Self.Rule], with any sequence
// number: an older release may hand its key to its successor). The caller
// must still check that the key is its store's (the enclave does), and
// that its store holds the heads.
func Obtain(ctx context.Context, self Self, peer Peer) (Released, error) {
	var kek Released
	nonce, err := peer.Nonce(ctx)
	if err != nil {
		return kek, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if len(nonce) != NonceSize {
		return kek, fmt.Errorf("keyrelease: the peer sent a nonce of %d bytes", len(nonce))
	}
	priv, err := kem.GenerateKey()
	if err != nil {
		return kek, fmt.Errorf("keyrelease: %w", err)
	}
	pub := priv.PublicKey().Bytes()
	ev, err := self.Attester.Attest(ctx, requestData(nonce, pub, self.PolicySHA256[:], self.Release))
	if err != nil {
		return kek, fmt.Errorf("keyrelease: attesting the request: %w", err)
	}
	resp, err := peer.Release(ctx, Request{Nonce: nonce, PublicKey: pub, Evidence: ev, PolicySHA256: self.PolicySHA256[:], Release: self.Release})
	if err != nil {
		return kek, fmt.Errorf("keyrelease: the peer refused: %w", err)
	}
	rd := responseData(nonce, resp.Sealed, resp.Heads, resp.PolicySHA256, resp.Release)
	if _, err := self.verify(ctx, resp.Evidence, rd, resp.PolicySHA256, resp.Release, 0); err != nil {
		return kek, fmt.Errorf("keyrelease: the releasing replica: %w", err)
	}
	k, err := hpke.Open(priv, kdf, aead, info(nonce), resp.Sealed)
	if err != nil {
		return kek, fmt.Errorf("keyrelease: opening the released key: %w", err)
	}
	defer clear(k)
	if len(k) != KEKSize {
		return kek, fmt.Errorf("keyrelease: a released key of %d bytes", len(k))
	}
	copy(kek.KEK[:], k)
	kek.Heads = resp.Heads
	return kek, nil
}

// Identify returns the identity that attester's evidence proves, checked
// by verifiers against exp: what a replica is, as its peers will see it.
// Confidential VMs cannot read their own launch measurement any other way.
func Identify(ctx context.Context, attester attest.Attester, exp attest.Expectations, verifiers ...attest.Verifier) (attest.Identity, error) {
	var probe [32]byte
	rand.Read(probe[:])
	h := sha512.Sum512(append([]byte("conftrace kek-release identify v1\x00"), probe[:]...))
	rd := attest.ReportData(h)
	ev, err := attester.Attest(ctx, rd)
	if err != nil {
		return attest.Identity{}, fmt.Errorf("keyrelease: attesting itself: %w", err)
	}
	exp.Measurements, exp.Signers, exp.ProductID, exp.MinSVN = nil, nil, nil, 0
	id, err := attest.Verify(ctx, ev, rd, exp, verifiers...)
	if err != nil {
		return attest.Identity{}, errors.Join(errors.New("keyrelease: this replica's own evidence does not verify, so no peer would accept it"), err)
	}
	return id, nil
}
