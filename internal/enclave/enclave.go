// Package enclave is the trusted logic of the conftrace backend: the only
// code that sees test results, contact tuples and exposure checks in the
// clear. It runs inside the TEE and depends only on interfaces for what lies
// outside: an untrusted store that holds sealed bytes, the TEE's sealing key
// and a clock; it keeps its match indexes in memory. It knows nothing of
// HTTP, SQL or a particular TEE.
//
// What it persists is sealed under per-day data keys (package seal), which
// a key-encryption key wraps, which the TEE's sealing key wraps in turn:
// the store, its backups and its administrator see only ciphertext, and
// deleting a day's key (retention) makes that day unreadable everywhere.
// Record keys that would otherwise reveal something (a test code) are
// replaced by a MAC under a key derived from the key-encryption key.
//
// Flows:
//   - SubmitResult: a health authority's signed result for a test code.
//   - PollResult: a device proves knowledge of its test secret and learns
//     the result; a positive result comes with a single-use, expiring upload
//     authorization.
//   - Upload: consumes the authorization and stores the contact tuples,
//     acknowledging only once the write is durable.
//   - CheckExposure: a device sends its own tuples and learns whether any
//     uploaded tuple mirrors one of them. Nothing about a check is stored or
//     logged.
//   - SubmitTrace: a health authority's signed GPS trace of an infected
//     patient, sealed under the days it covers and indexed in memory.
//   - CheckTrace: a device sends its own GPS trace and learns the episodes
//     in which it came within the policy's distance and time of a patient;
//     the trace is never stored and is cleared after the answer.
//
// Open rebuilds both indexes from the sealed store, and Expire deletes the
// days past the retention window from the store, the keyring and the
// indexes.
package enclave

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/gpsindex"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// Tables of the store.
const (
	tableKEK       = "kek"        // the wrapped key-encryption key (NoDay)
	tableDayKeys   = "daykeys"    // wrapped day keys, each in its own day
	tableResults   = "results"    // test results by MAC of the test code
	tableAuths     = "auths"      // unused upload authorizations by hash
	tableAuthsUsed = "auths_used" // used upload authorizations by hash
	tableUploads   = "uploads"    // contact tuples by upload id and day
)

var kekRecordKey = []byte("kek")

// Config wires an Enclave.
type Config struct {
	Policy policy.Policy
	// Store persists sealed records.
	Store store.Store
	// SealingKey is the TEE's sealing key; it wraps the key-encryption key.
	SealingKey [seal.KeySize]byte
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives operational events, never personal data.
	Logger *slog.Logger
}

// Enclave is the backend's trusted logic. It is safe for concurrent use.
type Enclave struct {
	policy policy.Policy
	store  store.Store
	keys   *seal.Keyring
	macKey []byte
	index  matchindex.Index
	gps    *gpsindex.Index
	now    func() time.Time
	log    *slog.Logger

	// mu serialises the flows that change state, so that checks and writes
	// of one flow see no other flow's half-done work. Exposure checks only
	// read and do not take it.
	mu sync.Mutex
}

// Open starts the enclave over cfg.Store: it obtains the key-encryption key
// (making one on first start), loads the day keys, drops days past
// retention and rebuilds the match index from the stored uploads.
func Open(ctx context.Context, cfg Config) (*Enclave, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	if cfg.Store == nil {
		return nil, errors.New("enclave: no store")
	}
	e := &Enclave{policy: cfg.Policy, store: cfg.Store, index: matchindex.NewCompact(), now: cfg.Now, log: cfg.Logger}
	gi, err := gpsindex.New(cfg.Policy.GPS.Params())
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	e.gps = gi
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	kek, err := e.loadKEK(ctx, cfg.SealingKey)
	if err != nil {
		return nil, err
	}
	if e.keys, err = seal.NewKeyring(kek); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	e.macKey, err = hkdf.Key(sha256.New, kek[:], nil, "conftrace enclave record-key mac v1", 32)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	clear(kek[:])
	if err := e.loadDayKeys(ctx); err != nil {
		return nil, err
	}
	if err := e.Expire(ctx); err != nil {
		return nil, err
	}
	if err := e.rebuildIndex(ctx); err != nil {
		return nil, err
	}
	if err := e.rebuildGPS(ctx); err != nil {
		return nil, fmt.Errorf("enclave: rebuilding GPS index: %w", err)
	}
	return e, nil
}

func (e *Enclave) loadKEK(ctx context.Context, sealingKey [seal.KeySize]byte) ([seal.KeySize]byte, error) {
	rec, err := e.store.Get(ctx, tableKEK, kekRecordKey)
	if errors.Is(err, store.ErrNotFound) {
		kek := seal.GenerateKEK()
		wrapped, err := seal.WrapKEK(sealingKey, kek)
		if err != nil {
			return kek, fmt.Errorf("enclave: wrapping key-encryption key: %w", err)
		}
		var b store.Batch
		b.MustNotExist(tableKEK, kekRecordKey)
		b.Put(tableKEK, kekRecordKey, store.NoDay, wrapped)
		if err := e.store.Apply(ctx, &b); err != nil {
			return kek, fmt.Errorf("enclave: storing key-encryption key: %w", err)
		}
		e.log.Info("created a new key-encryption key")
		return kek, nil
	}
	if err != nil {
		return [seal.KeySize]byte{}, fmt.Errorf("enclave: reading key-encryption key: %w", err)
	}
	kek, err := seal.UnwrapKEK(sealingKey, rec.Value)
	if err != nil {
		return kek, fmt.Errorf("enclave: the store's key-encryption key does not open with this TEE's sealing key (another build, another platform, or tampering): %w", err)
	}
	return kek, nil
}

func (e *Enclave) loadDayKeys(ctx context.Context) error {
	return e.store.Scan(ctx, tableDayKeys, func(r store.Record) error {
		day := r.Day
		if len(r.Key) != 4 || binary.BigEndian.Uint32(r.Key) != uint32(day) {
			e.log.Error("day key record misplaced; ignored", "table", tableDayKeys, "day", r.Day)
			return nil
		}
		if err := e.keys.Load(day, r.Value); err != nil {
			// A tampered day key loses that day's records; it must not
			// stop the service.
			e.log.Error("day key does not unwrap; that day's records are unreadable", "day", r.Day, "err", err)
		}
		return nil
	})
}

func (e *Enclave) rebuildIndex(ctx context.Context) error {
	var tuples, bad int
	err := e.store.Scan(ctx, tableUploads, func(r store.Record) error {
		day := r.Day
		plain, err := e.keys.Open(day, tableUploads, r.Key, r.Value)
		if err != nil {
			bad++
			e.log.Error("stored upload does not open; ignored (tampered, swapped or replayed)", "table", tableUploads, "day", r.Day, "err", err)
			return nil
		}
		ts, err := contactlog.UnmarshalBatch(plain, 1<<24)
		if err != nil {
			bad++
			e.log.Error("stored upload does not decode; ignored", "day", r.Day, "err", err)
			return nil
		}
		if err := e.index.Add(entries(ts, day)); err != nil {
			return fmt.Errorf("enclave: rebuilding index: %w", err)
		}
		tuples += len(ts)
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	e.log.Info("match index rebuilt", "tuples", tuples, "refused_records", bad, "index_bytes", e.index.MemBytes())
	return nil
}

func entries(ts []contactlog.Tuple, day calendar.Day) []matchindex.Entry {
	es := make([]matchindex.Entry, len(ts))
	for i, t := range ts {
		es[i] = matchindex.Entry{
			Key: matchindex.NewKey(t.Own, t.Heard),
			Contact: matchindex.Contact{
				Interval:    uint32(t.Interval),
				Minutes:     t.Duration,
				Attenuation: t.Attenuation,
				Day:         day,
			},
		}
	}
	return es
}

// window returns the first and last day of the retention window at now.
func (e *Enclave) window(now time.Time) (first, last calendar.Day) {
	return calendar.DayOf(e.policy.WindowStart(now)), calendar.DayOf(now)
}

// Expire forgets every day older than the retention window: its key goes
// from memory and store, its tuples from the index, its records from the
// store. Call it at least daily.
func (e *Enclave) Expire(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	first, _ := e.window(e.now())
	days, err := e.store.Days(ctx)
	if err != nil {
		return fmt.Errorf("enclave: expiring: %w", err)
	}
	for _, d := range days {
		if d >= first {
			continue
		}
		e.keys.Forget(d)
		dropped := e.index.Drop(d)
		dropped += e.gps.Drop(d)
		n, err := e.store.DeleteDay(ctx, d)
		if err != nil {
			return fmt.Errorf("enclave: deleting day %d: %w", d, err)
		}
		e.log.Info("day expired", "day", time.Unix(int64(d)*86400, 0).UTC().Format(api.DateLayout), "records", n, "tuples_and_points", dropped)
	}
	for _, d := range e.keys.Days() {
		if d < first {
			e.keys.Forget(d)
		}
	}
	return nil
}

// recordKey hides an identifier (a test code) from the store: a MAC under
// a key only the enclave has.
func (e *Enclave) recordKey(label, id string) []byte {
	m := hmac.New(sha256.New, e.macKey)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return m.Sum(nil)[:16]
}

// sealPut seals v as JSON and adds it to b, together with its day key.
func (e *Enclave) sealPut(b *store.Batch, day calendar.Day, table string, key []byte, v any) error {
	plain, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return e.sealPutBytes(b, day, table, key, plain)
}

func (e *Enclave) sealPutBytes(b *store.Batch, day calendar.Day, table string, key, plain []byte) error {
	wrapped, err := e.keys.DayKey(day)
	if err != nil {
		return err
	}
	// The wrapped day key goes into the same atomic batch as the first
	// record sealed under it, so no record is ever durable without its key.
	b.Put(tableDayKeys, binary.BigEndian.AppendUint32(nil, uint32(day)), day, wrapped)
	sealed, err := e.keys.Seal(day, table, key, plain)
	if err != nil {
		return err
	}
	b.Put(table, key, day, sealed)
	return nil
}

// getOpen reads and opens a sealed JSON record. A record that does not
// open is reported and treated as an internal error, never used.
func (e *Enclave) getOpen(ctx context.Context, table string, key []byte, v any) (store.Record, error) {
	rec, err := e.store.Get(ctx, table, key)
	if err != nil {
		return rec, err
	}
	plain, err := e.keys.Open(rec.Day, table, key, rec.Value)
	if err != nil {
		e.log.Error("stored record does not open; refused", "table", table, "err", err)
		return rec, fmt.Errorf("enclave: %s record: %w", table, err)
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return rec, fmt.Errorf("enclave: %s record: %w", table, err)
	}
	return rec, nil
}

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

func authKey(token []byte) []byte {
	h := sha256.Sum256(append([]byte("conftrace upload authorization v1\x00"), token...))
	return h[:16]
}

// Upload consumes an upload authorization and stores the tuples. It
// validates every tuple first and stores all or none; it returns only after
// the write is durable.
func (e *Enclave) Upload(ctx context.Context, r api.UploadRequest) (api.UploadResponse, error) {
	if len(r.Authorization) != 32 {
		return api.UploadResponse{}, api.Errorf(api.CodeNotAuthorized, "no valid upload authorization (poll a positive result first)")
	}
	tuples, err := contactlog.UnmarshalBatch(r.Tuples, e.policy.Limits.MaxUploadTuples)
	if err != nil {
		if errors.Is(err, contactlog.ErrTooMany) {
			return api.UploadResponse{}, api.Errorf(api.CodeTooLarge, "%v (policy limit %d tuples)", err, e.policy.Limits.MaxUploadTuples)
		}
		return api.UploadResponse{}, api.Errorf(api.CodeMalformed, "tuples: %v", err)
	}
	defer clear(tuples)
	if len(tuples) == 0 {
		return api.UploadResponse{}, api.Errorf(api.CodeMalformed, "an upload needs at least one tuple")
	}
	now := e.now()
	firstDay, _ := e.window(now)
	latest := enid.IntervalOf(now) + 1 // one interval of clock skew
	byDay := map[calendar.Day][]contactlog.Tuple{}
	for i, t := range tuples {
		day := calendar.DayOf(t.Interval.Time())
		switch {
		case t.Interval > latest:
			return api.UploadResponse{}, api.Errorf(api.CodeOutOfWindow, "tuple %d is in the future (interval %d, now %d)", i, t.Interval, latest-1)
		case day < firstDay:
			return api.UploadResponse{}, api.Errorf(api.CodeOutOfWindow, "tuple %d is older than the %d-day retention window", i, e.policy.RetentionDays)
		case t.Duration == 0 || int(t.Duration) > e.policy.Limits.MaxTupleMinutes:
			return api.UploadResponse{}, api.Errorf(api.CodeMalformed, "tuple %d lasts %d minutes, want 1 to %d", i, t.Duration, e.policy.Limits.MaxTupleMinutes)
		}
		byDay[day] = append(byDay[day], t)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	ak := authKey(r.Authorization)
	var auth authRecord
	if _, err := e.getOpen(ctx, tableAuths, ak, &auth); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			return api.UploadResponse{}, e.internal("reading authorization", err)
		}
		if _, err := e.store.Get(ctx, tableAuthsUsed, ak); err == nil {
			return api.UploadResponse{}, api.Errorf(api.CodeAlreadyUsed, "this upload authorization was already used")
		}
		return api.UploadResponse{}, api.Errorf(api.CodeNotAuthorized, "unknown upload authorization (poll a positive result first)")
	}
	if now.Unix() >= auth.ExpiresAt {
		return api.UploadResponse{}, api.Errorf(api.CodeExpired, "the upload authorization expired at %s", time.Unix(auth.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	var rec resultRecord
	if _, err := e.getOpen(ctx, tableResults, auth.ResultKey, &rec); err != nil {
		return api.UploadResponse{}, e.internal("reading result", err)
	}
	rec.Uploaded = true

	var b store.Batch
	// Single use, enforced by the store too (for replicas sharing it):
	// the authorization must still be unused when the batch applies.
	b.MustExist(tableAuths, ak)
	b.MustNotExist(tableAuthsUsed, ak)
	b.Delete(tableAuths, ak)
	b.Put(tableAuthsUsed, ak, calendar.DayOf(now), []byte{1})
	if err := e.sealPut(&b, calendar.Day(auth.ResultDay), tableResults, auth.ResultKey, rec); err != nil {
		return api.UploadResponse{}, e.internal("sealing result", err)
	}
	uploadID := make([]byte, 16)
	rand.Read(uploadID)
	var added []matchindex.Entry
	for day, ts := range byDay {
		batch, err := contactlog.AppendBatch(nil, ts)
		if err != nil {
			return api.UploadResponse{}, e.internal("encoding tuples", err)
		}
		key := binary.BigEndian.AppendUint32(append([]byte{}, uploadID...), uint32(day))
		if err := e.sealPutBytes(&b, day, tableUploads, key, batch); err != nil {
			return api.UploadResponse{}, e.internal("sealing tuples", err)
		}
		clear(batch)
		added = append(added, entries(ts, day)...)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return api.UploadResponse{}, api.Errorf(api.CodeAlreadyUsed, "this upload authorization was already used")
		}
		return api.UploadResponse{}, e.internal("storing upload", err)
	}
	// Durable: now the tuples may match.
	if err := e.index.Add(added); err != nil {
		return api.UploadResponse{}, e.internal("indexing upload", err)
	}
	return api.UploadResponse{Accepted: len(tuples)}, nil
}

// CheckExposure answers whether any uploaded tuple mirrors one of the
// device's. The answer lists every day of the retention window, so its
// size does not depend on whether the device was exposed. Tuples outside the
// window cannot match and are skipped. Nothing is stored or logged.
func (e *Enclave) CheckExposure(ctx context.Context, r api.ExposureRequest) (api.ExposureResponse, error) {
	tuples, err := contactlog.UnmarshalBatch(r.Tuples, e.policy.Limits.MaxCheckTuples)
	clear(r.Tuples)
	if err != nil {
		if errors.Is(err, contactlog.ErrTooMany) {
			return api.ExposureResponse{}, api.Errorf(api.CodeTooLarge, "%v (policy limit %d tuples)", err, e.policy.Limits.MaxCheckTuples)
		}
		return api.ExposureResponse{}, api.Errorf(api.CodeMalformed, "tuples: %v", err)
	}
	defer clear(tuples)
	now := e.now()
	first, last := e.window(now)
	n := int(last-first) + 1
	minutes := make([]int, n)
	weighted := make([]int, n)
	minAtt := make([]int, n)
	for i := range minAtt {
		minAtt[i] = 255
	}
	risk := e.policy.Risk
	var buf []matchindex.Contact
	for _, t := range tuples {
		day := calendar.DayOf(t.Interval.Time())
		if day < first || day > last {
			continue
		}
		buf = matchindex.Match(e.index, buf[:0], matchindex.NewKey(t.Own, t.Heard), uint32(t.Interval), uint32(risk.IntervalTolerance))
		if len(buf) == 0 {
			continue
		}
		// Both sides heard each other for at most the shorter of the two
		// durations; the attenuation is what this device measured.
		m := int(t.Duration)
		if c := int(buf[0].Minutes); c < m {
			m = c
		}
		d := int(day - first)
		minutes[d] += m
		weighted[d] += risk.WeightedMinutes(m, int(t.Attenuation))
		minAtt[d] = min(minAtt[d], int(t.Attenuation))
	}
	clear(buf)
	resp := api.ExposureResponse{Days: make([]api.ExposureDay, n)}
	for i := range n {
		exposed := risk.Exposed(weighted[i])
		resp.Exposed = resp.Exposed || exposed
		resp.Days[i] = api.ExposureDay{
			Date:            dayDate(first + calendar.Day(i)),
			Minutes:         minutes[i],
			WeightedMinutes: weighted[i],
			MinAttenuation:  minAtt[i],
			Exposed:         exposed,
		}
	}
	return resp, nil
}

// ExposureResponseBound returns the encoded size of the largest exposure
// answer the policy allows, so the HTTP layer can pad every answer to it.
func (e *Enclave) ExposureResponseBound() int {
	p := e.policy
	most := p.Limits.MaxCheckTuples * p.Limits.MaxTupleMinutes
	heaviest := 0
	for _, w := range p.Risk.WeightsPercent {
		heaviest = max(heaviest, w)
	}
	resp := api.ExposureResponse{Exposed: true, Days: make([]api.ExposureDay, p.RetentionDays)}
	for i := range resp.Days {
		resp.Days[i] = api.ExposureDay{Date: "0000-00-00", Minutes: most, WeightedMinutes: most * heaviest, MinAttenuation: 255, Exposed: true}
	}
	b, _ := json.Marshal(resp)
	return len(b) + 64 // Binary HTTP framing and the content-type field
}

func dayDate(d calendar.Day) string { return d.Time().Format(api.DateLayout) }

// internal logs an unexpected failure (without personal data) and returns
// the opaque error the client sees.
func (e *Enclave) internal(what string, err error) error {
	e.log.Error("internal error", "op", what, "err", err)
	return fmt.Errorf("enclave: %s: %w", what, err)
}
