// Package portal is the health authority's web portal: lab and hospital
// staff sign in, enter the code a patient's app shows with the test's
// result, confirm it, and see the backend's answer; they upload infected
// patients' GPS traces; admins manage the accounts; everyone sees the
// audit log of who signed what.
//
// The portal runs on the authority's side, never the backend operator's:
// it holds the authority's signing key, signs with package authority
// exactly as `conftrace authority result` and `conftrace authority gps`
// do, and submits through package client, over Oblivious HTTP, to a
// backend whose attestation it verified with the rules phones apply. It
// verifies the backend when it starts (New) and pins what it accepted; if
// verification fails it signs nothing and every page says why.
//
// Security, in one place:
//   - Passwords are hashed with Argon2id (users.go); the users file is
//     written atomically with mode 0600.
//   - Sessions (sessions.go) are random, server-side, in memory; the
//     cookie is HttpOnly and SameSite=Strict, and Secure with the __Host-
//     prefix when the portal is served over TLS (Config.SecureCookies).
//     They end after IdleTimeout idle or SessionLifetime in all.
//   - Every form that changes anything carries the session's CSRF token
//     (synchronizer token), checked before the form is acted on; on top,
//     net/http's CrossOriginProtection refuses cross-origin POSTs by the
//     browser's Sec-Fetch-Site and Origin headers.
//   - MaxFailures wrong passwords in a row lock a user name for
//     LockDuration (signin.go).
//   - Roles do not overlap: staff sign, admins manage users.
//   - Pages carry a strict Content-Security-Policy (no script at all),
//     refuse framing, and are not cached.
//
// The portal is plain HTML and CSS from html/template, embedded; it needs
// no JavaScript.
package portal

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
)

// Config configures a portal.
type Config struct {
	// Key is the authority's signing key (required).
	Key *authority.Key
	// Client says which backend to sign for and what to accept of it:
	// the same expectations (measurements, simulation, governance) as
	// the authority's command-line tools take (required: Server).
	Client client.Config
	// Users is the users file (required).
	Users *Users
	// Audit is the audit log (required).
	Audit *Audit
	// SecureCookies makes the session cookie Secure, with the __Host-
	// prefix. Set it whenever browsers reach the portal over HTTPS,
	// directly or through a TLS-terminating proxy; without it the portal
	// must be reached on a loopback address only.
	SecureCookies bool
	// Now is the portal's clock for sessions and lock-out; nil means
	// time.Now. Signatures and the audit log always use the real time:
	// the backend refuses statements dated ahead of its clock.
	Now func() time.Time
	// Logger receives the portal's log; nil discards it.
	Logger *slog.Logger
}

// Portal is the portal's HTTP handler.
type Portal struct {
	key      *authority.Key
	users    *Users
	audit    *Audit
	backend  *backend
	sessions *sessions
	auth     *authenticator
	pages    pages
	now      func() time.Time
	log      *slog.Logger
	handler  http.Handler
}

// New makes a portal and verifies its backend. A backend that fails
// verification is not an error: the portal then serves pages that say why
// and signs nothing until a verification succeeds (staff can ask again on
// the Backend page). Status tells the outcome.
func New(ctx context.Context, cfg Config) (*Portal, error) {
	switch {
	case cfg.Key == nil:
		return nil, errors.New("portal: no signing key")
	case cfg.Client.Server == "":
		return nil, errors.New("portal: no backend URL")
	case cfg.Users == nil || cfg.Audit == nil:
		return nil, errors.New("portal: no users file or audit log")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := cfg.Users.List(); err != nil {
		return nil, err
	}
	ps, err := parsePages()
	if err != nil {
		return nil, err
	}
	auth, err := newAuthenticator(cfg.Users, now)
	if err != nil {
		return nil, err
	}
	p := &Portal{
		key: cfg.Key, users: cfg.Users, audit: cfg.Audit, backend: newBackend(cfg.Client, cfg.Key, now),
		sessions: newSessions(now, cfg.SecureCookies), auth: auth, pages: ps, now: now, log: log,
	}
	p.handler = p.routes(cfg.SecureCookies)
	p.verify(ctx)
	return p, nil
}

// verify verifies the backend and logs the outcome.
func (p *Portal) verify(ctx context.Context) {
	if err := p.backend.verify(ctx); err != nil {
		p.log.ErrorContext(ctx, "backend verification failed: signing is disabled", "server", p.backend.cfg.Server, "err", err)
		return
	}
	st := p.backend.Status()
	p.log.InfoContext(ctx, "backend verified", "server", st.Server, "tee", st.TEE, "measurement", st.Measurement,
		"policy_sha256", st.PolicySHA256, "pinned", st.Pinned)
}

// Status returns what the portal knows of its backend.
func (p *Portal) Status() Status { return p.backend.Status() }

// ServeHTTP serves the portal's pages.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// Request body limits: forms are small; a trace file may be large, up to
// what a GPX file of policy.MaxTracePointsPerRequest verbose points takes.
const (
	maxFormBytes  = 64 << 10
	maxTraceBytes = 16 << 20
)

// routes returns the portal's handler.
func (p *Portal) routes(secure bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /static/style.css", serveCSS)
	mux.HandleFunc("GET /{$}", p.home)
	mux.HandleFunc("GET /signin", p.signinForm)
	mux.HandleFunc("POST /signin", p.signin)
	mux.Handle("POST /signout", p.require("", p.signout))
	mux.Handle("GET /result", p.require(Staff, p.resultForm))
	mux.Handle("POST /result", p.require(Staff, p.resultReview))
	mux.Handle("POST /result/submit", p.require(Staff, p.resultSubmit))
	mux.Handle("GET /trace", p.require(Staff, p.traceForm))
	mux.Handle("POST /trace", p.require(Staff, p.traceUpload))
	mux.Handle("GET /audit", p.require("", p.auditPage))
	mux.Handle("GET /audit.csv", p.require("", p.auditCSV))
	mux.Handle("GET /users", p.require(Admin, p.usersPage))
	mux.Handle("POST /users/add", p.require(Admin, p.userAdd))
	mux.Handle("POST /users/remove", p.require(Admin, p.userRemove))
	mux.Handle("GET /backend", p.require("", p.backendPage))
	mux.Handle("POST /backend/verify", p.require("", p.backendVerify))
	mux.HandleFunc("/", p.notFound)
	return headers(http.NewCrossOriginProtection().Handler(mux), secure)
}

// headers sets the headers every response carries.
func headers(h http.Handler, secure bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// No script, no frames, forms only to the portal itself.
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		if secure {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		h.ServeHTTP(w, r)
	})
}
