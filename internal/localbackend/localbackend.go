// Package localbackend runs a whole conftrace backend inside this process,
// on a loopback address: the simulated TEE, a sealed SQLite store in a
// directory of the caller's, a policy that lists one health authority, and
// a clock the caller may move. The demo and the end-to-end tests drive it
// through the real client SDK, over attested Oblivious HTTP, exactly as
// phones drive a deployed backend.
//
// It is never part of the measured image (cmd/conftraced): it exists for
// code that runs outside the TEE.
package localbackend

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/httpserve"
	"github.com/conftrace/conftrace/internal/service"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// Config describes a local backend. Only Dir is required.
type Config struct {
	// Dir holds the data directory (Dir/data), laid out as conftraced
	// lays out its own: the sealed store and the simulated TEE's platform
	// key. Starting again on the same Dir opens the same sealed state, as a
	// restarted server would.
	Dir string
	// Authority is the health authority the policy lists; nil means a new
	// key named "lab".
	Authority *authority.Key
	// Policy is the backend's policy; nil means policy.Default() with
	// answers released at once. Its authorities are replaced by Authority.
	Policy *policy.Policy
	// Now is the backend's clock; nil means real time.
	Now func() time.Time
	// Logger receives the backend's log; nil discards it.
	Logger *slog.Logger
	// Measurement replaces the simulated TEE's measurement (32 bytes);
	// nil means the SHA-256 of the running executable.
	Measurement []byte
	// Governance, if not empty, are the keys of a governance set: they
	// all sign a release statement that admits the backend's measurement
	// and policy, with sequence number ReleaseSequence (0 means 1), and
	// the backend starts with it, as conftraced --release does.
	Governance      []*release.Key
	ReleaseSequence uint64
	// Release, if not nil, is the signed release statement the backend
	// starts with instead, as given to conftraced --release.
	Release []byte
}

// Backend is a running local backend.
type Backend struct {
	// URL is the backend's base URL, http://127.0.0.1:PORT.
	URL string
	// Service is the backend itself.
	Service *service.Service
	// TEE is the simulated TEE the backend attests with.
	TEE *teesim.TEE
	// Authority is the health authority the policy lists.
	Authority *authority.Key
	// Policy is the policy the backend enforces.
	Policy policy.Policy
	// Release is the signed release statement the backend runs under, or
	// nil (Config.Release, Config.Governance).
	Release []byte
	// Governance is the set of Config.Governance, which signed Release;
	// nil without.
	Governance *release.Governance

	done  sync.WaitGroup
	timer *timedHandler
	close func() error
}

// Start opens the backend in cfg.Dir and serves it on a free loopback port
// until Close.
func Start(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Dir == "" {
		return nil, errors.New("localbackend: no directory")
	}
	lab := cfg.Authority
	if lab == nil {
		var err error
		if lab, err = authority.GenerateKey("lab"); err != nil {
			return nil, fmt.Errorf("localbackend: %w", err)
		}
	}
	pol := policy.Default()
	// In-process, there is no network whose timing could tell anything:
	// answers leave at once, so that demos and tests do not wait.
	pol.AnswerReleaseMillis = 0
	if cfg.Policy != nil {
		pol = *cfg.Policy
	}
	pol.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	data := filepath.Join(cfg.Dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("localbackend: %w", err)
	}
	t, err := teesim.New(teesim.Options{KeyFile: filepath.Join(data, service.SimKeyFile), Measurement: cfg.Measurement})
	if err != nil {
		return nil, fmt.Errorf("localbackend: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gov, rel, err := signRelease(cfg, t.Measurement(), pol)
	if err != nil {
		return nil, err
	}
	svc, err := service.Open(ctx, service.Config{DataDir: data, Policy: pol, TEE: t, Release: rel, Logger: log, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		svc.Close()
		return nil, fmt.Errorf("localbackend: %w", err)
	}
	b := &Backend{
		URL:        "http://" + ln.Addr().String(),
		Service:    svc,
		TEE:        t,
		Authority:  lab,
		Policy:     pol,
		Release:    rel,
		Governance: gov,
		timer:      &timedHandler{h: svc.Handler},
	}
	// Served until Close, with a context of its own: the caller's ctx
	// bounds the start only.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var serveErr error
	b.done.Go(func() { serveErr = httpserve.Serve(sctx, ln, b.timer, httpserve.Options{}) })
	b.close = sync.OnceValue(func() error {
		stop() // httpserve waits for the requests in flight
		b.done.Wait()
		return errors.Join(serveErr, svc.Close())
	})
	return b, nil
}

// signRelease returns cfg's release statement, or has cfg's governance
// keys sign one that admits measurement under pol, if cfg has any.
func signRelease(cfg Config, measurement []byte, pol policy.Policy) (*release.Governance, []byte, error) {
	switch {
	case cfg.Release != nil && len(cfg.Governance) > 0:
		return nil, nil, errors.New("localbackend: a release statement, or governance keys to sign one: not both")
	case cfg.Release != nil:
		return nil, cfg.Release, nil
	case len(cfg.Governance) == 0:
		return nil, nil, nil
	}
	doc, err := pol.Canonical()
	if err != nil {
		return nil, nil, fmt.Errorf("localbackend: %w", err)
	}
	st := release.Statement{Sequence: max(cfg.ReleaseSequence, 1), TEE: attest.Sim, Measurements: [][]byte{measurement},
		PolicySHA256: sha256.Sum256(doc), Note: "local backend"}
	gov := &release.Governance{}
	var f []byte
	for i, k := range cfg.Governance {
		gov.Members = append(gov.Members, k.Member())
		if i == 0 {
			f, err = release.Sign(st, k)
		} else {
			f, err = release.Cosign(f, k)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("localbackend: %w", err)
		}
	}
	return gov, f, nil
}

// Expectations are what a client must expect to accept this backend: its
// measurement, in the simulated TEE.
func (b *Backend) Expectations() attest.Expectations {
	return attest.Expectations{Measurements: [][]byte{b.TEE.Measurement()}, AllowSimulated: true}
}

// Latencies returns how long the backend took to serve each request so far,
// in the order they finished.
func (b *Backend) Latencies() []time.Duration { return b.timer.durations() }

// Close stops serving, waits for the requests in flight and closes the
// store. It may be called more than once.
func (b *Backend) Close() error { return b.close() }

// timedHandler measures how long the backend takes to serve each request.
type timedHandler struct {
	h  http.Handler
	mu sync.Mutex
	d  []time.Duration
}

func (t *timedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t.h.ServeHTTP(w, r)
	d := time.Since(start)
	t.mu.Lock()
	t.d = append(t.d, d)
	t.mu.Unlock()
}

func (t *timedHandler) durations() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.d)
}
