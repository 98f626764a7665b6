// Package service assembles the backend that conftraced runs: the TEE, the
// sealed store, the enclave logic, fresh Oblivious HTTP keys, the
// attestation bundle that binds those keys and the policy, and the HTTP
// layer; and it serves them, with periodic maintenance and a graceful
// shutdown. It holds no protocol logic of its own.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/server"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/sqlite"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// Config describes one backend.
type Config struct {
	// DataDir holds the SQLite store (sealed records only).
	DataDir string
	Policy  policy.Policy
	TEE     tee.TEE
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service is a running backend.
type Service struct {
	Enclave *enclave.Enclave
	Handler http.Handler
	Bundle  attest.Bundle
	store   *sqlite.Store
	tee     tee.TEE
	log     *slog.Logger
}

// Open assembles the backend. The OHTTP keys are made fresh on every start
// and live only in enclave memory: a restart rotates them, and clients
// fetch and verify the new bundle when the gateway reports their key
// unknown.
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
	sk, err := cfg.TEE.SealingKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("service: sealing key: %w", err)
	}
	st, err := sqlite.Open(ctx, cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	opened := false
	defer func() {
		if !opened {
			st.Close()
		}
	}()
	enc, err := enclave.Open(ctx, enclave.Config{Policy: cfg.Policy, Store: st, SealingKey: sk, Now: cfg.Now, Logger: log})
	clear(sk[:])
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	hybridID, classicID, err := nextKeyIDs(ctx, st)
	if err != nil {
		return nil, err
	}
	hybrid, err := ohttp.GenerateKey(hybridID, ohttp.KEMMLKEM768X25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES256GCM})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	classic, err := ohttp.GenerateKey(classicID, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	gw, err := ohttp.NewGateway(hybrid, classic)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	keyList, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	bundle, err := attest.NewBundle(ctx, cfg.TEE, keyList, doc)
	if err != nil {
		return nil, fmt.Errorf("service: attestation: %w", err)
	}
	srv, err := server.New(server.Config{Backend: enc, Gateway: gw, Bundle: bundle, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	opened = true
	return &Service{Enclave: enc, Handler: srv, Bundle: bundle, store: st, tee: cfg.TEE, log: log}, nil
}

// nextKeyIDs returns OHTTP key identifiers that differ from the previous
// start's, so that a client holding keys from before a restart hears
// "unknown key" (and fetches the new bundle) rather than a decryption
// failure. The start counter is not secret; it is stored as is.
func nextKeyIDs(ctx context.Context, st store.Store) (hybrid, classic uint8, err error) {
	var gen uint8
	rec, err := st.Get(ctx, "ohttp_keys", []byte("generation"))
	switch {
	case err == nil && len(rec.Value) == 1:
		gen = rec.Value[0] + 1
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return 0, 0, fmt.Errorf("service: key generation: %w", err)
	}
	var b store.Batch
	b.Put("ohttp_keys", []byte("generation"), store.NoDay, []byte{gen})
	if err := st.Apply(ctx, &b); err != nil {
		return 0, 0, fmt.Errorf("service: key generation: %w", err)
	}
	// Two identifiers per generation, cycling through 0..253.
	g := gen % 127
	return 2 * g, 2*g + 1, nil
}

// RunMaintenance, every interval until ctx ends, expires days past the
// retention window and compacts the GPS index that uploads fragment.
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

// Maintain expires days past the retention window and compacts the GPS
// index, once; RunMaintenance calls it periodically.
func (s *Service) Maintain(ctx context.Context) error {
	err := s.Enclave.Expire(ctx)
	s.Enclave.CompactGPS()
	return err
}

// Close closes the store.
func (s *Service) Close() error { return s.store.Close() }
