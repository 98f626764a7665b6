// Package httpserve serves an HTTP handler the way conftrace's servers
// (the backend and the relay) all do: with bounded reads and writes, so
// that slow or stalled clients cannot hold connections and memory, and
// with a graceful shutdown when the context ends.
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
}

// Serve serves h on ln until ctx ends, then stops accepting connections,
// lets requests in flight finish for up to ShutdownGrace and returns nil.
// It returns an error if serving fails or the shutdown is not graceful.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts Options) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
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
	go func() { errc <- srv.Serve(ln) }()
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
