package enclave

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// resultRecord is what the enclave keeps about a test.
type resultRecord struct {
	Authority    string     `json:"authority"`
	Result       api.Result `json:"result"`
	TestDate     string     `json:"test_date"`
	SymptomOnset string     `json:"symptom_onset,omitempty"`
	SubmittedAt  int64      `json:"submitted_at"`
	// Authorization is the upload token issued at the first positive
	// poll, ExpiresAt its expiry; Uploaded is set when it was used.
	Authorization []byte `json:"authorization,omitempty"`
	ExpiresAt     int64  `json:"expires_at,omitempty"`
	Uploaded      bool   `json:"uploaded,omitempty"`
}

// authRecord is what an upload authorization refers to.
type authRecord struct {
	ResultKey []byte `json:"result_key"`
	ResultDay uint32 `json:"result_day"`
	ExpiresAt int64  `json:"expires_at"`
}

// Freshness bounds for signed results.
const (
	maxResultAge  = 7 * 24 * time.Hour
	maxClockAhead = 5 * time.Minute
)

// checkStatement verifies that a health authority the policy lists signed
// a statement, and that it is fresh.
func (e *Enclave) checkStatement(authority string, signed, signature []byte, issuedAt int64, nonce []byte) error {
	auth, ok := e.policy.Authority(authority)
	if !ok {
		return api.Errorf(api.CodeUnknownAuthority, "authority %q is not in the policy", authority)
	}
	if !ed25519.Verify(auth.PublicKey, signed, signature) {
		return api.Errorf(api.CodeBadSignature, "signature does not verify with %q's key", authority)
	}
	if len(nonce) < 16 {
		return api.Errorf(api.CodeMalformed, "nonce of %d bytes, want at least 16", len(nonce))
	}
	now := e.now()
	issued := time.Unix(issuedAt, 0)
	if issued.After(now.Add(maxClockAhead)) {
		return api.Errorf(api.CodeMalformed, "issued_at is %s in the future", issued.Sub(now).Round(time.Second))
	}
	if now.Sub(issued) > maxResultAge {
		return api.Errorf(api.CodeExpired, "statement signed %s ago; the limit is %s", now.Sub(issued).Round(time.Hour), maxResultAge)
	}
	return nil
}

// SubmitResult stores a health authority's signed result. A result for a
// code that already has one is refused as a replay: a new test gets a new
// code.
func (e *Enclave) SubmitResult(ctx context.Context, r api.SignedResult) (api.SubmitResultResponse, error) {
	if err := e.checkStatement(r.Authority, r.SignedBytes(), r.Signature, r.IssuedAt, r.Nonce); err != nil {
		return api.SubmitResultResponse{}, err
	}
	code, err := api.NormalizeTestCode(r.TestCode)
	if err != nil || code != r.TestCode {
		return api.SubmitResultResponse{}, api.Errorf(api.CodeMalformed, "test code %q is not in canonical form", r.TestCode)
	}
	if r.Result != api.Positive && r.Result != api.Negative {
		return api.SubmitResultResponse{}, api.Errorf(api.CodeMalformed, "result %q: want positive or negative", r.Result)
	}
	now := e.now()
	testDate, err := time.Parse(api.DateLayout, r.TestDate)
	if err != nil || testDate.After(now) {
		return api.SubmitResultResponse{}, api.Errorf(api.CodeMalformed, "test_date %q: want a past YYYY-MM-DD date", r.TestDate)
	}
	if r.SymptomOnset != "" {
		if onset, err := time.Parse(api.DateLayout, r.SymptomOnset); err != nil || onset.After(now) {
			return api.SubmitResultResponse{}, api.Errorf(api.CodeMalformed, "symptom_onset %q: want a past YYYY-MM-DD date", r.SymptomOnset)
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	key := e.recordKey(tableResults, code)
	var b store.Batch
	b.MustNotExist(tableResults, key)
	rec := resultRecord{Authority: r.Authority, Result: r.Result, TestDate: r.TestDate, SymptomOnset: r.SymptomOnset, SubmittedAt: now.Unix()}
	if err := e.sealPut(&b, calendar.DayOf(now), tableResults, key, rec); err != nil {
		return api.SubmitResultResponse{}, e.internal("sealing result", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return api.SubmitResultResponse{}, api.Errorf(api.CodeReplayed, "a result for test code %s was already submitted", code)
		}
		return api.SubmitResultResponse{}, e.internal("storing result", err)
	}
	return api.SubmitResultResponse{Stored: true}, nil
}

// PollResult answers a device that proves knowledge of its test secret.
func (e *Enclave) PollResult(ctx context.Context, r api.PollResultRequest) (api.PollResultResponse, error) {
	if len(r.Secret) != api.TestSecretSize {
		return api.PollResultResponse{}, api.Errorf(api.CodeMalformed, "secret of %d bytes, want %d", len(r.Secret), api.TestSecretSize)
	}
	code := api.TestCode(r.Secret)
	clear(r.Secret)
	key := e.recordKey(tableResults, code)

	e.mu.Lock()
	defer e.mu.Unlock()
	var rec resultRecord
	stored, err := e.getOpen(ctx, tableResults, key, &rec)
	if errors.Is(err, store.ErrNotFound) {
		return api.PollResultResponse{Result: api.Pending}, nil
	}
	if err != nil {
		return api.PollResultResponse{}, e.internal("reading result", err)
	}
	if rec.Result != api.Positive {
		return api.PollResultResponse{Result: rec.Result}, nil
	}
	if rec.Uploaded {
		return api.PollResultResponse{Result: api.Positive, Uploaded: true}, nil
	}
	now := e.now()
	if rec.Authorization != nil {
		if now.Unix() >= rec.ExpiresAt {
			return api.PollResultResponse{Result: api.Positive, ExpiresAt: rec.ExpiresAt}, nil
		}
		return api.PollResultResponse{Result: api.Positive, UploadAuthorization: rec.Authorization, ExpiresAt: rec.ExpiresAt}, nil
	}
	// First positive poll: issue the single-use authorization.
	token := make([]byte, 32)
	rand.Read(token)
	rec.Authorization = token
	rec.ExpiresAt = now.Add(e.policy.UploadAuthorizationTTL()).Unix()
	resultDay := stored.Day
	var b store.Batch
	if err := e.sealPut(&b, resultDay, tableResults, key, rec); err != nil {
		return api.PollResultResponse{}, e.internal("sealing result", err)
	}
	authKey := authKey(token)
	b.MustNotExist(tableAuths, authKey)
	if err := e.sealPut(&b, calendar.DayOf(now), tableAuths, authKey, authRecord{ResultKey: key, ResultDay: uint32(resultDay), ExpiresAt: rec.ExpiresAt}); err != nil {
		return api.PollResultResponse{}, e.internal("sealing authorization", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		return api.PollResultResponse{}, e.internal("storing authorization", err)
	}
	return api.PollResultResponse{Result: api.Positive, UploadAuthorization: token, ExpiresAt: rec.ExpiresAt}, nil
}
