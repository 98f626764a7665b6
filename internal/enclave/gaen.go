package enclave

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// Tables of imported GAEN exports.
const (
	tableGAENImports = "gaen_imports" // digests of imported exports, in the day of import
	tableGAENKeys    = "gaen_keys"    // imported daily keys by export digest and day
)

// maxExportBytes bounds an export: no request carries more than the
// largest padded message (package bhttp's MaxSize).
const maxExportBytes = 1 << 20

// gaenVerifyingKeys returns the policy's GAEN export keys as package gaen
// takes them. The policy was validated, so every key parses.
func gaenVerifyingKeys(p policy.Policy) ([]gaen.VerifyingKey, error) {
	keys := make([]gaen.VerifyingKey, len(p.GAENExportKeys))
	for i, k := range p.GAENExportKeys {
		pub, err := k.ECDSA()
		if err != nil {
			return nil, err
		}
		// No key id: a key server's labels are not in the policy, so
		// every signature of an export is tried against every key.
		keys[i] = gaen.VerifyingKey{Name: k.Name, Key: pub}
	}
	return keys, nil
}

// ImportGAEN imports a GAEN key export: if a key the policy lists signed
// it, its daily keys within the retention window match one-sided, sealed
// and indexed like an upload's, until retention drops them. Keys with an
// invalid rolling period, outside the window or in the future are skipped
// and counted; revised keys are not imported. Importing the same export
// again changes nothing. It returns only after the keys are durable.
func (e *Enclave) ImportGAEN(ctx context.Context, r api.ImportRequest) (api.ImportResponse, error) {
	defer clear(r.Export)
	if len(e.gaenKeys) == 0 {
		return api.ImportResponse{}, api.Errorf(api.CodeNotAuthorized, "the policy lists no GAEN export key: this backend imports no exports")
	}
	exp, err := gaen.Open(r.Export, e.gaenKeys, gaen.Limits{MaxExportBytes: maxExportBytes, MaxKeys: maxExportBytes / 16})
	if err != nil {
		return api.ImportResponse{}, importRefusal(err)
	}
	defer func() { clear(exp.Keys); clear(exp.Revised) }()
	// The key server signed its end: that time has come (clock.go).
	if err := e.witness("the export's end_timestamp", exp.End); err != nil {
		return api.ImportResponse{}, err
	}
	resp := api.ImportResponse{SignedBy: exp.SignedBy, Region: exp.Region}
	w := e.reportWindow(e.now())
	var keys []contactlog.DailyKey
	for _, k := range exp.Keys {
		if k.Valid() != nil || k.RollingStart > w.latest || k.RollingStart+enid.Interval(k.RollingPeriod) <= w.first {
			resp.Skipped++
			continue
		}
		keys = append(keys, contactlog.DailyKey{TEK: k.TEK, Start: k.RollingStart, Period: uint8(k.RollingPeriod)})
	}
	defer clear(keys)

	e.mu.Lock()
	defer e.mu.Unlock()
	digest := exp.Digest[:]
	if _, err := e.store.Get(ctx, tableGAENImports, digest); err == nil {
		resp.Duplicate, resp.Skipped = true, 0
		return resp, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return api.ImportResponse{}, e.internal("reading imports", err)
	}
	var b store.Batch
	// Imported once, also by replicas sharing the store.
	b.MustNotExist(tableGAENImports, digest)
	b.Put(tableGAENImports, digest, calendar.DayOf(e.now()), []byte{1})
	entries, err := e.storeGAENKeys(&b, digest, keys, w)
	if err != nil {
		return api.ImportResponse{}, err
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) && !dayKeyConflict(err) {
			resp.Duplicate, resp.Skipped = true, 0
			return resp, nil
		}
		return api.ImportResponse{}, e.internal("storing import", err)
	}
	e.noteStoredDayKeys(&b)
	if err := e.oneSided.Add(entries); err != nil {
		return api.ImportResponse{}, e.internal("indexing import", err)
	}
	resp.Imported = len(keys)
	e.stats.add(statGAEN, int64(len(keys)))
	return resp, nil
}

// importRefusal maps an export's refusal to an answer.
func importRefusal(err error) error {
	switch {
	case errors.Is(err, gaen.ErrBadSignature), errors.Is(err, gaen.ErrUnknownSigner), errors.Is(err, gaen.ErrUnsupportedAlgorithm):
		return api.Errorf(api.CodeBadSignature, "GAEN export: %v", err)
	case errors.Is(err, gaen.ErrTooLarge), errors.Is(err, gaen.ErrTooManyKeys):
		return api.Errorf(api.CodeTooLarge, "GAEN export: %v", err)
	default:
		return api.Errorf(api.CodeMalformed, "GAEN export: %v", err)
	}
}

// storeGAENKeys adds imported keys to b, sealed under each day of the
// window they are valid in, and returns their one-sided index entries.
func (e *Enclave) storeGAENKeys(b *store.Batch, digest []byte, keys []contactlog.DailyKey, w reportWindow) ([]matchindex.Entry, error) {
	var entries []matchindex.Entry
	for day, ks := range keysByDay(keys, w) {
		body, err := contactlog.AppendKeys(nil, ks)
		if err != nil {
			return nil, e.internal("encoding imported keys", err)
		}
		key := binary.BigEndian.AppendUint32(slices.Clone(digest[:16]), uint32(day))
		err = e.sealPutBytes(b, day, tableGAENKeys, key, body)
		clear(body)
		if err != nil {
			return nil, e.internal("sealing imported keys", err)
		}
		es, err := oneSidedEntries(ks, day)
		if err != nil {
			return nil, e.internal("deriving identifiers", err)
		}
		entries = append(entries, es...)
	}
	return entries, nil
}

// rebuildGAEN loads every stored imported key into the one-sided index
// when the enclave starts. A record that does not open or decode is
// reported and skipped.
func (e *Enclave) rebuildGAEN(ctx context.Context) error {
	var keys, bad int
	err := e.store.Scan(ctx, tableGAENKeys, func(r store.Record) error {
		plain, err := e.keys.Open(r.Day, tableGAENKeys, r.Key, r.Value)
		if err != nil {
			bad++
			e.log.Error("stored GAEN keys do not open; ignored (tampered, swapped or replayed)", "day", r.Day, "err", err)
			return nil
		}
		// Sealed by this enclave: the limit only bounds what a corrupt
		// record could make it allocate.
		ks, err := contactlog.ParseKeys(plain, len(plain)/contactlog.DailyKeySize)
		clear(plain)
		if err != nil {
			bad++
			e.log.Error("stored GAEN keys do not decode; ignored", "day", r.Day, "err", err)
			return nil
		}
		defer clear(ks)
		es, err := oneSidedEntries(ks, r.Day)
		if err != nil {
			bad++
			e.log.Error("stored GAEN keys do not derive; ignored", "day", r.Day, "err", err)
			return nil
		}
		if err := e.oneSided.Add(es); err != nil {
			return err
		}
		keys += len(ks)
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: rebuilding imported GAEN keys: %w", err)
	}
	e.log.Info("imported GAEN keys rebuilt", "daily_keys", keys, "refused_records", bad)
	return nil
}
