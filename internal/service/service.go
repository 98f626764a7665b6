// Package service assembles the backend that conftraced runs: the TEE, the
// sealed store, the enclave logic, the Oblivious HTTP keys, the
// attestation bundle that binds those keys and the policy, and the HTTP
// layer; and it serves them, with periodic maintenance and a graceful
// shutdown. It holds no protocol logic of its own.
//
// # Oblivious HTTP keys
//
// The gateway's keys come in generations, each a post-quantum hybrid
// (ML-KEM-768+X25519) key and an X25519 key attested by a bundle of its
// own, valid from the generation's making (issued_at) for the attested
// policy's bundle_hours (not_after). Evidence is thereby fresh: a bundle,
// and the key a client encrypts to, is no use after its not_after, even to
// someone who once extracted the private key from a platform that a TCB
// recovery has fixed since. Half a lifetime after a generation was made,
// the next one is made and its bundle published; the gateway keeps
// accepting the previous generation until its bundle's not_after. So a
// bundle is valid for at least half a lifetime after it stops being the
// newest, clients (which fetch the bundle again a quarter lifetime after
// they last did) find the next well before theirs expires, and no client
// hears "unknown key" because of a rotation. Every phone gets the same
// bundle at the same time; rotations happen on the attested schedule,
// driven by Maintain on the enclave's clock, and each is handed to the
// HTTP layer (server.SetBundle).
//
// Generations survive restarts: a restart serves the same keys under the
// same key IDs, so the host cannot make every phone fetch and verify the
// bundle again (right before its next request) by restarting the backend.
// Each generation is stored in its own record, sealed by the enclave
// (Enclave.SealSecret) under a key derived from the key-encryption key.
// Sealing there rather than in a package of its own keeps the trust
// boundary where it is: only the enclave handles the key hierarchy, this
// package never sees a sealing, key-encryption or data key beyond handing
// the TEE's sealing key to the enclave, and the store sees sealed bytes
// only. A key derived from the KEK, not from the TEE's sealing key, also
// follows the KEK to replicas that obtain it from an attested peer, so that
// replicas over one store serve the same keys; a generation is stored only
// where none is, and a backend that finds another's adopts it. A record
// that does not open (changed, moved to another generation's place, or
// sealed under another KEK) is refused and logged, and fresh keys replace
// it; so is a generation attested with another policy or release statement
// (Config.Release), since clients verified its keys under those. What sealing cannot stop: a host that deletes the records, rolls
// them back or moves the clock forces fresh keys, as it could before;
// that is logged, and is no longer as cheap as a restart.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/keyrelease"
	"github.com/conftrace/conftrace/internal/opsmetrics"
	"github.com/conftrace/conftrace/internal/server"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/policy"
)

// Config describes one backend.
type Config struct {
	// DataDir holds the SQLite store (sealed records only), unless
	// StoreURL names another.
	DataDir string
	// StoreURL, if not empty, is the postgres:// or postgresql:// URL of
	// a PostgreSQL database that holds the sealed records instead (see
	// package store/postgres). Like DataDir it is the host's
	// configuration, not measured: every store is untrusted.
	StoreURL string
	Policy   policy.Policy
	TEE      tee.TEE
	// Release is the signed release statement that admits this build and
	// policy (see package release), attested in every bundle; empty for
	// none, which phones pinned to a governance set refuse.
	Release []byte
	Logger  *slog.Logger
	// Now is the host's clock; nil means time.Now. The backend does not
	// trust it: the enclave's clock (enclave.Enclave.Now), which the
	// replay guard and the OHTTP key schedule read too, never goes back,
	// survives restarts sealed, and follows signed statements.
	Now func() time.Time
	// Metrics, if not nil, receive the operator's metrics: outer
	// requests, store operations, the index size and the replica's state
	// (see package opsmetrics for why nothing more).
	Metrics *opsmetrics.Metrics
	// Peer, if not nil, is a live replica to obtain the key-encryption key
	// from when this TEE's sealing key does not open the store's (another
	// machine, a new release, or TDX, which has none): package keyrelease,
	// docs/key-release.md.
	Peer keyrelease.Peer
}

// Service is a running backend.
type Service struct {
	Enclave *enclave.Enclave
	Handler http.Handler
	// Bundle is the attestation bundle served when Open returned. Its
	// policy is the one enforced for the whole run; its key
	// configurations rotate, so CurrentBundle is the one served now.
	Bundle attest.Bundle
	store  store.Store
	tee    tee.TEE
	log    *slog.Logger
	keys   *gatewayKeys
	// metrics may be nil: its methods then do nothing.
	metrics *opsmetrics.Metrics
}

// Open assembles the backend. It serves the OHTTP keys stored sealed by
// earlier starts where their time is not over, and makes those missing
// (see the package documentation).
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.TEE == nil {
		return nil, errors.New("service: no TEE")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	doc, err := cfg.Policy.Canonical()
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	if err := checkRelease(cfg.Release, cfg.TEE, doc, log); err != nil {
		return nil, err
	}
	sk, err := sealingKey(ctx, cfg.TEE)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	st = cfg.Metrics.Store(st)
	opened := false
	defer func() {
		if !opened {
			st.Close()
		}
	}()
	self := sync.OnceValues(func() (keyrelease.Self, error) { return releaseSelf(ctx, cfg, doc) })
	enc, err := openEnclave(ctx, cfg, enclave.Config{Policy: cfg.Policy, Store: st, SealingKey: sk, HostClock: cfg.Now, Logger: log}, self, log)
	clear(sk[:])
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	keys := &gatewayKeys{
		enc: enc, st: st, attester: cfg.TEE, policy: doc, release: cfg.Release,
		binding: attestedBinding(doc, cfg.Release), lifetime: cfg.Policy.BundleLifetime(), now: enc.Now, log: log,
	}
	if err := keys.load(ctx); err != nil {
		return nil, err
	}
	if err := keys.rotate(ctx); err != nil {
		return nil, err
	}
	served := keys.served.Load()
	srv, err := server.New(server.Config{Backend: enc, Gateway: served.gateway, Bundle: served.bundle, Logger: log, Now: enc.Now,
		Release: time.Duration(cfg.Policy.AnswerReleaseMillis) * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	keys.publish = srv.SetBundle
	s := &Service{Enclave: enc, Handler: cfg.Metrics.Instrument(withKeyRelease(onSchedule{keys: keys, next: srv}, enc, self, log)), Bundle: served.bundle,
		store: st, tee: cfg.TEE, log: log, keys: keys, metrics: cfg.Metrics}
	if err := s.watch(cfg); err != nil {
		return nil, err
	}
	opened = true
	return s, nil
}

// CurrentBundle returns the attestation bundle served now: it changes
// when the OHTTP keys rotate. The caller must not modify it.
func (s *Service) CurrentBundle() attest.Bundle { return s.keys.served.Load().bundle }

// RunMaintenance, every interval until ctx ends, expires days past the
// retention window, compacts the GPS index that uploads fragment and
// rotates the OHTTP keys when the schedule says so.
func (s *Service) RunMaintenance(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Maintain(ctx); err != nil {
				s.log.Error("maintenance", "err", err)
			}
		}
	}
}

// Maintain checks that the store was not rolled back under this replica
// (enclave.Enclave.CheckOwnHead), expires days past the retention window,
// compacts the GPS index,
// makes the journal flushes that are due and rotates the OHTTP keys if a
// generation's time is over, once, at the enclave's clock
// (enclave.Enclave.Now); RunMaintenance calls it periodically.
func (s *Service) Maintain(ctx context.Context) error {
	err := s.Enclave.Expire(ctx)
	s.Enclave.CompactGPS()
	s.metrics.SetIndexEntries(s.Enclave.IndexEntries())
	// Flushes are due on the clock whatever maintenance does; a clock
	// that jumped (the demo's) catches up here.
	// A store rolled back under this replica stops its writes (head.go).
	return errors.Join(err, s.Enclave.CheckOwnHead(ctx), s.Enclave.FlushDue(ctx), s.keys.rotate(ctx))
}

// Close closes the store.
func (s *Service) Close() error { return s.store.Close() }
