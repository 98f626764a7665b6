// Command conftraced is the conftrace backend, and the only program that
// runs inside the trusted execution environment: its measurement is what
// phones and auditors pin, so it holds what serves requests and nothing
// else. It serves the attestation bundle and the Oblivious HTTP gateway
// over a sealed store in a data directory, expires days past the retention
// window, and stops gracefully on SIGINT or SIGTERM. It serves plain HTTP;
// TLS terminates in front of it. The tools people run outside the TEE (the
// demo, the verifier, the phone and health-authority tools, the relay, the
// benchmarks) are in cmd/conftrace.
//
// Usage:
//
//	conftraced --data DIR --policy FILE [--release FILE] [--listen ADDR] [--tee sim|sgx|tdx|snp] [--addr-file FILE]
//	           [--collateral DIR | --pccs URL] [--store postgres://...] [--metrics-listen ADDR] [--peer URL]
//
// On SGX, each quote is served with Intel's signed collateral for the
// platform, without which phones cannot judge its TCB and refuse it: from
// --collateral, a directory the operator refreshes daily (it is read at
// every attestation), or fetched at every attestation from the PCCS or
// Intel PCS at --pccs.
//
// --metrics-listen serves the operator's metrics in Prometheus format at
// /metrics on a listener of its own (package opsmetrics says what they
// hold: nothing the host does not see anyway).
//
// --release names the release statement that the deployment's governance
// set signed for this build and policy (see package release and
// docs/governance.md). It is not part of the measurement, so that a
// statement can name the measurement; the attestation bundle carries it
// and binds its hash, and phones pinned to the governance set accept the
// backend only under a statement all members signed.
//
// The image is built reproducibly; two builds of one commit are the same
// bytes, whatever the checkout's path (the README's "For auditors" section):
//
//	CGO_ENABLED=0 go build -trimpath -buildvcs=false -o conftraced ./cmd/conftraced
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/keyrelease"
	"github.com/conftrace/conftrace/internal/opsmetrics"
	"github.com/conftrace/conftrace/internal/service"
	"github.com/conftrace/conftrace/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "conftraced: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "conftraced: %v\n", err)
		os.Exit(1)
	}
}

// usageError marks errors in how conftraced was called (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usage = `usage: conftraced --data DIR --policy FILE [--release FILE] [--listen ADDR] [--tee sim|sgx|tdx|snp] [--addr-file FILE]
                  [--collateral DIR | --pccs URL] [--store postgres://...] [--metrics-listen ADDR] [--peer URL]

Runs the conftrace backend: the attested HTTP endpoints and the Oblivious HTTP
gateway, over a sealed SQLite store in DIR, or in the PostgreSQL database that
--store names. Serves plain HTTP; put TLS in front of it. Stops gracefully on
SIGINT or SIGTERM.
`

// run runs the backend until ctx ends, logging to stderr.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("conftraced", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	listen := fs.String("listen", "127.0.0.1:8080", "the `address` to listen on, host:port (port 0 picks a free port)")
	dataDir := fs.String("data", "", "the `directory` of the sealed store, created if missing (required)")
	policyFile := fs.String("policy", "", "the policy `file`, as written by \"conftrace policy init\" (required)")
	releaseFile := fs.String("release", "", "the release statement `file` the governance set signed for this build and policy\n(conftrace release sign); required in a real TEE, where phones pin a governance set")
	teeName := fs.String("tee", "sim", "the trusted execution `environment`: sim (simulated, protects nothing), sgx (under Gramine), tdx or snp")
	collateralDir := fs.String("collateral", "", "with --tee sgx: the `directory` of Intel's collateral for this platform (tcb_info*.json,\nqe_identity*.json, the signing chain *.pem), kept fresh by the operator and read at every attestation")
	pccs := fs.String("pccs", "", "with --tee sgx: the `URL` of a PCCS (or Intel PCS) to fetch the collateral from at every attestation")
	storeURL := fs.String("store", "", "the postgres:// `URL` of a PostgreSQL database to keep the sealed records in, instead of\nSQLite in --data (which still holds the TEE's local state); leave the password to\nPGPASSWORD or ~/.pgpass, so that it is not on the command line")
	peerURL := fs.String("peer", "", "the `URL` of a live replica to obtain the store's key-encryption key from, after mutual\nattestation, when this TEE's sealing key does not open it: another machine, a new release\nits governance set signed, or TDX (docs/key-release.md)")
	metricsListen := fs.String("metrics-listen", "", "serve the operator's metrics (Prometheus format) at /metrics on this `address`, host:port;\nempty for none. They hold only what the host sees anyway; keep them off the public listener")
	addrFile := fs.String("addr-file", "", "once listening, write the bound address to this `file` (removed at shutdown), for scripts")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", strings.Join(fs.Args(), " "))
	case *dataDir == "":
		return usagef("--data is required")
	case *policyFile == "":
		return usagef("--policy is required")
	case *listen == "":
		return usagef("--listen is empty")
	}
	if err := service.CheckTEE(attest.TEE(*teeName)); err != nil {
		return usagef("--tee: %v", err)
	}
	collateral, err := collateralSource(attest.TEE(*teeName), *collateralDir, *pccs)
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
	var rel []byte
	if *releaseFile == "" && attest.TEE(*teeName) != attest.Sim {
		return usagef("--tee %s needs --release FILE: phones pin a governance set and refuse a backend whose build and policy it did not sign (docs/governance.md)", *teeName)
	}
	if *releaseFile != "" {
		if rel, err = os.ReadFile(*releaseFile); err != nil {
			return fmt.Errorf("reading the release statement: %w", err)
		}
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	t, err := service.OpenTEEWith(attest.TEE(*teeName), *dataDir, service.TEEOptions{SGXCollateral: collateral, Logger: log})
	if err != nil {
		return err
	}
	var metrics *opsmetrics.Metrics
	if *metricsListen != "" {
		metrics = opsmetrics.New()
	}
	cfg := service.Config{DataDir: *dataDir, StoreURL: *storeURL, Policy: p, TEE: t, Release: rel, Logger: log, Metrics: metrics}
	if *peerURL != "" {
		cfg.Peer = keyrelease.HTTPPeer{URL: *peerURL, Client: &http.Client{Timeout: time.Minute}}
	}
	svc, err := service.Open(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return errors.Join(err, svc.Close())
	}
	err = serveWithMetrics(ctx, svc, ln, *addrFile, metrics, *metricsListen, log)
	if cerr := svc.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the store: %w", cerr)
	}
	return err
}
