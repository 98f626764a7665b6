// Package enclave is the trusted logic of the conftrace backend: the only
// code that sees test results, contact tuples and exposure checks in the
// clear. It runs inside the TEE and depends only on interfaces for what lies
// outside: an untrusted store that holds sealed bytes, the TEE's sealing key
// and the host's clock, which it does not trust (clock.go); it keeps its
// match indexes in memory. It knows nothing of HTTP, SQL or a particular
// TEE.
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
//   - Upload: consumes the authorization and takes the daily keys and
//     sightings; they match at once, and the journal writes them on the
//     clock (journal.go), after which the next poll says they are durable.
//   - Exchange: a phone's daily request, one shape for all: the exposure
//     check, and the poll and the upload when it carries them.
//   - CheckExposure: a device sends its own tuples and learns whether any
//     uploaded tuple mirrors one of them. Nothing about a check is stored or
//     logged.
//   - n-order notifications (order.go, docs/n-order.md): a phone exposed
//     below the policy's max_order finds in its answer a single-use token
//     to upload as a source of the next order, from its exposing day on;
//     answers say the lowest order exposed at, and a cycle rule keeps a
//     contact from being sent back to, or counted against, its source.
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
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/gpsindex"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// Tables of the store.
const (
	tableKEK     = "kek"     // the wrapped key-encryption key (NoDay)
	tableDayKeys = "daykeys" // wrapped day keys, each in its own day
	tableResults = "results" // test results by MAC of the test code
	tableJournal = "journal" // what phones caused, written on the clock (journal.go)
)

// Config wires an Enclave.
type Config struct {
	Policy policy.Policy
	// Store persists sealed records.
	Store store.Store
	// SealingKey is the TEE's sealing key; it wraps the key-encryption key.
	// The zero key means the TEE has none (TDX): the key-encryption key
	// then comes from KEK, or is made for a new store and lives as long
	// as a replica holding it runs.
	SealingKey [seal.KeySize]byte
	// KEK, if not nil, is the key-encryption key a peer replica released
	// to this one (package keyrelease). Open refuses it unless the store's
	// check value recognizes it, or the store has no key yet.
	KEK *[seal.KeySize]byte
	// HostClock is the host's clock; nil means time.Now. The enclave does
	// not trust it: its own time (Enclave.Now) never goes back, starts at
	// the time mark it sealed, and follows verified statements (clock.go).
	HostClock func() time.Time
	// Logger receives operational events, never personal data.
	Logger *slog.Logger
}

// Enclave is the backend's trusted logic. It is safe for concurrent use.
type Enclave struct {
	policy policy.Policy
	store  store.Store
	keys   *seal.Keyring
	// kek is kept for ReleaseKEK (kek.go).
	kek    [seal.KeySize]byte
	macKey []byte
	// authKey authenticates upload authorizations (results.go).
	authKey []byte
	// orders is the state of n-order notifications (order.go).
	orders *orders
	// certKey signs exposure certificates (certificate.go).
	certKey ed25519.PrivateKey
	// results are every test's state, in memory (results.go).
	results map[string]*result
	// journal holds what phones caused until the clock writes it.
	journal *journal
	// checks limits the exchanges each daily key takes part in a day.
	checks *CheckLimiter
	index  matchindex.Index // reciprocal: uploaded sightings by (own, heard)
	// oneSided holds the RPIs of uploaded and imported daily keys.
	oneSided matchindex.Index
	// gaenKeys verify imported GAEN exports (the policy's).
	gaenKeys []gaen.VerifyingKey
	gps      *gpsindex.Index
	clock    *trustedClock
	// heads is this run's rollback head (head.go).
	heads *heads
	log   *slog.Logger
	// lagReported is set when the host's clock was logged as behind the
	// enclave's, and cleared by every flush (clock.go). Guarded by mu.
	lagReported bool
	// replica follows the other replicas sharing the store (follow.go).
	replica replica
	// stats counts for public statistics; nil when the policy releases
	// none (statistics.go).
	stats *statistics

	// mu serialises the flows that change state, so that checks and writes
	// of one flow see no other flow's half-done work. Exposure checks only
	// read and do not take it.
	mu sync.Mutex
	// ingest is held to read by an upload from its check to its queueing,
	// across its index insert, which takes no mu, and to write by Expire
	// (upload.go). Take it before journal.flushing and mu, never after.
	ingest sync.RWMutex
}

// Open starts the enclave over cfg.Store: it obtains the key-encryption key
// (making one on first start), loads the day keys (making those of the
// window), drops days past retention, loads the results and rebuilds the
// match indexes from the journal, the imported keys and the GPS traces.
func Open(ctx context.Context, cfg Config) (*Enclave, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	if cfg.Store == nil {
		return nil, errors.New("enclave: no store")
	}
	e := &Enclave{policy: cfg.Policy, store: cfg.Store, index: matchindex.NewCompact(), oneSided: matchindex.NewCompact(), clock: newTrustedClock(cfg.HostClock), heads: newHeads(), log: cfg.Logger,
		checks: NewCheckLimiter(CheckLimiterConfig{PerDay: cfg.Policy.Limits.ChecksPerKeyDay})}
	// Every write of this run's time mark carries its head (head.go).
	e.store = headStore{Store: cfg.Store, e: e}
	gk, err := gaenVerifyingKeys(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	e.gaenKeys = gk
	gi, err := gpsindex.New(cfg.Policy.GPS.Params())
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	e.gps = gi
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	kek, err := e.loadKEK(ctx, cfg.SealingKey, cfg.KEK)
	if err != nil {
		return nil, err
	}
	e.kek = kek
	if e.keys, err = seal.NewKeyring(kek); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	if err := e.deriveKeys(kek); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	if e.orders, err = newOrders(cfg.Policy, kek[:]); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	if e.certKey, err = deriveCertificateKey(kek[:]); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	clear(kek[:])
	// The time mark opens with a key derived from the KEK's; everything
	// after reads the clock it sets.
	if err := e.loadMark(ctx); err != nil {
		return nil, err
	}
	e.journal.nextFlush = e.now().Add(time.Duration(e.policy.StoreFlushSeconds) * time.Second)
	e.stats = newStatistics(cfg.Policy, e.now, rand.Reader)
	e.results = map[string]*result{}
	if err := e.loadDayKeys(ctx); err != nil {
		return nil, err
	}
	if err := e.Expire(ctx); err != nil {
		return nil, err
	}
	if err := e.loadResults(ctx); err != nil {
		return nil, err
	}
	if err := e.restoreJournal(ctx); err != nil {
		return nil, err
	}
	if err := e.rebuildGAEN(ctx); err != nil {
		return nil, err
	}
	if err := e.rebuildGPS(ctx); err != nil {
		return nil, fmt.Errorf("enclave: rebuilding GPS index: %w", err)
	}
	return e, nil
}

// deriveKeys derives from the key-encryption key the keys that hide record
// keys, authenticate upload authorizations and seal journal headers.
func (e *Enclave) deriveKeys(kek [seal.KeySize]byte) error {
	var err error
	if e.macKey, err = hkdf.Key(sha256.New, kek[:], nil, "conftrace enclave record-key mac v1", 32); err != nil {
		return err
	}
	if e.authKey, err = hkdf.Key(sha256.New, kek[:], nil, "conftrace enclave upload authorization v2", 32); err != nil {
		return err
	}
	header, err := hkdf.Key(sha256.New, kek[:], nil, "conftrace enclave journal header v1", 32)
	if err != nil {
		return err
	}
	e.journal, err = newJournal(header)
	clear(header)
	return err
}

// loadDayKeys loads the stored day keys. It starts following the other
// replicas first (follow.go), since it is the first of Open's reads of the
// store that a follower must not miss the later writes of.
func (e *Enclave) loadDayKeys(ctx context.Context) error {
	if err := e.startFollowing(ctx); err != nil {
		return err
	}
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
			return nil
		}
		e.replica.stored[day] = true
		return nil
	})
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

// sealPutBytes adds to b the record of plain sealed under day's key. The
// caller holds e.mu.
func (e *Enclave) sealPutBytes(b *store.Batch, day calendar.Day, table string, key, plain []byte) error {
	if !e.replica.stored[day] {
		// A day Expire did not make the key of (ensureDayKeysLocked): its
		// key goes into the same atomic batch as the record sealed under
		// it, so no record is ever durable without its key, and only if
		// no replica stored one first, so that a day has one key. If one
		// did, the batch fails with store.ErrConflict, and this enclave
		// loads that key from the store when it follows it (follow.go).
		wrapped, err := e.keys.DayKey(day)
		if err != nil {
			return err
		}
		b.MustNotExist(tableDayKeys, dayKeyKey(day))
		b.Put(tableDayKeys, dayKeyKey(day), day, wrapped)
	}
	sealed, err := e.keys.Seal(day, table, key, plain)
	if err != nil {
		return err
	}
	b.Put(table, key, day, sealed)
	return nil
}

// noteStoredDayKeys marks the day keys that b, now applied, stored (by
// sealPutBytes), so that later records of those days are sealed under
// them without storing them again. The caller holds e.mu.
func (e *Enclave) noteStoredDayKeys(b *store.Batch) {
	for _, op := range b.Ops {
		if op.Table == tableDayKeys && !op.Delete {
			e.replica.stored[op.Day] = true
		}
	}
}

// dayKeyConflict reports whether err is Apply's refusal of a batch
// because another replica stored a day's key first (sealPutBytes): not
// the caller's replay, but a race the follower resolves within a follow
// period, after which the request can be made again.
func dayKeyConflict(err error) bool {
	var ce *store.ConflictError
	return errors.As(err, &ce) && ce.Check.Table == tableDayKeys
}

// internal logs an unexpected failure (without personal data) and returns
// the opaque error the client sees.
func (e *Enclave) internal(what string, err error) error {
	e.log.Error("internal error", "op", what, "err", err)
	return fmt.Errorf("enclave: %s: %w", what, err)
}
