package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	attestsim "github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/attest/tdx"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/keyrelease"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/tee"
	teetdx "github.com/conftrace/conftrace/internal/tee/tdx"
)

// sealingKey returns the TEE's sealing key, or the zero key for a TEE that
// has none (TDX), whose key-encryption key then comes from a peer.
func sealingKey(ctx context.Context, t tee.TEE) ([seal.KeySize]byte, error) {
	sk, err := t.SealingKey(ctx)
	if errors.Is(err, teetdx.ErrNoSealingKey) {
		return [seal.KeySize]byte{}, nil
	}
	if err != nil {
		return sk, fmt.Errorf("service: sealing key: %w", err)
	}
	return sk, nil
}

// releaseSelf returns what key release knows of this replica: its evidence
// and how it judges a peer's, by the rules phones apply to the platform
// (the policy's TCB section, no debug; simulated evidence only between
// simulated replicas) and by its policy's governance set for the code.
func releaseSelf(ctx context.Context, cfg Config, doc []byte) (keyrelease.Self, error) {
	kind := cfg.TEE.TEE()
	exp := cfg.Policy.TCB.Apply(attest.Expectations{AllowSimulated: kind == attest.Sim})
	snpV, err := snp.NewVerifier(snp.VerifierOptions{})
	if err != nil {
		return keyrelease.Self{}, fmt.Errorf("service: %w", err)
	}
	vs := []attest.Verifier{
		attestsim.NewVerifier(attestsim.VerifierOptions{AllowSimulated: kind == attest.Sim}),
		sgx.NewVerifier(sgx.VerifierOptions{RequireCollateral: true}),
		tdx.NewVerifier(tdx.VerifierOptions{}),
		snpV,
	}
	gov, err := cfg.Policy.GovernanceSet()
	if err != nil {
		return keyrelease.Self{}, fmt.Errorf("service: %w", err)
	}
	self := keyrelease.Self{Attester: cfg.TEE, Verifiers: vs, Expect: exp, PolicySHA256: sha256.Sum256(doc), Release: cfg.Release, Governance: gov}
	if self.Identity, err = keyrelease.Identify(ctx, cfg.TEE, exp, vs...); err != nil {
		return keyrelease.Self{}, fmt.Errorf("service: %w", err)
	}
	return self, nil
}

// openEnclave opens the enclave over st: with the KEK its sealing key
// unwraps, or else, when the store needs a peer and cfg names one, with
// the KEK the peer releases after mutual attestation.
func openEnclave(ctx context.Context, cfg Config, ecfg enclave.Config, self func() (keyrelease.Self, error), log *slog.Logger) (*enclave.Enclave, error) {
	enc, err := enclave.Open(ctx, ecfg)
	if !errors.Is(err, enclave.ErrNeedsPeer) || cfg.Peer == nil {
		return enc, err
	}
	s, serr := self()
	if serr != nil {
		return nil, errors.Join(err, serr)
	}
	log.Info("asking a peer replica for the key-encryption key")
	kek, oerr := keyrelease.Obtain(ctx, s, cfg.Peer)
	if oerr != nil {
		return nil, oerr
	}
	defer clear(kek[:])
	ecfg.KEK = (*[seal.KeySize]byte)(&kek)
	enc, err = enclave.Open(ctx, ecfg)
	if err != nil {
		return nil, err
	}
	log.Info("key-encryption key obtained from a peer replica")
	return enc, nil
}

// withKeyRelease serves key release to peer replicas beside next, when
// self could be established; otherwise the endpoints say why not.
func withKeyRelease(next http.Handler, enc *enclave.Enclave, self func() (keyrelease.Self, error), log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	s, err := self()
	var rel http.Handler
	if err == nil {
		var r *keyrelease.Releaser
		if r, err = keyrelease.NewReleaser(s, enc.ReleaseKEK, enc.Now); err == nil {
			rel = keyrelease.Handler(r, log)
		}
	}
	if err != nil {
		log.Warn("this replica cannot release its key-encryption key to peers", "err", err)
		msg := "this replica cannot release its key: " + err.Error()
		rel = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, msg, http.StatusServiceUnavailable) })
	}
	mux.Handle(keyrelease.NoncePath, rel)
	mux.Handle(keyrelease.ReleasePath, rel)
	return mux
}
