// Package relay is a minimal Oblivious HTTP relay (RFC 9458, section 4):
// it forwards encapsulated requests to one gateway and returns the
// encapsulated responses, without telling the gateway who the client is.
//
// The relay sees client addresses but only ciphertext; the gateway sees
// plaintext but only the relay's address. That split protects users only
// when the relay and the gateway are run by different parties: a backend
// operator who also runs the relay learns both. The relay therefore adds no
// Forwarded or X-Forwarded-For header, copies no client header but the
// content type, and logs no client address.
//
// A client must verify the backend's attestation bundle before it encrypts
// anything, and fetch it again whenever the backend restarts with fresh
// keys. Were it to fetch the bundle from the backend itself, the backend
// would learn every phone's address right before its next request. So the
// relay also serves the backend's public documents, the bundle
// ([api.PathAttestation]) and the key configurations ([api.PathKeys]),
// under the same rules. They need no trust in the relay: the client
// verifies the bundle's evidence, which binds the keys.
package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/ohttp"
)

// MaxBody bounds what the relay forwards either way.
const MaxBody = 1<<20 + 4096

// MaxPublic bounds a public document the relay passes on: the client
// reads attestation bundles of at most this size, and evidence with its
// collateral is a few hundred kilobytes at most. A larger answer is
// refused, not truncated.
const MaxPublic = 1 << 20

// CacheFor is how long the relay keeps a public document. The documents are
// public and the same for every phone, so serving them from a cache costs
// nobody privacy; it also hides from the backend when individual phones
// fetch them, and spares it the rush of fetches after a restart. It is
// short because a cached bundle names keys that a restarted backend no
// longer has; the relay also drops its cache as soon as the gateway
// answers that a key is unknown.
const CacheFor = time.Minute

// Timeout bounds one fetch of a public document from the backend, and is
// the default client's timeout.
const Timeout = 30 * time.Second

// userAgent is the only user agent the backend sees.
const userAgent = "conftrace-relay"

// Relay forwards to one gateway and serves its backend's public documents.
type Relay struct {
	gateway string
	backend string // base URL the public documents are fetched under
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time

	fetching chan struct{} // held while fetching, so that a rush makes one fetch

	mu    sync.Mutex
	cache map[string]document // by API path
	gen   uint64              // counts stale-key answers, so that a fetch begun before one is not cached
}

// document is a public document as the backend answered it.
type document struct {
	status      int
	contentType string
	body        []byte
	expires     time.Time
}

// New returns a relay for the gateway URL, an http or https URL. The
// backend's public documents are fetched under the gateway URL with
// [api.PathGateway] trimmed from its path, or under its origin
// (scheme://host) when the path does not end in it. client may be nil.
func New(gateway string, client *http.Client, log *slog.Logger) (*Relay, error) {
	if gateway == "" {
		return nil, errors.New("relay: no gateway URL")
	}
	backend, err := backendOf(gateway)
	if err != nil {
		return nil, fmt.Errorf("relay: gateway URL %q: %w", gateway, err)
	}
	if client == nil {
		client = &http.Client{Timeout: Timeout}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{
		gateway:  gateway,
		backend:  backend,
		client:   client,
		log:      log,
		now:      time.Now,
		fetching: make(chan struct{}, 1),
		cache:    make(map[string]document),
	}, nil
}

// backendOf returns the backend's base URL, without a trailing slash,
// for a gateway URL.
func backendOf(gateway string) (string, error) {
	u, err := url.Parse(gateway)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("want an http or https URL")
	}
	b := url.URL{Scheme: u.Scheme, Host: u.Host}
	if p, ok := strings.CutSuffix(u.Path, api.PathGateway); ok {
		b.Path = p
	}
	return strings.TrimRight(b.String(), "/"), nil
}

// Backend returns the base URL the relay fetches public documents under.
func (rl *Relay) Backend() string { return rl.backend }

// SetClock sets the clock by which cached documents expire (time.Now by
// default), before the relay serves: a simulation that moves its
// backend's clock by hours moves the relay's with it, so that the relay
// does not serve a bundle that expired in simulated time.
func (rl *Relay) SetClock(now func() time.Time) { rl.now = now }

// publicPath returns the public document a GET of path asks for. Any path
// ending in the document's API path will do, so that the relay serves it
// under whatever URL clients are given for the relay.
func publicPath(path string) (string, bool) {
	for _, p := range []string{api.PathAttestation, api.PathKeys} {
		if strings.HasSuffix(path, p) {
			return p, true
		}
	}
	return "", false
}

// ServeHTTP forwards a POST of message/ohttp-req to the gateway, and
// answers a GET of the attestation bundle or the key configurations.
func (rl *Relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		rl.forward(w, r)
	case http.MethodGet:
		p, ok := publicPath(r.URL.Path)
		if !ok {
			http.Error(w, fmt.Sprintf("the relay serves GET of %s and %s only", api.PathAttestation, api.PathKeys), http.StatusNotFound)
			return
		}
		rl.servePublic(w, r, p)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "the relay forwards POST and serves GET only", http.StatusMethodNotAllowed)
	}
}

func (rl *Relay) forward(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != ohttp.MediaTypeRequest {
		http.Error(w, fmt.Sprintf("content type %q, want %s", ct, ohttp.MediaTypeRequest), http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		http.Error(w, "request body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	// A fresh request: nothing of the client's (address, cookies, user
	// agent) travels on.
	out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, rl.gateway, bytes.NewReader(body))
	if err != nil {
		http.Error(w, "relay misconfigured", http.StatusInternalServerError)
		return
	}
	out.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	out.Header.Set("User-Agent", userAgent)
	resp, err := rl.client.Do(out)
	if err != nil {
		rl.log.Warn("gateway unreachable", "err", err)
		http.Error(w, "gateway unreachable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rbody, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil || len(rbody) > MaxBody {
		http.Error(w, "gateway response unreadable or too large", http.StatusBadGateway)
		return
	}
	if resp.StatusCode == http.StatusUnprocessableEntity {
		// The gateway does not know the key the client encrypted to: it
		// restarted. The client fetches the bundle next, and must get
		// the new one, not the cached one.
		rl.forget()
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(rbody)
}

// forget drops the cached documents.
func (rl *Relay) forget() {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.gen++
	clear(rl.cache)
}

func (rl *Relay) servePublic(w http.ResponseWriter, r *http.Request, path string) {
	d, err := rl.public(r.Context(), path)
	if err != nil {
		// The error names the backend's URL, never the client.
		rl.log.Warn("fetching a public document failed", "path", path, "err", err)
		http.Error(w, "backend unreachable or its answer too large", http.StatusBadGateway)
		return
	}
	if d.contentType != "" {
		w.Header().Set("Content-Type", d.contentType)
	}
	// An HTTP cache between the phone and the relay must not keep a
	// bundle that the relay itself has dropped after a restart.
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(d.status)
	w.Write(d.body)
}

// cached returns the document at path if the cache holds it unexpired,
// and the cache's generation.
func (rl *Relay) cached(path string) (document, bool, uint64) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	d, ok := rl.cache[path]
	return d, ok && rl.now().Before(d.expires), rl.gen
}

// public returns the document at path, from the cache or the backend.
func (rl *Relay) public(ctx context.Context, path string) (document, error) {
	if d, ok, _ := rl.cached(path); ok {
		return d, nil
	}
	select {
	case rl.fetching <- struct{}{}:
	case <-ctx.Done():
		return document{}, ctx.Err()
	}
	defer func() { <-rl.fetching }()
	// Whoever held the fetch before may have fetched it.
	d, ok, gen := rl.cached(path)
	if ok {
		return d, nil
	}
	d, err := rl.fetch(ctx, path)
	if err != nil {
		return document{}, err
	}
	if d.status == http.StatusOK {
		rl.mu.Lock()
		if rl.gen == gen {
			d.expires = rl.now().Add(CacheFor)
			rl.cache[path] = d
		}
		rl.mu.Unlock()
	}
	return d, nil
}

// errTooLarge reports a public document larger than MaxPublic.
var errTooLarge = fmt.Errorf("answer larger than %d bytes", MaxPublic)

// fetch gets the document at path from the backend, with a request of the
// relay's own.
func (rl *Relay) fetch(ctx context.Context, path string) (document, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rl.backend+path, nil)
	if err != nil {
		return document{}, fmt.Errorf("relay: %w", err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := rl.client.Do(req)
	if err != nil {
		return document{}, fmt.Errorf("relay: %w", err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxPublic {
		return document{}, fmt.Errorf("relay: %s: %w", path, errTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPublic+1))
	if err != nil {
		return document{}, fmt.Errorf("relay: %s: %w", path, err)
	}
	if len(body) > MaxPublic {
		return document{}, fmt.Errorf("relay: %s: %w", path, errTooLarge)
	}
	return document{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}, nil
}
