package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/conftrace/conftrace/internal/httpserve"
	"github.com/conftrace/conftrace/internal/opsmetrics"
	"github.com/conftrace/conftrace/internal/service"
)

// metricsPath is where the metrics listener serves the exposition.
const metricsPath = "/metrics"

// metricsConns caps the metrics listener's connections: a scraper or two.
const metricsConns = 8

// serveWithMetrics serves svc on ln until ctx ends and, if addr is not
// empty, metrics at metricsPath on a listener of its own at addr, which
// stops when svc does. ln is closed in any case.
//
// The metrics have a listener of their own, rather than a path on the
// public one, because they are for the operator: the public listener faces
// phones through relays, and a flood there must not starve the scraper of
// connections nor show up in the request counts it reads. Operators bind
// it to loopback or to a network only their monitoring reaches.
func serveWithMetrics(ctx context.Context, svc *service.Service, ln net.Listener, addrFile string, m *opsmetrics.Metrics, addr string, log *slog.Logger) error {
	if addr == "" {
		return svc.Serve(ctx, ln, addrFile)
	}
	mln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("metrics listener: %w", err)
	}
	log.Info("metrics", "addr", mln.Addr().String(), "path", metricsPath)
	mux := http.NewServeMux()
	mux.Handle("GET "+metricsPath, m.Handler())
	mctx, stop := context.WithCancel(ctx)
	merr := make(chan error, 1)
	go func() {
		merr <- httpserve.Serve(mctx, mln, mux, httpserve.Options{Log: log.With("listener", "metrics"), MaxConns: metricsConns})
	}()
	err = svc.Serve(ctx, ln, addrFile)
	stop()
	if e := <-merr; e != nil {
		err = errors.Join(err, fmt.Errorf("metrics: %w", e))
	}
	return err
}
