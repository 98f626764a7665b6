package keyrelease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// The paths a releaser serves, under the backend's root.
const (
	NoncePath   = "/kek-release/nonce"
	ReleasePath = "/kek-release"
)

// maxBody bounds a request or answer: evidence with SGX collateral is
// tens of kilobytes.
const maxBody = 1 << 20

// nonceAnswer is the body of a nonce answer.
type nonceAnswer struct {
	Nonce []byte `json:"nonce"`
}

// Handler serves r's two endpoints: POST NoncePath and POST ReleasePath.
// Refusals carry their reason: nothing in them is secret.
func Handler(r *Releaser, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+NoncePath, func(w http.ResponseWriter, _ *http.Request) {
		n, err := r.Nonce()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, nonceAnswer{Nonce: n})
	})
	mux.HandleFunc("POST "+ReleasePath, func(w http.ResponseWriter, hr *http.Request) {
		var req Request
		if err := decodeJSON(http.MaxBytesReader(w, hr.Body, maxBody), &req); err != nil {
			http.Error(w, "keyrelease: malformed request: "+err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := r.Release(hr.Context(), req)
		if err != nil {
			log.Warn("key release refused", "err", err)
			http.Error(w, err.Error(), refusalStatus(err))
			return
		}
		log.Info("key-encryption key released to an attested replica")
		writeJSON(w, resp)
	})
	return mux
}

// refusalStatus is the HTTP status of a refused release.
func refusalStatus(err error) int {
	switch {
	case errors.Is(err, ErrNonce):
		return http.StatusConflict
	case errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrNotAdmitted):
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// decodeJSON decodes exactly one JSON value with no unknown fields.
func decodeJSON(r io.Reader, v any) error {
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// HTTPPeer is a live replica reached over HTTP at URL (its root).
type HTTPPeer struct {
	URL string
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
}

// Nonce implements Peer.
func (p HTTPPeer) Nonce(ctx context.Context) ([]byte, error) {
	var a nonceAnswer
	if err := p.post(ctx, NoncePath, nil, &a); err != nil {
		return nil, err
	}
	return a.Nonce, nil
}

// Release implements Peer.
func (p HTTPPeer) Release(ctx context.Context, req Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var resp Response
	if err := p.post(ctx, ReleasePath, body, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (p HTTPPeer) post(ctx context.Context, path string, body []byte, v any) error {
	u := strings.TrimSuffix(p.URL, "/") + path
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("keyrelease: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(hr)
	if err != nil {
		return fmt.Errorf("keyrelease: %w", err)
	}
	defer res.Body.Close()
	lr := io.LimitReader(res.Body, maxBody)
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(lr, 1024))
		return fmt.Errorf("keyrelease: %s answered %s: %s", u, res.Status, strings.TrimSpace(string(msg)))
	}
	if err := decodeJSON(lr, v); err != nil {
		return fmt.Errorf("keyrelease: %s: a malformed answer: %w", u, err)
	}
	return nil
}
