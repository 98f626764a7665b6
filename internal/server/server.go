// Package server is the backend's HTTP layer. It only wires: it serves the
// public endpoints (attestation bundle, OHTTP key configurations, health),
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
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/ohttp"
)

// Backend is the enclave logic the gateway hands inner requests to.
type Backend interface {
	SubmitResult(ctx context.Context, r api.SignedResult) (api.SubmitResultResponse, error)
	PollResult(ctx context.Context, r api.PollResultRequest) (api.PollResultResponse, error)
	Upload(ctx context.Context, r api.UploadRequest) (api.UploadResponse, error)
	CheckExposure(ctx context.Context, r api.ExposureRequest) (api.ExposureResponse, error)
	// ExposureResponseBound is an upper bound on the encoded size of any
	// exposure answer, so that every answer can be padded to one size.
	ExposureResponseBound() int
	SubmitTrace(ctx context.Context, t api.SignedTrace) (api.SubmitTraceResponse, error)
	CheckTrace(ctx context.Context, r api.TraceCheckRequest) (api.TraceCheckResponse, error)
	// TraceResponseBound bounds the encoded size of any trace check answer.
	TraceResponseBound() int
	ImportGAEN(ctx context.Context, r api.ImportRequest) (api.ImportResponse, error)
}

// Config wires a Server.
type Config struct {
	Backend Backend
	Gateway *ohttp.Gateway
	// Bundle is the attestation bundle served at api.PathAttestation.
	Bundle attest.Bundle
	Logger *slog.Logger
}

// Server is the backend's http.Handler.
type Server struct {
	backend    Backend
	gateway    *ohttp.Gateway
	bundleJSON []byte
	keys       []byte
	log        *slog.Logger
	mux        *http.ServeMux
	inner      map[string]innerHandler
	// The sizes answers pad to, computed once: the policy does not change
	// while the server runs.
	exposureFloor, traceFloor int
}

type innerHandler func(ctx context.Context, body []byte) (any, error)

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil || cfg.Gateway == nil {
		return nil, errors.New("server: a backend and a gateway are required")
	}
	bundle, err := json.Marshal(cfg.Bundle)
	if err != nil {
		return nil, fmt.Errorf("server: encoding bundle: %w", err)
	}
	keys, err := ohttp.MarshalKeyConfigs(cfg.Gateway.KeyConfigs())
	if err != nil {
		return nil, fmt.Errorf("server: encoding key configurations: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		backend: cfg.Backend, gateway: cfg.Gateway, bundleJSON: bundle, keys: keys, log: log, mux: http.NewServeMux(),
		exposureFloor: cfg.Backend.ExposureResponseBound(),
		traceFloor:    cfg.Backend.TraceResponseBound(),
	}
	b := cfg.Backend
	s.inner = map[string]innerHandler{
		api.PathSubmitResult:  handle(b.SubmitResult),
		api.PathPollResult:    handle(b.PollResult),
		api.PathUpload:        handleBinary(b.Upload),
		api.PathCheckExposure: handleBinary(b.CheckExposure),
		api.PathSubmitTrace:   handle(b.SubmitTrace),
		api.PathCheckTrace:    handle(b.CheckTrace),
		api.PathImportGAEN:    handleBinary(b.ImportGAEN),
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
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) serveBundle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(s.bundleJSON)
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", ohttp.MediaTypeKeys)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(s.keys)
}

// maxEncapsulated bounds a gateway request body: the largest padded Binary
// HTTP message plus the encapsulation overhead of the largest suite.
const maxEncapsulated = bhttp.MaxSize + 4096

func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if ct := r.Header.Get("Content-Type"); ct != ohttp.MediaTypeRequest {
		s.gatewayError(w, start, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q, want %s", ct, ohttp.MediaTypeRequest))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEncapsulated))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.gatewayError(w, start, http.StatusRequestEntityTooLarge, fmt.Sprintf("encapsulated request larger than %d bytes", maxEncapsulated))
			return
		}
		s.gatewayError(w, start, http.StatusBadRequest, "reading request: "+err.Error())
		return
	}
	plain, rc, err := s.gateway.DecapsulateRequest(body)
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
	resp := s.serveInner(r.Context(), plain)
	enc, err := rc.EncapsulateResponse(resp)
	if err != nil {
		s.gatewayError(w, start, http.StatusInternalServerError, "encapsulating response")
		return
	}
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
func (s *Server) serveInner(ctx context.Context, plain []byte) []byte {
	status, body := http.StatusOK, any(nil)
	floor := 0
	req, err := bhttp.ParseRequest(plain, bhttp.MaxSize)
	switch {
	case err != nil:
		status, body = errorBody(api.Errorf(api.CodeMalformed, "binary HTTP: %v", err))
	case req.Method != http.MethodPost:
		status, body = http.StatusMethodNotAllowed, &api.Error{Code: api.CodeMalformed, Message: "inner requests must be POST"}
	default:
		h, ok := s.inner[req.Path]
		if !ok {
			status, body = http.StatusNotFound, &api.Error{Code: api.CodeNotFound, Message: "no inner endpoint " + req.Path}
			break
		}
		switch req.Path {
		case api.PathCheckExposure, api.PathDecoy:
			// Exposed or not, every answer pads to the same size; decoys
			// look like exposure answers.
			floor = s.exposureFloor
		case api.PathCheckTrace:
			floor = s.traceFloor
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
	resp := &bhttp.Response{
		Status:  status,
		Header:  []bhttp.Field{{Name: "content-type", Value: "application/json"}},
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
