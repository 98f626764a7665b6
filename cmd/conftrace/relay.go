package main

import (
	"context"
	"log/slog"
	"net"
	"net/url"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/httpserve"
	"github.com/conftrace/conftrace/internal/relay"
)

// runRelay runs an Oblivious HTTP relay in front of one backend's gateway.
func runRelay(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "relay", "relay --gateway URL [--listen ADDR] [--addr-file FILE]\n\n"+
		"Runs an Oblivious HTTP relay: it forwards encapsulated requests to the\n"+
		"gateway without the client's address. It also serves the backend's\n"+
		"attestation bundle ("+api.PathAttestation+") and key configurations ("+api.PathKeys+"),\n"+
		"fetched from the gateway URL without "+api.PathGateway+" (or from its origin)\n"+
		"and cached for a minute, so that phones never contact the backend directly,\n"+
		"not even when it restarts with fresh keys. It protects users only when\n"+
		"someone other than the backend's operator runs it.")
	listen := fs.String("listen", "127.0.0.1:8081", "the `address` to listen on, host:port (port 0 picks a free port)")
	gateway := fs.String("gateway", "", "the backend's gateway `URL`; a URL without a path gets "+api.PathGateway+" (required)")
	addrFile := fs.String("addr-file", "", "once listening, write the bound address to this `file` (removed at shutdown), for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *gateway == "" {
		return usagef("--gateway is required")
	}
	u, err := url.Parse(*gateway)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--gateway %q: want an http or https URL", *gateway)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = api.PathGateway
	}
	if *listen == "" {
		return usagef("--listen is empty")
	}

	log := slog.New(slog.NewTextHandler(cio.stderr, nil))
	rl, err := relay.New(u.String(), nil, log)
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", ln.Addr().String(), "gateway", u.String(), "backend", rl.Backend())
	return httpserve.Serve(ctx, ln, rl, httpserve.Options{Log: log, AddrFile: *addrFile})
}
