package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/service"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/internal/tee/gramine"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	teesnp "github.com/conftrace/conftrace/internal/tee/snp"
	teetdx "github.com/conftrace/conftrace/internal/tee/tdx"
	"github.com/conftrace/conftrace/policy"
)

// simKeyFile is the simulated TEE's platform key inside the data directory.
// Keeping it there keeps the sealing key, and so the sealed store, usable
// across restarts of the same binary.
const simKeyFile = "sim-platform.key"

// maintenanceEvery is how often serve expires days past the retention
// window and compacts the GPS index.
const maintenanceEvery = time.Hour

// runServe runs the backend until ctx ends (SIGINT or SIGTERM), then shuts
// down gracefully.
func runServe(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "serve", "serve --data DIR --policy FILE [--listen ADDR] [--tee sim] [--addr-file FILE]\n\n"+
		"Runs the backend: the attested HTTP endpoints and the Oblivious HTTP gateway,\n"+
		"over a sealed SQLite store in DIR. Serves plain HTTP; put TLS in front of it.\n"+
		"Stops gracefully on SIGINT or SIGTERM.")
	listen := fs.String("listen", "127.0.0.1:8080", "the `address` to listen on, host:port (port 0 picks a free port)")
	dataDir := fs.String("data", "", "the `directory` of the sealed store, created if missing (required)")
	policyFile := fs.String("policy", "", "the policy `file`, as written by \"conftrace policy init\" (required)")
	teeName := fs.String("tee", "sim", "the trusted execution `environment`: sim (sgx, tdx and snp are not available yet)")
	addrFile := fs.String("addr-file", "", "once listening, write the bound address to this `file` (removed at shutdown), for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *dataDir == "":
		return usagef("--data is required")
	case *policyFile == "":
		return usagef("--policy is required")
	case *listen == "":
		return usagef("--listen is empty")
	}
	openTEE, err := teeOpener(*teeName)
	if err != nil {
		return err
	}
	doc, err := os.ReadFile(*policyFile)
	if err != nil {
		return fmt.Errorf("reading policy: %w", err)
	}
	p, err := policy.Parse(doc)
	if err != nil {
		return fmt.Errorf("%s: %w", *policyFile, err)
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	t, measurement, err := openTEE(*dataDir)
	if err != nil {
		return err
	}

	log := slog.New(slog.NewTextHandler(cio.stderr, nil))
	svc, err := service.Open(ctx, service.Config{DataDir: *dataDir, Policy: p, TEE: t, Logger: log})
	if err != nil {
		return err
	}
	closeService := sync.OnceValue(svc.Close)
	defer closeService()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	m := hex.EncodeToString(measurement)
	if measurement == nil {
		m = "(in the attestation bundle: conftrace verify --server)"
	}
	log.Info("listening", "addr", ln.Addr().String(), "tee", t.TEE(),
		"measurement", m,
		"policy_sha256", fmt.Sprintf("%x", sha256.Sum256(svc.Bundle.Policy)))
	if t.TEE() == attest.Sim {
		log.Warn("simulated TEE: it protects nothing, and clients refuse it unless they allow simulated evidence; for development, tests and demos only")
	}

	rctx, stopMaintenance := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { svc.RunMaintenance(rctx, maintenanceEvery) })
	err = serveHTTP(ctx, log, ln, svc.Handler, *addrFile)
	stopMaintenance()
	wg.Wait()
	if cerr := closeService(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the store: %w", cerr)
	}
	return err
}

// teeOpener returns the function that opens the trusted execution
// environment named by --tee in a data directory, with the measurement it
// attests; it fails before anything is read or created when the name is
// wrong. Each environment is one case.
func teeOpener(name string) (func(dataDir string) (tee.TEE, []byte, error), error) {
	switch attest.TEE(name) {
	case attest.Sim:
		return func(dataDir string) (tee.TEE, []byte, error) {
			t, err := teesim.New(teesim.Options{KeyFile: filepath.Join(dataDir, simKeyFile)})
			if err != nil {
				return nil, nil, err
			}
			return t, t.Measurement(), nil
		}, nil
	case attest.SGX:
		// Under Gramine-SGX; see deploy/gramine.
		return func(string) (tee.TEE, []byte, error) {
			t, err := gramine.New(gramine.Options{})
			if err != nil {
				return nil, nil, err
			}
			return t, t.Measurement(), nil
		}, nil
	case attest.TDX:
		// In a TDX confidential VM. The measurement (MRTD) is read back
		// from the evidence by verifiers, not by the guest.
		return func(string) (tee.TEE, []byte, error) {
			t, err := teetdx.New(teetdx.Options{})
			return t, nil, err
		}, nil
	case attest.SNP:
		return func(string) (tee.TEE, []byte, error) {
			t, err := teesnp.New(teesnp.Options{})
			return t, nil, err
		}, nil
	default:
		return nil, usagef("--tee %q: want sim, sgx, tdx or snp", name)
	}
}

// serveHTTP serves h on ln until ctx ends, then shuts down gracefully. It
// writes the bound address to addrFile, if set, and removes it when done.
func serveHTTP(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler, addrFile string) error {
	srv := &http.Server{
		Handler: h,
		// Bounded reads and writes, so that slow or stalled clients cannot
		// hold connections (and enclave memory) indefinitely.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if addrFile != "" {
		// Written atomically, so a script that sees the file reads a
		// whole address.
		if err := atomicfile.Write(addrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("--addr-file: %w", err)
		}
		defer os.Remove(addrFile)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	log.Info("stopped")
	return nil
}
