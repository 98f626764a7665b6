package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// openEnclave opens the enclave over st. Without a peer, with the KEK its
// sealing key unwraps (or a new one). With one, with the KEK the peer
// releases after mutual attestation, and only over a store that holds
// every head the peer wrote: an older copy of the store is refused
// (enclave.ErrRolledBack). A peer that does not answer at all (the first
// replica of a deployment, or one whose peers are all down) leaves the
// sealing key's way, and the rollback check is logged as not made.
func openEnclave(ctx context.Context, cfg Config, ecfg enclave.Config, self func() (keyrelease.Self, error), log *slog.Logger) (*enclave.Enclave, error) {
	if cfg.Peer == nil {
		return enclave.Open(ctx, ecfg)
	}
	s, err := self()
	if err != nil {
		return nil, err
	}
	rel, err := keyrelease.Obtain(ctx, s, cfg.Peer)
	if errors.Is(err, keyrelease.ErrUnreachable) {
		log.Warn("no peer replica answered: the store is opened without checking it against a peer's heads", "err", err)
		return enclave.Open(ctx, ecfg)
	}
	if err != nil {
		return nil, err
	}
	defer clear(rel.KEK[:])
	want, err := headIDs(rel.Heads)
	if err != nil {
		return nil, err
	}
	ecfg.KEK = (*[seal.KeySize]byte)(&rel.KEK)
	enc, err := enclave.Open(ctx, ecfg)
	if err != nil {
		return nil, err
	}
	if err := enc.CheckHeads(ctx, want); err != nil {
		log.Error("the store is older than a live replica's writes: refusing it", "err", err)
		return nil, fmt.Errorf("service: %w", err)
	}
	log.Info("key-encryption key obtained from a peer replica; the store holds every head it wrote", "heads", len(want))
	return enc, nil
}

// headIDs parses the heads a peer released.
func headIDs(h keyrelease.Heads) (map[enclave.HeadID]uint64, error) {
	out := make(map[enclave.HeadID]uint64, len(h))
	for s, n := range h {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != len(enclave.HeadID{}) {
			return nil, fmt.Errorf("service: the peer named a run %q", s)
		}
		out[enclave.HeadID(b)] = n
	}
	return out, nil
}

// releasedHeads are the heads enc wrote, as a releaser tells them.
func releasedHeads(enc *enclave.Enclave) func() keyrelease.Heads {
	return func() keyrelease.Heads {
		h := keyrelease.Heads{}
		for id, n := range enc.Heads() {
			h[id.String()] = n
		}
		return h
	}
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
		if r, err = keyrelease.NewReleaser(s, enc.ReleaseKEK, releasedHeads(enc), enc.Now); err == nil {
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
