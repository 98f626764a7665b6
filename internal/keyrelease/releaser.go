package keyrelease

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"
)

// maxNonces bounds the nonces outstanding at once, so that a flood of
// nonce requests costs a releaser a few kilobytes, not its memory.
const maxNonces = 64

// KEKSource lends the key-encryption key to fn, which must not keep it,
// and returns what fn returns. enclave.Enclave.ReleaseKEK is one.
type KEKSource func(fn func(kek []byte) ([]byte, error)) ([]byte, error)

// Releaser answers release requests on a replica that holds the KEK. It
// is safe for concurrent use.
type Releaser struct {
	self  Self
	kek   KEKSource
	heads func() Heads
	now   func() time.Time
	// minSequence is the lowest release statement sequence a requester's
	// successor statement may carry: this replica's own.
	minSequence uint64

	mu     sync.Mutex
	nonces map[[NonceSize]byte]time.Time // nonce → when it expires
}

// NewReleaser returns a releaser for the replica self, lending the KEK
// from kek and telling the heads it wrote from heads (nil: none). now is
// the clock nonces expire by; nil means time.Now.
func NewReleaser(self Self, kek KEKSource, heads func() Heads, now func() time.Time) (*Releaser, error) {
	if self.Attester == nil || kek == nil {
		return nil, errors.New("keyrelease: a releaser needs an attester and the key")
	}
	seq, err := self.sequence()
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if heads == nil {
		heads = func() Heads { return nil }
	}
	return &Releaser{self: self, kek: kek, heads: heads, now: now, minSequence: seq, nonces: make(map[[NonceSize]byte]time.Time)}, nil
}

// Nonce returns a fresh nonce for one release, valid once for
// NonceLifetime.
func (r *Releaser) Nonce() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for n, exp := range r.nonces {
		if !now.Before(exp) {
			delete(r.nonces, n)
		}
	}
	if len(r.nonces) >= maxNonces {
		return nil, ErrBusy
	}
	var n [NonceSize]byte
	rand.Read(n[:])
	r.nonces[n] = now.Add(NonceLifetime)
	return n[:], nil
}

// take consumes nonce, reporting whether it was outstanding and fresh.
func (r *Releaser) take(nonce []byte) bool {
	if len(nonce) != NonceSize {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := [NonceSize]byte(nonce)
	exp, ok := r.nonces[n]
	delete(r.nonces, n)
	return ok && r.now().Before(exp)
}

// Release verifies req and, if the requester is admitted, returns the KEK
// sealed to its key with this replica's evidence. The nonce is used up
// whatever the outcome, so a refused request cannot be retried with it.
func (r *Releaser) Release(ctx context.Context, req Request) (*Response, error) {
	if !r.take(req.Nonce) {
		return nil, ErrNonce
	}
	pub, err := kem.NewPublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("keyrelease: the requester's public key: %w", err)
	}
	rd := requestData(req.Nonce, req.PublicKey, req.PolicySHA256, req.Release)
	if _, err := r.self.verify(ctx, req.Evidence, rd, req.PolicySHA256, req.Release, r.minSequence); err != nil {
		return nil, err
	}
	sealed, err := r.kek(func(kek []byte) ([]byte, error) {
		if len(kek) != KEKSize {
			return nil, fmt.Errorf("keyrelease: a key of %d bytes", len(kek))
		}
		return hpke.Seal(pub, kdf, aead, info(req.Nonce), kek)
	})
	if err != nil {
		return nil, fmt.Errorf("keyrelease: sealing the key: %w", err)
	}
	heads := r.heads()
	ev, err := r.self.Attester.Attest(ctx, responseData(req.Nonce, sealed, heads, r.self.PolicySHA256[:], r.self.Release))
	if err != nil {
		return nil, fmt.Errorf("keyrelease: attesting the answer: %w", err)
	}
	return &Response{Sealed: sealed, Heads: heads, Evidence: ev, PolicySHA256: r.self.PolicySHA256[:], Release: r.self.Release}, nil
}
