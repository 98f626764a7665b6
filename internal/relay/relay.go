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
package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/conftrace/conftrace/ohttp"
)

// MaxBody bounds what the relay forwards either way.
const MaxBody = 1<<20 + 4096

// Relay forwards to one gateway.
type Relay struct {
	gateway string
	client  *http.Client
	log     *slog.Logger
}

// New returns a relay for the gateway URL. client may be nil.
func New(gateway string, client *http.Client, log *slog.Logger) (*Relay, error) {
	if gateway == "" {
		return nil, errors.New("relay: no gateway URL")
	}
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{gateway: gateway, client: client, log: log}, nil
}

// ServeHTTP forwards a POST of message/ohttp-req.
func (rl *Relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "the relay forwards POST only", http.StatusMethodNotAllowed)
		return
	}
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
	out.Header.Set("User-Agent", "conftrace-relay")
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
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(rbody)
}
