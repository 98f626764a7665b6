package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/httpserve"
)

// MaintenanceEvery is how often Serve expires days past the retention
// window and compacts the GPS index.
const MaintenanceEvery = time.Hour

// Serve serves the backend on ln, and maintains it every MaintenanceEvery,
// until ctx ends; then it stops accepting requests, lets those in flight
// finish and returns nil. It logs where it listens, which TEE and
// measurement it attests and the hash of its policy. addrFile, if not
// empty, receives the bound address for scripts (see httpserve.Options).
func (s *Service) Serve(ctx context.Context, ln net.Listener, addrFile string) error {
	m := "(in the attestation bundle: conftrace verify --server)"
	if b := measurement(s.tee); b != nil {
		m = hex.EncodeToString(b)
	}
	s.log.Info("listening", "addr", ln.Addr().String(), "tee", s.tee.TEE(),
		"measurement", m,
		"policy_sha256", fmt.Sprintf("%x", sha256.Sum256(s.Bundle.Policy)))
	if s.tee.TEE() == attest.Sim {
		s.log.Warn("simulated TEE: it protects nothing, and clients refuse it unless they allow simulated evidence; for development, tests and demos only")
	}
	mctx, stopMaintenance := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.RunMaintenance(mctx, MaintenanceEvery) })
	wg.Go(func() { s.RunFlushes(mctx) })
	// Other replicas' writes to a shared store (docs/replicas.md).
	wg.Go(func() { s.Enclave.Follow(mctx) })
	err := httpserve.Serve(ctx, ln, s.Handler, httpserve.Options{Log: s.log, AddrFile: addrFile})
	stopMaintenance()
	wg.Wait()
	// What arrived since the last flush would be lost with the enclave's
	// memory; one more flush, of the usual shape, keeps it.
	if ferr := s.Enclave.FlushNow(context.WithoutCancel(ctx)); ferr != nil {
		s.log.Error("journal flush at shutdown", "err", ferr)
	}
	return err
}
