// Package server is the backend's HTTP layer. It only wires: it serves the
// public endpoints (attestation bundle, OHTTP key configurations, health,
// and at "/" the transparency page of package transparency),
// decapsulates Oblivious HTTP requests at the gateway, decodes their Binary
// HTTP plaintext and hands the inner request to the enclave logic, then pads
// and encapsulates the answer.
//
// Nothing personal is accepted in the clear: the only POST endpoint outside
// the gateway does not exist, and inner paths are reachable only through
// it. Nothing about an inner request is logged, because logs leave the TEE:
// the operator sees only that a gateway request arrived and how it ended.
package server

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/internal/httpserve"
	"github.com/conftrace/conftrace/internal/transparency"
	"github.com/conftrace/conftrace/ohttp"
)

// Backend is the enclave logic the gateway hands inner requests to.
type Backend interface {
	SubmitResult(ctx context.Context, r api.SignedResult) (api.SubmitResultResponse, error)
	// Exchange answers a phone's daily exchange: its exposure check, its
	// result poll and its upload in one request of one shape.
	Exchange(ctx context.Context, r api.ExchangeRequest) (api.ExchangeResponse, error)
	SubmitTrace(ctx context.Context, t api.SignedTrace) (api.SubmitTraceResponse, error)
	CheckTrace(ctx context.Context, r api.TraceCheckRequest) (api.TraceCheckResponse, error)
	ImportGAEN(ctx context.Context, r api.ImportRequest) (api.ImportResponse, error)
	// AnswerBound is an upper bound on the encoded size of any answer the
	// policy allows, so that every answer can be padded to one size.
	AnswerBound() int
}

// Config wires a Server.
type Config struct {
	Backend Backend
	Gateway *ohttp.Gateway
	// Bundle is the attestation bundle served at api.PathAttestation; it
	// vouches for Gateway's keys. SetBundle replaces both.
	Bundle attest.Bundle
	Logger *slog.Logger
	// Limits bound the encapsulated requests the gateway holds at once.
	Limits Limits
	// Now is the clock inner requests' dates are checked against: the
	// enclave's (enclave.Enclave.Now), which the host cannot put back or
	// stop; nil means time.Now.
	Now func() time.Time
	// Release, if positive, holds every answer until the next multiple of
	// Release (of real time) after its request arrived, so that how long
	// the backend worked on a request does not show in when its answer
	// leaves (see policy.AnswerReleaseMillis).
	Release time.Duration
}

// Limits bound the gateway's encapsulated request bodies, which it must
// hold whole to decrypt: how many bytes of them at once, how long a
// request waits for room (then 503, its body unread) and how long one
// body may take to arrive. Zero fields mean httpserve's defaults
// (DefaultBodyBudget, DefaultBodyWait, DefaultBodyTimeout). Bodies of the
// largest size class (uploads, imports, the largest checks) share at most
// half the budget, so that a flood of them leaves room for daily checks.
type Limits struct {
	BodyBudget  int64
	BodyWait    time.Duration
	BodyTimeout time.Duration
}

// Server is the backend's http.Handler.
type Server struct {
	backend Backend
	// published is replaced whole by SetBundle, so that every request
	// sees a bundle and a gateway that belong together.
	published atomic.Pointer[published]
	log       *slog.Logger
	mux       *http.ServeMux
	bodies    *httpserve.Bodies
	inner     map[string]innerHandler
	// The sizes answers pad to, computed once: the policy does not change
	// while the server runs.
	answerFloor int
	replay      *replayGuard
	release     time.Duration
	// pageStats are the statistics the transparency page draws, or nil.
	pageStats transparency.StatisticsFunc
}

type innerHandler func(ctx context.Context, body []byte) (any, error)

// published is what a key rotation changes: the gateway's keys and the
// bundle and key list that vouch for them.
type published struct {
	gateway    *ohttp.Gateway
	bundleJSON []byte
	keys       []byte
	// page is the public transparency page of the bundle, served at "/".
	page *transparency.Page
}

func newPublished(b attest.Bundle, gw *ohttp.Gateway, stats transparency.StatisticsFunc, log *slog.Logger) (*published, error) {
	bundle, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("server: encoding bundle: %w", err)
	}
	keys, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		return nil, fmt.Errorf("server: encoding key configurations: %w", err)
	}
	return &published{gateway: gw, bundleJSON: bundle, keys: keys, page: transparency.New(b, stats, log)}, nil
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil || cfg.Gateway == nil {
		return nil, errors.New("server: a backend and a gateway are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The transparency page draws the statistics the backend releases.
	var stats transparency.StatisticsFunc
	if st, ok := cfg.Backend.(StatisticsSource); ok {
		stats = st.Statistics
	}
	pub, err := newPublished(cfg.Bundle, cfg.Gateway, stats, log)
	if err != nil {
		return nil, err
	}
	s := &Server{
		backend: cfg.Backend, log: log, mux: http.NewServeMux(),
		answerFloor: cfg.Backend.AnswerBound(),
		replay:      newReplayGuard(cfg.Now),
		pageStats:   stats,
		release:     cfg.Release,
	}
	s.bodies = httpserve.NewBodies(httpserve.BodyLimits{
		Max: maxEncapsulated, Large: largeEncapsulated,
		Budget: cfg.Limits.BodyBudget, Wait: cfg.Limits.BodyWait, Timeout: cfg.Limits.BodyTimeout,
	})
	s.published.Store(pub)
	b := cfg.Backend
	s.inner = map[string]innerHandler{
		api.PathSubmitResult: handle(b.SubmitResult),
		api.PathExchange:     handleBinary(b.Exchange),
		api.PathSubmitTrace:  handle(b.SubmitTrace),
		api.PathCheckTrace:   handle(b.CheckTrace),
		api.PathImportGAEN:   handleBinary(b.ImportGAEN),
		api.PathDecoy: handleBinary(func(context.Context, api.DecoyRequest) (api.DecoyResponse, error) {
			return api.DecoyResponse{}, nil
		}),
	}
	s.mux.HandleFunc("GET "+api.PathAttestation, s.serveBundle)
	s.mux.HandleFunc("GET "+api.PathKeys, s.serveKeys)
	s.mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("POST "+api.PathGateway, s.serveGateway)
	if st, ok := cfg.Backend.(StatisticsSource); ok {
		s.mux.HandleFunc("GET "+api.PathStatistics, serveStatistics(st))
	}
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { s.published.Load().page.ServeHTTP(w, r) })
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetBundle makes the server serve b and decapsulate with gw, whose keys b
// must vouch for, from now on: the backend's keys rotate while it runs.
// Both change at once; requests already decapsulated finish as they began.
func (s *Server) SetBundle(b attest.Bundle, gw *ohttp.Gateway) error {
	if gw == nil {
		return errors.New("server: a gateway is required")
	}
	pub, err := newPublished(b, gw, s.pageStats, s.log)
	if err != nil {
		return err
	}
	s.published.Store(pub)
	return nil
}

func (s *Server) serveBundle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(s.published.Load().bundleJSON)
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", ohttp.MediaTypeKeys)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(s.published.Load().keys)
}

// maxEncapsulated bounds a gateway request body: the largest padded Binary
// HTTP message plus the encapsulation overhead of the largest suite.
const maxEncapsulated = bhttp.MaxSize + 4096

// largeEncapsulated bounds a gateway request body below the largest size
// class: the second-largest class plus the same overhead.
var largeEncapsulated = func() int64 {
	c := bhttp.SizeClasses()
	return int64(c[len(c)-2]) + maxEncapsulated - bhttp.MaxSize
}()

func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if ct := r.Header.Get("Content-Type"); ct != ohttp.MediaTypeRequest {
		httpserve.DropBody(w)
		s.gatewayError(w, start, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q, want %s", ct, ohttp.MediaTypeRequest))
		return
	}
	// The body's share of the budget is held until the answer is written:
	// the ciphertext, the plaintext and what the backend decodes from it
	// live until then.
	body, release, err := s.bodies.Read(w, r)
	if err != nil {
		status := http.StatusBadRequest
		if be := (*httpserve.BodyError)(nil); errors.As(err, &be) {
			status = be.Status
		}
		s.gatewayError(w, start, status, err.Error())
		return
	}
	defer release()
	arrived := time.Now()
	plain, rc, err := s.published.Load().gateway.DecapsulateRequest(body)
	if err != nil {
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, ohttp.ErrTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, ohttp.ErrUnknownKeyID), errors.Is(err, ohttp.ErrUnsupportedSuite):
			// The client's key configuration is stale: it should fetch
			// and verify the attestation bundle again.
			status = http.StatusUnprocessableEntity
		}
		s.gatewayError(w, start, status, err.Error())
		return
	}
	resp := s.serveInner(r.Context(), plain, requestID(body))
	enc, err := rc.EncapsulateResponse(resp)
	if err != nil {
		s.gatewayError(w, start, http.StatusInternalServerError, "encapsulating response")
		return
	}
	releaseAt(arrived, s.release)
	w.Header().Set("Content-Type", ohttp.MediaTypeResponse)
	w.Write(enc)
	s.log.Debug("gateway request", "status", http.StatusOK, "duration", time.Since(start))
}

func (s *Server) gatewayError(w http.ResponseWriter, start time.Time, status int, msg string) {
	s.log.Info("gateway request refused", "status", status, "reason", msg, "duration", time.Since(start))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// serveInner answers one decapsulated Binary HTTP request with a padded
// Binary HTTP response. Errors become api.Error bodies inside the
// encrypted response, so only the client learns why it was refused.
//
// id identifies the encapsulated request (see requestID): the gateway
// answers each once.
func (s *Server) serveInner(ctx context.Context, plain []byte, id [16]byte) []byte {
	status, body := http.StatusOK, any(nil)
	// Every answer, whatever it answers and whether it refuses, pads to
	// one size: a third party that sends same-size requests to different
	// inner paths gets same-size answers.
	floor := s.answerFloor
	req, err := bhttp.ParseRequest(plain, bhttp.MaxSize)
	switch {
	case err != nil:
		status, body = errorBody(api.Errorf(api.CodeMalformed, "binary HTTP: %v", err))
	case req.Method != http.MethodPost:
		status, body = http.StatusMethodNotAllowed, &api.Error{Code: api.CodeMalformed, Message: "inner requests must be POST"}
	default:
		if err := s.replay.check(id, req); err != nil {
			status, body = errorBody(err)
			break
		}
		h, ok := s.inner[req.Path]
		if !ok {
			status, body = http.StatusNotFound, &api.Error{Code: api.CodeNotFound, Message: "no inner endpoint " + req.Path}
			break
		}
		out, err := h(ctx, req.Content)
		if err != nil {
			status, body = errorBody(err)
		} else {
			body = out
		}
	}
	content, err := json.Marshal(body)
	if err != nil {
		status, content = http.StatusInternalServerError, []byte(`{"code":"internal","message":"encoding response"}`)
	}
	// The gateway's time, of one length whatever it is, tells a client
	// whose clock is off by how much, when its date was refused as stale.
	resp := &bhttp.Response{
		Status: status,
		Header: []bhttp.Field{
			{Name: "content-type", Value: "application/json"},
			{Name: "date", Value: s.replay.now().UTC().Format(http.TimeFormat)},
		},
		Content: content,
	}
	msg, err := resp.MarshalBinary()
	if err != nil {
		msg = []byte{1, 0x41, 0xf4} // a bare 500, in case encoding itself failed
	}
	return padTo(msg, floor)
}

// padTo pads msg with zeros (which Binary HTTP ignores) to the size class of
// max(len(msg), floor).
func padTo(msg []byte, floor int) []byte {
	n := max(len(msg), floor)
	class, err := bhttp.SizeClass(n)
	if err != nil {
		return msg
	}
	return append(msg, make([]byte, class-len(msg))...)
}

// handle adapts a typed backend method to an inner handler that decodes
// its JSON request strictly.
func handle[Req, Resp any](f func(context.Context, Req) (Resp, error)) innerHandler {
	return func(ctx context.Context, body []byte) (any, error) {
		var req Req
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, api.Errorf(api.CodeMalformed, "request body: %v", err)
		}
		if dec.More() {
			return nil, api.Errorf(api.CodeMalformed, "request body: trailing data")
		}
		return f(ctx, req)
	}
}

// handleBinary adapts a typed backend method to an inner handler whose
// request body is binary (uploads and exposure checks carry a report).
func handleBinary[Req any, PReq interface {
	*Req
	encoding.BinaryUnmarshaler
}, Resp any](f func(context.Context, Req) (Resp, error)) innerHandler {
	return func(ctx context.Context, body []byte) (any, error) {
		var req Req
		if err := PReq(&req).UnmarshalBinary(body); err != nil {
			return nil, api.Errorf(api.CodeMalformed, "request body: %v", err)
		}
		return f(ctx, req)
	}
}

// statusOf maps refusal codes to HTTP statuses.
var statusOf = map[string]int{
	api.CodeMalformed:        http.StatusBadRequest,
	api.CodeTooLarge:         http.StatusRequestEntityTooLarge,
	api.CodeBadSignature:     http.StatusUnauthorized,
	api.CodeUnknownAuthority: http.StatusUnauthorized,
	api.CodeReplayed:         http.StatusConflict,
	api.CodeStale:            http.StatusBadRequest,
	api.CodeRateLimited:      http.StatusTooManyRequests,
	api.CodeExpired:          http.StatusGone,
	api.CodeNotAuthorized:    http.StatusForbidden,
	api.CodeAlreadyUsed:      http.StatusConflict,
	api.CodeOutOfWindow:      http.StatusUnprocessableEntity,
	api.CodeConflict:         http.StatusConflict,
	api.CodeNotFound:         http.StatusNotFound,
	api.CodeInternal:         http.StatusInternalServerError,
}

func errorBody(err error) (int, *api.Error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		// Internal details stay inside: the client learns only that
		// something failed on the server's side.
		return http.StatusInternalServerError, &api.Error{Code: api.CodeInternal, Message: "internal error"}
	}
	if st, ok := statusOf[ae.Code]; ok {
		return st, ae
	}
	return http.StatusBadRequest, ae
}

// releaseAt sleeps until the first multiple of q (counted from Go's zero
// time) that comes at least q/2 after arrived, or, if the work took longer,
// the first one after now: answers leave on a grid, and work of up to half
// a step, which covers the backend's work on any request, does not change
// which grid point its answer leaves at. q <= 0 releases at once.
func releaseAt(arrived time.Time, q time.Duration) {
	if q <= 0 {
		return
	}
	at := arrived.Add(q / 2).Truncate(q).Add(q)
	if now := time.Now(); !at.After(now) {
		at = now.Truncate(q).Add(q)
	}
	time.Sleep(time.Until(at))
}

// StatisticsSource is a backend that publishes differentially private
// statistics (enclave.Enclave.Statistics): only the noisy releases it
// stored, never a count in memory.
type StatisticsSource interface {
	Statistics(ctx context.Context) (api.Statistics, error)
}

// serveStatistics answers the public statistics endpoint with what st
// released, or with the refusal (not_found when the policy releases none).
func serveStatistics(st StatisticsSource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status, body := http.StatusOK, any(nil)
		if stats, err := st.Statistics(r.Context()); err != nil {
			status, body = errorBody(err)
		} else {
			body = stats
		}
		b, err := json.Marshal(body)
		if err != nil {
			status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"encoding response"}`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(status)
		w.Write(b)
	}
}
