// Package httpserve serves an HTTP handler the way conftrace's servers
// (the backend and the relay) all do: with bounded reads and writes, so
// that slow or stalled clients cannot hold connections and memory, and
// with a graceful shutdown when the context ends.
//
// What a server holds is bounded at each step, because inside an enclave
// of fixed size running out of memory is a crash: at most
// Options.MaxConns connections at once (more wait in the kernel's listen
// backlog), each with fixed buffers and small headers, each request read
// within fixed deadlines; and handlers that buffer whole bodies read them
// through a Bodies, which bounds the bytes held across requests and how
// long one body may take.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/conftrace/conftrace/atomicfile"
)

// ShutdownGrace is how long Serve lets requests in flight finish once its
// context ends.
const ShutdownGrace = 15 * time.Second

// DefaultMaxConns caps the connections served at once. Each costs a
// goroutine, 8 KiB of buffers and its headers, some tens of KiB in all, so
// the cap bounds that to tens of MiB; it is well above what a backend needs
// at its design peak, where clients reach it through relays and load
// balancers that reuse connections.
const DefaultMaxConns = 1024

// The server's timeouts. Each is a fixed deadline from when its part of
// the exchange starts, so a client cannot extend it by sending or reading
// slowly.
const (
	// readHeaderTimeout bounds reading a request's headers.
	readHeaderTimeout = 10 * time.Second
	// readTimeout bounds reading a whole request, body included.
	readTimeout = 30 * time.Second
	// writeTimeout bounds handling and writing a response, from the end
	// of the request's headers.
	writeTimeout = 60 * time.Second
	// idleTimeout is how long a connection may wait for its next request:
	// longer than clients keep idle connections (90 s in Go's transport),
	// so that the server rarely closes one as a client reuses it.
	idleTimeout = 2 * time.Minute
	// maxHeaderBytes bounds a request's headers, which are small here
	// (every request's content travels in its body): 8 KiB, the usual
	// proxy limit, leaves room for what proxies add.
	maxHeaderBytes = 8 << 10
)

// Options configure Serve.
type Options struct {
	// Log receives the server's start, stop and connection errors; nil
	// discards them.
	Log *slog.Logger
	// AddrFile, if not empty, receives the bound address (host:port and a
	// newline) once the server listens, written atomically so that a
	// script that sees the file reads a whole address. It is removed when
	// Serve returns.
	AddrFile string
	// MaxConns caps the connections served at once; zero means
	// DefaultMaxConns. At the cap, the connection idle longest is closed
	// to make room, or, if none is idle, new connections wait in the
	// kernel's listen backlog until one closes.
	MaxConns int
}

// Serve serves h on ln until ctx ends, then stops accepting connections,
// lets requests in flight finish for up to ShutdownGrace and returns nil.
// It returns an error if serving fails or the shutdown is not graceful.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts Options) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	lim := newLimitListener(ln, maxConns)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         lim.connState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if opts.AddrFile != "" {
		if err := atomicfile.Write(opts.AddrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("httpserve: address file: %w", err)
		}
		defer os.Remove(opts.AddrFile)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lim) }()
	select {
	case err := <-errc:
		return fmt.Errorf("httpserve: serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("httpserve: shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("httpserve: serving: %w", err)
	}
	log.Info("stopped")
	return nil
}
