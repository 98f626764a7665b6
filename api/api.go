// Package api defines the messages that devices and health authorities
// exchange with a conftrace backend, and the paths they are sent to.
//
// Every message that carries personal data travels inside an Oblivious HTTP
// request (package ohttp) whose plaintext is a Binary HTTP request (package
// bhttp) for one of the inner paths below. Uploads and exposure checks carry
// a binary body (a contactlog report, see [UploadRequest] and
// [ExposureRequest]); every other request, and every answer, is JSON. Only the
// attestation bundle, the key configurations and the health check are plain
// GET endpoints. Apps normally use package client rather than this package;
// it is public so that other implementations can interoperate.
package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Outer (plain HTTP) paths.
const (
	// PathAttestation serves the attestation bundle (attest.Bundle, JSON).
	PathAttestation = "/v1/attestation"
	// PathKeys serves the OHTTP key configurations (application/ohttp-keys).
	PathKeys = "/v1/ohttp-keys"
	// PathGateway takes message/ohttp-req and answers message/ohttp-res.
	PathGateway = "/v1/gateway"
	// PathHealth answers 200 when the backend serves.
	PathHealth = "/healthz"
)

// Inner paths, reached only through the gateway. All take POST.
const (
	PathSubmitResult  = "/v1/authority/results"
	PathPollResult    = "/v1/results/poll"
	PathUpload        = "/v1/uploads"
	PathCheckExposure = "/v1/exposure"
	PathSubmitTrace   = "/v1/authority/traces"
	PathCheckTrace    = "/v1/gps/check"
	// PathImportGAEN takes a GAEN key export (see ImportRequest).
	PathImportGAEN = "/v1/gaen/exports"
	// PathDecoy is answered and discarded; see DecoyRequest.
	PathDecoy = "/v1/decoy"
)

// InnerAuthority is the authority (host) used in inner requests; the
// gateway serves only its own resources and ignores it.
const InnerAuthority = "conftrace.invalid"

// Result is a test result as a health authority declares it.
type Result string

// The results a test can have.
const (
	Pending  Result = "pending"
	Negative Result = "negative"
	Positive Result = "positive"
)

// TestSecretSize is the size of the secret a device makes when it
// registers a test.
const TestSecretSize = 32

// SignedResult is a health authority's statement of a test result, sent
// to PathSubmitResult.
type SignedResult struct {
	Authority string `json:"authority"`
	TestCode  string `json:"test_code"`
	Result    Result `json:"result"`
	// TestDate is the day the sample was taken, YYYY-MM-DD.
	TestDate string `json:"test_date"`
	// SymptomOnset is the day symptoms began, YYYY-MM-DD, if known.
	SymptomOnset string `json:"symptom_onset,omitempty"`
	// IssuedAt is when the authority signed, Unix seconds, and part of
	// what it signs. The backend refuses statements too old, or dated more
	// than a few minutes after its clock (CodeFutureDated); it moves its
	// clock forward to the IssuedAt of every statement it verified, so
	// that a host that stops its clock does not stop retention.
	IssuedAt int64 `json:"issued_at"`
	// Nonce makes every statement unique, so a replay is recognisable.
	Nonce []byte `json:"nonce"`
	// Signature is the authority's Ed25519 signature over SignedBytes.
	Signature []byte `json:"signature"`
}

// SignedBytes returns the bytes the authority signs: a domain-separated,
// length-prefixed encoding of every field but the signature.
func (r SignedResult) SignedBytes() []byte {
	b := []byte("conftrace signed result v1\x00")
	for _, f := range []string{r.Authority, r.TestCode, string(r.Result), r.TestDate, r.SymptomOnset} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(r.IssuedAt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Nonce)))
	return append(b, r.Nonce...)
}

// DateLayout is the layout of dates in messages.
const DateLayout = time.DateOnly

// SubmitResultResponse acknowledges a stored result.
type SubmitResultResponse struct {
	Stored bool `json:"stored"`
}

// PollResultRequest asks for the result of the test registered with Secret.
type PollResultRequest struct {
	Secret []byte `json:"secret"`
}

// PollResultResponse answers a result poll.
type PollResultResponse struct {
	Result Result `json:"result"`
	// UploadAuthorization is set for a positive result whose upload has
	// not happened yet: a single-use token for an upload. Every poll
	// hands one out that is valid for at least the policy's authorization
	// time, so one that expired unused is simply replaced.
	UploadAuthorization []byte `json:"upload_authorization,omitempty"`
	// ExpiresAt is when UploadAuthorization stops being accepted, Unix
	// seconds.
	ExpiresAt int64 `json:"expires_at,omitempty"`
	// Uploaded is true once the upload was made and is durable.
	Uploaded bool `json:"uploaded,omitempty"`
	// UploadPending is true while an upload was made but is not durable
	// yet; the next poll says Uploaded, or, if it was lost (the backend
	// stopped before writing it), hands out an authorization again.
	UploadPending bool `json:"upload_pending,omitempty"`
}

// MediaTypeReport is the content type of the binary bodies of uploads and
// exposure checks. The report they carry starts with its version
// (contactlog.ReportVersion), and a backend refuses any other version as
// malformed: a phone that sends an older encoding learns so at once.
const MediaTypeReport = "application/vnd.conftrace.report"

// AuthorizationSize is the size of an upload authorization.
const AuthorizationSize = 32

// UploadRequest carries an infected user's daily keys and sightings. Its
// body is binary, AuthorizationSize bytes of authorization followed by the
// report (the encoding of package contactlog's Report).
type UploadRequest struct {
	Authorization []byte
	Report        []byte
}

// MediaType returns the content type of the request body.
func (UploadRequest) MediaType() string { return MediaTypeReport }

// MarshalBinary returns the request body.
func (r UploadRequest) MarshalBinary() ([]byte, error) {
	if len(r.Authorization) != AuthorizationSize {
		return nil, fmt.Errorf("api: upload authorization is %d bytes, want %d", len(r.Authorization), AuthorizationSize)
	}
	return append(append(make([]byte, 0, AuthorizationSize+len(r.Report)), r.Authorization...), r.Report...), nil
}

// UnmarshalBinary splits a request body into authorization and report; the
// two share body's memory. It fails only if body is too short to hold an
// authorization.
func (r *UploadRequest) UnmarshalBinary(body []byte) error {
	if len(body) < AuthorizationSize {
		return fmt.Errorf("api: an upload needs %d bytes of authorization, got %d bytes", AuthorizationSize, len(body))
	}
	r.Authorization, r.Report = body[:AuthorizationSize:AuthorizationSize], body[AuthorizationSize:]
	return nil
}

// UploadResponse acknowledges an upload: how many sightings and daily keys
// the backend took. The upload matches at once; it is written to the store
// on the backend's clock, not when it arrives (so that the store's writes
// do not tell who uploaded), so Durable is false and DurableBy says when it
// should be. The device's next result poll says Uploaded once it is
// durable.
type UploadResponse struct {
	Sightings int  `json:"sightings"`
	Keys      int  `json:"keys"`
	Durable   bool `json:"durable"`
	// DurableBy is when the upload should be written, Unix seconds.
	DurableBy int64 `json:"durable_by"`
}

// ExposureRequest carries a device's daily keys and sightings for an
// exposure check. Its body is the report itself.
type ExposureRequest struct {
	Report []byte
}

// MediaType returns the content type of the request body.
func (ExposureRequest) MediaType() string { return MediaTypeReport }

// MarshalBinary returns the request body.
func (r ExposureRequest) MarshalBinary() ([]byte, error) { return r.Report, nil }

// UnmarshalBinary takes the request body as the report; it shares body's
// memory.
func (r *ExposureRequest) UnmarshalBinary(body []byte) error {
	r.Report = body
	return nil
}

// ExposureResponse answers an exposure check, as precisely as the attested
// policy's answers setting says: by default (policy.AnswersCoarse) only
// whether the phone was exposed, on which day most recently, and by which
// rules; with policy.AnswersDetailed also every day of the retention window
// with its figures, matches below the threshold included. Either way the
// answer is padded to one size, so its size does not depend on the answer.
type ExposureResponse struct {
	Exposed bool `json:"exposed"`
	// LastExposure is the most recent exposed day (DateLayout), "" when
	// the phone was not exposed.
	LastExposure string `json:"last_exposure"`
	// Reciprocal and OneSided say which rules matched on the exposed days
	// (RuleReciprocal, RuleOneSided); both false when not exposed.
	Reciprocal bool `json:"reciprocal"`
	OneSided   bool `json:"one_sided"`
	// Days lists every day of the window, only in detailed answers.
	Days []ExposureDay `json:"days,omitempty"`
	// Order is the lowest order at which the phone was exposed: 1 for a
	// contact of a confirmed case, k+1 for a contact of a phone exposed at
	// order k that uploaded (n-order notifications, up to the policy's
	// max_order); 0 when not exposed. The other fields describe the
	// exposure of that order.
	Order int `json:"order"`
	// OrderAuthorization is set when the phone was exposed at an order
	// below the policy's max_order and has not used it yet: a single-use
	// token, sent as an exchange's upload authorization, to upload the
	// phone's own report as a source of order Order+1. It is bound to the
	// phone's daily key of the exposing day, and the upload keeps only the
	// days from UploadFrom on.
	OrderAuthorization []byte `json:"order_authorization,omitempty"`
	// OrderAuthorizationExpiresAt is when OrderAuthorization stops being
	// accepted, Unix seconds; a later check hands out a new one.
	OrderAuthorizationExpiresAt int64 `json:"order_authorization_expires_at,omitempty"`
	// UploadFrom is the exposing day the authorization binds (DateLayout).
	UploadFrom string `json:"upload_from,omitempty"`
}

// The matching rules an exposure can come from.
const (
	// RuleReciprocal: an infected user's upload holds a sighting of this
	// device's identifier in the same encounter in which this device
	// sighted theirs; both sides are proven by their daily keys.
	RuleReciprocal = "reciprocal"
	// RuleOneSided: this device sighted an identifier that derives from an
	// infected user's daily key (GAEN's model), whether the key came from
	// an upload or from an imported GAEN key export.
	RuleOneSided = "one_sided"
)

// ExposureDay summarises one day's matches. A sighting counts once, by the
// reciprocal rule when it matches both.
type ExposureDay struct {
	Date string `json:"date"`
	// Minutes is the total duration of matched sightings.
	Minutes int `json:"minutes"`
	// WeightedMinutes is Minutes weighted by the policy's attenuation
	// buckets, in hundredths of a minute.
	WeightedMinutes int `json:"weighted_minutes_x100"`
	// MinAttenuation is the lowest attenuation (closest contact) seen, dB;
	// 255 when there was no match.
	MinAttenuation int `json:"min_attenuation_db"`
	// Reciprocal and OneSided say which rules matched a sighting of the
	// day (RuleReciprocal, RuleOneSided).
	Reciprocal bool `json:"reciprocal"`
	OneSided   bool `json:"one_sided"`
	// Exposed is true when WeightedMinutes reaches the policy's threshold.
	Exposed bool `json:"exposed"`
}

// SignedTrace is a health authority's upload of an infected patient's GPS
// trace, sent to PathSubmitTrace.
type SignedTrace struct {
	Authority string `json:"authority"`
	// Trace is the trace in package gps's binary form.
	Trace []byte `json:"trace"`
	// IssuedAt is when the authority signed, Unix seconds, as in
	// SignedResult: it moves the backend's clock forward.
	IssuedAt int64 `json:"issued_at"`
	// Nonce makes every statement unique, so a replay is recognisable.
	Nonce []byte `json:"nonce"`
	// Signature is the authority's Ed25519 signature over SignedBytes.
	Signature []byte `json:"signature"`
}

// SignedBytes returns the bytes the authority signs.
func (t SignedTrace) SignedBytes() []byte {
	b := []byte("conftrace signed trace v1\x00")
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Authority)))
	b = append(b, t.Authority...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Trace)))
	b = append(b, t.Trace...)
	b = binary.BigEndian.AppendUint64(b, uint64(t.IssuedAt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Nonce)))
	return append(b, t.Nonce...)
}

// SubmitTraceResponse acknowledges a durable trace upload.
type SubmitTraceResponse struct {
	Points int `json:"points"`
}

// TraceCheckRequest carries a device's own trace, in package gps's binary
// form. The backend never stores it.
type TraceCheckRequest struct {
	Trace []byte `json:"trace"`
	// CertificateNonce, when not zeros, asks for an exposure certificate
	// with this nonce (certificate.go). Clients send CertificateNonceSize
	// zeros when not asking, so that the request's size does not say.
	CertificateNonce []byte `json:"certificate_nonce,omitempty"`
}

// MaxEpisodes is the most episodes a trace check answer lists.
const MaxEpisodes = 64

// TraceCheckResponse answers a trace check. Its padded size does not
// depend on the answer.
//
// Like exposure answers, it is as precise as the policy's answers setting
// says: by default only whether the phone was exposed and on which day most
// recently; detailed answers also list the episodes.
type TraceCheckResponse struct {
	Exposed bool `json:"exposed"`
	// LastExposure is the most recent day (DateLayout) of an episode that
	// counts towards an exposure, "" when the phone was not exposed.
	LastExposure string `json:"last_exposure"`
	// Episodes lists the first MaxEpisodes episodes, in time order, only
	// in detailed answers.
	Episodes []TraceEpisode `json:"episodes,omitempty"`
	// Truncated is true when there were more episodes than listed.
	Truncated bool `json:"truncated,omitempty"`
	// Certificate is the exposure certificate (package certificate,
	// binary form), when the request asked for one and the phone was
	// exposed.
	Certificate []byte `json:"certificate,omitempty"`
}

// TraceEpisode is a stretch of time the device spent near infected people.
type TraceEpisode struct {
	// Start and End are Unix seconds.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// ClosestMeters is the smallest distance to an infected person's fix.
	ClosestMeters float64 `json:"closest_m"`
	Minutes       float64 `json:"minutes"`
}

// MediaTypeZip is the content type of a GAEN key export, a zip file.
const MediaTypeZip = "application/zip"

// ImportRequest carries a GAEN key export, the zip file (export.bin and
// export.sig) a GAEN key server publishes, as its binary body. Anyone may
// send one: the backend imports it only if a key its policy lists signed
// it.
type ImportRequest struct {
	Export []byte
}

// MediaType returns the content type of the request body.
func (ImportRequest) MediaType() string { return MediaTypeZip }

// MarshalBinary returns the request body, the export itself.
func (r ImportRequest) MarshalBinary() ([]byte, error) { return r.Export, nil }

// UnmarshalBinary takes the request body as the export; it shares body's
// memory.
func (r *ImportRequest) UnmarshalBinary(body []byte) error {
	r.Export = body
	return nil
}

// ImportResponse says what the backend took from a GAEN key export.
type ImportResponse struct {
	// SignedBy names the policy's export key that verified the export.
	SignedBy string `json:"signed_by"`
	// Region is the export's region, as its key server wrote it.
	Region string `json:"region"`
	// Imported is how many daily keys the backend now matches one-sided.
	Imported int `json:"imported"`
	// Skipped is how many keys it left out: outside the retention window,
	// or with an invalid rolling period.
	Skipped int `json:"skipped"`
	// Duplicate is true when the same export was imported before; nothing
	// was imported again.
	Duplicate bool `json:"duplicate,omitempty"`
}

// DecoyRequest is a request that the backend answers and forgets. A client
// sends decoys so that an observer of the (padded, encrypted) traffic
// cannot tell real uploads and checks from noise. Its body is binary, of
// the report's content type, and Filler is all of it: a decoy with as many
// bytes of filler as a check's report looks the same on the wire.
type DecoyRequest struct {
	Filler []byte
}

// MediaType returns the content type of the request body, a report's.
func (DecoyRequest) MediaType() string { return MediaTypeReport }

// MarshalBinary returns the request body, the filler.
func (r DecoyRequest) MarshalBinary() ([]byte, error) { return r.Filler, nil }

// UnmarshalBinary takes the request body as the filler.
func (r *DecoyRequest) UnmarshalBinary(body []byte) error {
	r.Filler = body
	return nil
}

// DecoyResponse answers a decoy.
type DecoyResponse struct{}

// Error is the body of every refused inner request.
type Error struct {
	// Code is a stable machine-readable reason, one of the Code constants.
	Code string `json:"code"`
	// Message explains the refusal to a person.
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is makes errors.Is match on Code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Stable refusal codes.
const (
	CodeMalformed        = "malformed"
	CodeTooLarge         = "too_large"
	CodeBadSignature     = "bad_signature"
	CodeUnknownAuthority = "unknown_authority"
	CodeReplayed         = "replayed"
	CodeExpired          = "expired"
	CodeNotAuthorized    = "not_authorized"
	CodeAlreadyUsed      = "already_used"
	CodeOutOfWindow      = "out_of_window"
	// CodeRateLimited refuses an exposure check whose daily key took part
	// in the policy's limit of checks that day.
	CodeRateLimited = "rate_limited"
	// CodeFutureDated refuses a signed statement (a result, a trace, a
	// GAEN export's end) dated more than a few minutes after the
	// backend's clock, which verified statements move forward: the
	// message gives the backend's time.
	CodeFutureDated = "future_dated"
	// CodeStale refuses an inner request whose Date is outside the
	// gateway's window (a replay, or a wrong clock): the message gives the
	// gateway's time.
	CodeStale    = "stale"
	CodeConflict = "conflict"
	CodeNotFound = "not_found"
	CodeInternal = "internal"
)

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
