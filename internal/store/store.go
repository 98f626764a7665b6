// Package store defines the untrusted storage that the backend persists its
// sealed records to, and which implementations (SQLite in store/sqlite,
// PostgreSQL later) must provide. Run the conformance suite in
// store/storetest against any new implementation.
//
// A store holds opaque bytes only. The backend seals every value before it
// hands it over, and the store runs outside the TEE on the host's disk, so a
// store is trusted for availability and nothing else: it may lose, roll back
// or alter what it holds, and the backend detects that by opening the sealed
// values. Keys and table names are visible to the host; callers keep them
// free of personal data (random identifiers, not phone numbers).
//
// A [Record] lives in a table under a binary key, carries the [calendar.Day] it
// belongs to, and has a value. Reads are [Store.Get] for one record and
// [Store.Scan] to stream a whole table in key order (the backend rebuilds its
// in-memory index from it at start without loading everything at once).
//
// Every write goes through [Store.Apply], which applies a [Batch] of puts and
// deletes atomically and durably: when Apply returns nil, all of it is on
// stable storage, so the backend may acknowledge it; when it returns an
// error, none of it happened. A batch can carry checks that keys exist or do
// not exist; if one fails, Apply writes nothing and returns an error that
// matches [ErrConflict] (a [*ConflictError] naming the check). That makes
// single-use tokens safe even with several replicas over one database:
//
//	var b store.Batch
//	b.MustExist("upload-auth", token) // fails if already consumed
//	b.Delete("upload-auth", token)
//	b.Put("tuples", uploadID, day, sealedTuples)
//	err := s.Apply(ctx, &b) // errors.Is(err, store.ErrConflict): replayed token
//
// Retention deletes a whole day, in every table, with [Store.DeleteDay].
// Records that belong to no day, such as the wrapped key-encryption key, use
// [NoDay], which DeleteDay never deletes.
//
// Replicas of the backend that share one store follow each other's writes
// with [Store.Since]: every put gets a sequence number ([Record.Seq]) from
// one counter of the store, in the order the puts commit, so a replica that
// remembers the highest number it has read asks for what came after it and
// misses nothing. [Store.Head] gives the number to start from.
package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/internal/calendar"
)

// Limits that every store enforces, so that backends behave the same. A
// request beyond them fails with an error matching ErrInvalid.
const (
	// MaxTableLen is the longest table name, in bytes. Table names also
	// keep to a narrow alphabet (see ValidateTable).
	MaxTableLen = 64
	// MaxKeyLen is the longest record key, in bytes.
	MaxKeyLen = 1024
	// MaxValueLen is the largest record value, in bytes.
	MaxValueLen = 16 << 20
)

var (
	// ErrNotFound means the record does not exist.
	ErrNotFound = errors.New("store: record not found")
	// ErrConflict means a check of a batch failed, so nothing of the batch
	// was written. The error is a *ConflictError naming the check.
	ErrConflict = errors.New("store: batch check failed")
	// ErrInvalid means a table name, key or value breaks the store's rules
	// (see MaxTableLen and the other limits), or DeleteDay was asked to
	// delete NoDay.
	ErrInvalid = errors.New("store: invalid request")
)

// NoDay is the day of records that belong to no day and outlive retention,
// such as the wrapped key-encryption key. DeleteDay refuses it and Days
// omits it.
const NoDay calendar.Day = 0

// Record is one stored record.
type Record struct {
	Table string
	Key   []byte
	Day   calendar.Day
	Value []byte
	// Seq is the sequence number the store gave the record's last put
	// (see Store.Since). Get, Scan and Since set it; Apply ignores it.
	// Records stored before sequence numbers existed have 0.
	Seq uint64
}

// Store is untrusted persistent storage of sealed records. Implementations
// are safe for concurrent use.
type Store interface {
	// Get returns the record stored under key in table, or an error
	// matching ErrNotFound.
	Get(ctx context.Context, table string, key []byte) (Record, error)

	// Scan calls fn for each record of table in ascending key order
	// (bytewise, as bytes.Compare orders keys), streaming them rather than
	// loading the table into memory. fn may keep the records it is given.
	// If fn returns an error, Scan stops and returns that error unchanged.
	// Scan visits the records committed when it began, no record twice,
	// and no put that commits after it began: a record deleted or put
	// again meanwhile is visited as it was, or not at all. (So the records
	// of a scan have a Seq at most the store's head when it began, and
	// every later put one above: a caller that noted the highest Seq its
	// scan of a table visited can follow the table from there with Since
	// and neither miss nor repeat a record.) fn may read from the store
	// but should not wait for writes to it.
	Scan(ctx context.Context, table string, fn func(Record) error) error

	// Since calls fn, in ascending order of Seq, for each record of the
	// given tables whose Seq is above after, streaming them. Sequence
	// numbers follow the order in which puts commit, across every process
	// sharing the store: once Since has visited a record, every put that
	// commits later has a larger Seq. So a caller that calls Since again
	// with the highest Seq it was given sees every record put meanwhile,
	// but those deleted or put again since (a record put again is visited
	// once more, with its new Seq). Deletes are not visited. If fn returns
	// an error, Since stops and returns it unchanged.
	Since(ctx context.Context, after uint64, tables []string, fn func(Record) error) error

	// Head returns a sequence number at least the Seq of every record the
	// store holds when it is called, and below the Seq of every put that
	// commits after it returns: where a caller that has read the store up
	// to now starts to follow it with Since. An empty store returns 0.
	Head(ctx context.Context) (uint64, error)

	// Apply checks the batch's checks against the current state and, if all
	// hold, applies its operations in order, atomically: all or nothing.
	// When it returns nil the batch is durable (fsync'd). If a check fails
	// it writes nothing and returns a *ConflictError matching ErrConflict.
	// An empty or nil batch does nothing.
	Apply(ctx context.Context, b *Batch) error

	// DeleteDay deletes every record of day in every table, atomically and
	// durably, and reports how many it deleted. Deleting NoDay fails with
	// ErrInvalid.
	DeleteDay(ctx context.Context, day calendar.Day) (int64, error)

	// Days returns the days that have at least one record, ascending,
	// without NoDay.
	Days(ctx context.Context) ([]calendar.Day, error)

	// Close releases the store. Calling it again does nothing; other
	// methods fail after it.
	Close() error
}

// Batch is a set of checks and operations that Store.Apply applies
// atomically. The zero value is an empty batch. Build it with the methods;
// implementations read the fields.
type Batch struct {
	// Checks must all hold, evaluated against the state before any of Ops
	// is applied.
	Checks []Check
	// Ops are applied in order: a later operation on the same record
	// overrides an earlier one.
	Ops []Op
}

// Check is a precondition of a batch.
type Check struct {
	Table string
	Key   []byte
	// Exists is whether the record must exist (true) or must not (false).
	Exists bool
	// Value, if not nil (with Exists), is the value the record must hold.
	Value []byte
}

// Op is one write of a batch: a put of a record or, if Delete is set, a
// delete of the record under Table and Key (deleting a missing record is
// not an error; add a check to require it).
type Op struct {
	Record
	Delete bool
}

// Put adds a write of value under key in table, belonging to day. It
// replaces any record stored there. The batch keeps the slices it is given:
// do not change them until Apply returns.
func (b *Batch) Put(table string, key []byte, day calendar.Day, value []byte) {
	b.Ops = append(b.Ops, Op{Record: Record{Table: table, Key: key, Day: day, Value: value}})
}

// Delete adds a delete of the record under key in table.
func (b *Batch) Delete(table string, key []byte) {
	b.Ops = append(b.Ops, Op{Record: Record{Table: table, Key: key}, Delete: true})
}

// MustExist makes the batch fail with ErrConflict unless a record exists
// under key in table.
func (b *Batch) MustExist(table string, key []byte) {
	b.Checks = append(b.Checks, Check{Table: table, Key: key, Exists: true})
}

// MustHold makes the batch fail with ErrConflict unless a record exists
// under key in table holding exactly value (not nil). A writer that must
// notice its record was replaced behind its back (by an older copy of the
// store) uses it.
func (b *Batch) MustHold(table string, key, value []byte) {
	b.Checks = append(b.Checks, Check{Table: table, Key: key, Exists: true, Value: value})
}

// Holds reports whether a record's presence and value meet c.
func (c Check) Holds(found bool, value []byte) bool {
	return found == c.Exists && (!found || c.Value == nil || bytes.Equal(value, c.Value))
}

// MustNotExist makes the batch fail with ErrConflict if a record exists
// under key in table.
func (b *Batch) MustNotExist(table string, key []byte) {
	b.Checks = append(b.Checks, Check{Table: table, Key: key, Exists: false})
}

// Validate reports, as an error matching ErrInvalid, the first check or
// operation that breaks the store's limits. Implementations call it before
// they touch storage.
func (b *Batch) Validate() error {
	if b == nil {
		return nil
	}
	for _, c := range b.Checks {
		if err := ValidateKey(c.Table, c.Key); err != nil {
			return err
		}
	}
	for _, op := range b.Ops {
		if err := ValidateKey(op.Table, op.Key); err != nil {
			return err
		}
		if !op.Delete && len(op.Value) > MaxValueLen {
			return fmt.Errorf("store: %s record %s: value of %d bytes exceeds %d: %w", op.Table, keyString(op.Key), len(op.Value), MaxValueLen, ErrInvalid)
		}
	}
	return nil
}

// ValidateTable reports, as an error matching ErrInvalid, a table name that
// is empty, longer than MaxTableLen, or has a character other than ASCII
// letters, digits and "_-./". (Table names are the program's constants; the
// narrow alphabet keeps them portable to every database.)
func ValidateTable(table string) error {
	if table == "" || len(table) > MaxTableLen {
		return fmt.Errorf("store: table name of %d bytes, want 1 to %d: %w", len(table), MaxTableLen, ErrInvalid)
	}
	for i := range len(table) {
		switch c := table[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.', c == '/':
		default:
			return fmt.Errorf("store: table name %q has a character other than ASCII letters, digits and \"_-./\": %w", table, ErrInvalid)
		}
	}
	return nil
}

// ValidateKey reports, as an error matching ErrInvalid, an invalid table
// name or a key that is empty or longer than MaxKeyLen.
func ValidateKey(table string, key []byte) error {
	if err := ValidateTable(table); err != nil {
		return err
	}
	if len(key) == 0 || len(key) > MaxKeyLen {
		return fmt.Errorf("store: %s key of %d bytes, want 1 to %d: %w", table, len(key), MaxKeyLen, ErrInvalid)
	}
	return nil
}

// ConflictError reports the check that made Apply refuse a batch. It
// matches ErrConflict.
type ConflictError struct {
	Check Check
}

func (e *ConflictError) Error() string {
	want := "must not exist"
	switch {
	case e.Check.Value != nil:
		want = "must hold the value written last"
	case e.Check.Exists:
		want = "must exist"
	}
	return fmt.Sprintf("store: batch check failed: %s record %s %s", e.Check.Table, keyString(e.Check.Key), want)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// keyString formats a record key for errors and logs: hex, shortened.
func keyString(key []byte) string {
	const shown = 16
	if len(key) > shown {
		return hex.EncodeToString(key[:shown]) + "…"
	}
	return hex.EncodeToString(key)
}

// PutIfAbsent stores the record unless one exists under its key, and
// reports whether it stored it.
func PutIfAbsent(ctx context.Context, s Store, r Record) (bool, error) {
	var b Batch
	b.MustNotExist(r.Table, r.Key)
	b.Put(r.Table, r.Key, r.Day, r.Value)
	return applied(s.Apply(ctx, &b))
}

// DeleteIfPresent deletes the record under key in table if it exists, and
// reports whether it did: of several callers consuming the same single-use
// token, exactly one sees true.
func DeleteIfPresent(ctx context.Context, s Store, table string, key []byte) (bool, error) {
	var b Batch
	b.MustExist(table, key)
	b.Delete(table, key)
	return applied(s.Apply(ctx, &b))
}

func applied(err error) (bool, error) {
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	return err == nil, err
}
