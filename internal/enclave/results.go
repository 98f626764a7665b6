package enclave

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// resultRecord is what the enclave keeps about a test. The health
// authority's submission writes it once; nothing a phone does rewrites it,
// so that the store does not show which results were polled or used.
type resultRecord struct {
	Authority    string     `json:"authority"`
	Result       api.Result `json:"result"`
	TestDate     string     `json:"test_date"`
	SymptomOnset string     `json:"symptom_onset,omitempty"`
	SubmittedAt  int64      `json:"submitted_at"`
}

// result is a test's state in memory: its record, its day, and whether its
// upload was made. Results are kept in memory so that polls read nothing
// from the store (the host would see which records are read).
type result struct {
	resultRecord
	day calendar.Day
	// uploaded is set when the upload was made, durable when the journal
	// wrote it.
	uploaded, durable bool
}

// resultRecordSize is the size every result record is padded to before it
// is sealed, so that records do not differ in length by what they say.
const resultRecordSize = 256

// maxResultAge is how long after its signing a statement is accepted.
const maxResultAge = 7 * 24 * time.Hour

// checkStatement verifies that a health authority the policy lists signed
// a statement, and that it is fresh; its signing time moves the enclave's
// clock (clock.go), unless it is too far ahead.
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
	issued := time.Unix(issuedAt, 0)
	if err := e.witness("issued_at", issued); err != nil {
		return err
	}
	now := e.now()
	if now.Sub(issued) > maxResultAge {
		return api.Errorf(api.CodeExpired, "statement signed %s ago; the limit is %s", now.Sub(issued).Round(time.Hour), maxResultAge)
	}
	return nil
}

// SubmitResult stores a health authority's signed result. A result for a
// code that already has one is refused as a replay: a new test gets a new
// code. It returns once the result is durable.
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
	if _, ok := e.results[string(key)]; ok {
		return api.SubmitResultResponse{}, api.Errorf(api.CodeReplayed, "a result for test code %s was already submitted", code)
	}
	rec := resultRecord{Authority: r.Authority, Result: r.Result, TestDate: r.TestDate, SymptomOnset: r.SymptomOnset, SubmittedAt: now.Unix()}
	plain, err := marshalPadded(rec, resultRecordSize)
	if err != nil {
		return api.SubmitResultResponse{}, e.internal("encoding result", err)
	}
	day := calendar.DayOf(now)
	var b store.Batch
	b.MustNotExist(tableResults, key)
	err = e.sealPutBytes(&b, day, tableResults, key, plain)
	clear(plain)
	if err != nil {
		return api.SubmitResultResponse{}, e.internal("sealing result", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) && !dayKeyConflict(err) {
			return api.SubmitResultResponse{}, api.Errorf(api.CodeReplayed, "a result for test code %s was already submitted", code)
		}
		return api.SubmitResultResponse{}, e.internal("storing result", err)
	}
	e.noteStoredDayKeys(&b)
	e.results[string(key)] = &result{resultRecord: rec, day: day}
	e.stats.add(statResults, 1)
	return api.SubmitResultResponse{Stored: true}, nil
}

// PollResult answers a device that proves knowledge of its test secret.
// It reads and writes nothing: a positive result's upload authorization is
// derived, not stored (see authorization), so that neither the store nor
// the host's view of it shows that a positive result was polled, and a
// poll replayed by a relay starts no clock.
func (e *Enclave) PollResult(ctx context.Context, r api.PollResultRequest) (api.PollResultResponse, error) {
	if len(r.Secret) != api.TestSecretSize {
		return api.PollResultResponse{}, api.Errorf(api.CodeMalformed, "secret of %d bytes, want %d", len(r.Secret), api.TestSecretSize)
	}
	key := e.recordKey(tableResults, api.TestCode(r.Secret))
	clear(r.Secret)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pollLocked(key), nil
}

// pollLocked answers a poll of the result under key. The caller holds e.mu.
func (e *Enclave) pollLocked(key []byte) api.PollResultResponse {
	res, ok := e.results[string(key)]
	switch {
	case !ok:
		return api.PollResultResponse{Result: api.Pending}
	case res.Result != api.Positive:
		return api.PollResultResponse{Result: res.Result}
	case res.uploaded && res.durable:
		return api.PollResultResponse{Result: api.Positive, Uploaded: true}
	case res.uploaded:
		return api.PollResultResponse{Result: api.Positive, UploadPending: true}
	}
	token, expires := e.authorization(key, res, e.now())
	return api.PollResultResponse{Result: api.Positive, UploadAuthorization: token, ExpiresAt: expires}
}

// An upload authorization is derived from the result it authorizes and the
// current period of the policy's authorization TTL since the result was
// submitted: the result's key (16 bytes), the period (4) and a MAC of both
// under a key derived from the key-encryption key (12). Every poll in a
// period returns the same token; a token is accepted in its period and the
// next, so a poll always hands out one valid for at least the TTL, and an
// expired, unused one is replaced by the next poll. It is single-use: the
// upload marks the result uploaded.
const (
	authKeyLen    = 16
	authPeriodLen = 4
	authMACLen    = api.AuthorizationSize - authKeyLen - authPeriodLen
)

// authorization returns the token of res's current period at now and when
// it stops being accepted (Unix seconds).
func (e *Enclave) authorization(key []byte, res *result, now time.Time) ([]byte, int64) {
	ttl := int64(e.policy.UploadAuthorizationSeconds)
	period := max(now.Unix()-res.SubmittedAt, 0) / ttl
	token := make([]byte, 0, api.AuthorizationSize)
	token = append(token, key[:authKeyLen]...)
	token = binary.BigEndian.AppendUint32(token, uint32(period))
	token = append(token, e.authMAC(token)...)
	return token, res.SubmittedAt + (period+2)*ttl
}

func (e *Enclave) authMAC(keyAndPeriod []byte) []byte {
	m := hmac.New(sha256.New, e.authKey)
	m.Write(keyAndPeriod)
	return m.Sum(nil)[:authMACLen]
}

// checkAuthorization returns the result an upload token authorizes, or
// why it does not. The caller holds e.mu.
func (e *Enclave) checkAuthorization(token []byte, now time.Time) ([]byte, *result, error) {
	if len(token) != api.AuthorizationSize || !hmac.Equal(e.authMAC(token[:authKeyLen+authPeriodLen]), token[authKeyLen+authPeriodLen:]) {
		return nil, nil, errNotAuthorized()
	}
	key := token[:authKeyLen]
	res, ok := e.results[string(key)]
	if !ok || res.Result != api.Positive {
		return nil, nil, errNotAuthorized()
	}
	if res.uploaded {
		return nil, nil, api.Errorf(api.CodeAlreadyUsed, "this upload authorization was already used")
	}
	ttl := int64(e.policy.UploadAuthorizationSeconds)
	period := int64(binary.BigEndian.Uint32(token[authKeyLen:]))
	if expires := res.SubmittedAt + (period+2)*ttl; now.Unix() >= expires {
		return nil, nil, api.Errorf(api.CodeExpired, "the upload authorization expired at %s; poll the result for a new one", time.Unix(expires, 0).UTC().Format(time.RFC3339))
	}
	return key, res, nil
}

func errNotAuthorized() error {
	return api.Errorf(api.CodeNotAuthorized, "unknown upload authorization (poll a positive result first)")
}

// loadResults reads every stored result into memory when the enclave
// starts. A record that does not open or decode is reported and skipped.
func (e *Enclave) loadResults(ctx context.Context) error {
	bad := 0
	err := e.store.Scan(ctx, tableResults, func(r store.Record) error {
		plain, err := e.keys.Open(r.Day, tableResults, r.Key, r.Value)
		if err != nil {
			bad++
			e.log.Error("stored result does not open; ignored (tampered, swapped or replayed)", "day", r.Day, "err", err)
			return nil
		}
		var rec resultRecord
		err = unmarshalPadded(plain, &rec)
		clear(plain)
		if err != nil || len(r.Key) != authKeyLen {
			bad++
			e.log.Error("stored result does not decode; ignored", "day", r.Day, "err", err)
			return nil
		}
		e.results[string(r.Key)] = &result{resultRecord: rec, day: r.Day}
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: loading results: %w", err)
	}
	e.log.Info("results loaded", "results", len(e.results), "refused_records", bad)
	return nil
}

// marshalPadded encodes v as JSON padded with spaces to size bytes, which
// JSON ignores.
func marshalPadded(v any, size int) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > size {
		return nil, fmt.Errorf("record of %d bytes exceeds its padded size %d", len(b), size)
	}
	for len(b) < size {
		b = append(b, ' ')
	}
	return b, nil
}

// unmarshalPadded decodes what marshalPadded encoded.
func unmarshalPadded(b []byte, v any) error { return json.Unmarshal(b, v) }
