package enclave

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/store"
)

func authKey(token []byte) []byte {
	h := sha256.Sum256(append([]byte("conftrace upload authorization v1\x00"), token...))
	return h[:16]
}

// Upload consumes an upload authorization and stores the device's daily
// keys and sightings. It checks the whole report first and stores all or
// nothing; it returns only after the write is durable.
func (e *Enclave) Upload(ctx context.Context, r api.UploadRequest) (api.UploadResponse, error) {
	if len(r.Authorization) != api.AuthorizationSize {
		return api.UploadResponse{}, api.Errorf(api.CodeNotAuthorized, "no valid upload authorization (poll a positive result first)")
	}
	rep, err := e.parseReport(r.Report, e.policy.Limits.MaxUploadSightings)
	clear(r.Report)
	if err != nil {
		return api.UploadResponse{}, err
	}
	defer rep.Clear()
	if len(rep.Keys) == 0 {
		return api.UploadResponse{}, api.Errorf(api.CodeMalformed, "an upload needs at least one daily key")
	}
	now := e.now()
	w := e.reportWindow(now)
	if err := e.checkReport(rep, w, true); err != nil {
		return api.UploadResponse{}, err
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
	recip, oneSided, err := e.storeReport(&b, uploadID, rep, w)
	if err != nil {
		return api.UploadResponse{}, err
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return api.UploadResponse{}, api.Errorf(api.CodeAlreadyUsed, "this upload authorization was already used")
		}
		return api.UploadResponse{}, e.internal("storing upload", err)
	}
	// Durable: now the sightings and keys may match.
	if err := e.index.Add(recip); err != nil {
		return api.UploadResponse{}, e.internal("indexing upload", err)
	}
	if err := e.oneSided.Add(oneSided); err != nil {
		return api.UploadResponse{}, e.internal("indexing upload", err)
	}
	return api.UploadResponse{Sightings: len(rep.Sightings), Keys: len(rep.Keys)}, nil
}

// storeReport adds an upload's report to b, sealed under each of its days,
// and returns its entries for the indexes the policy's matching rules use.
func (e *Enclave) storeReport(b *store.Batch, uploadID []byte, rep contactlog.Report, w reportWindow) (recip, oneSided []matchindex.Entry, err error) {
	for day, part := range splitByDay(rep, w) {
		body, err := part.AppendBinary(nil)
		if err != nil {
			return nil, nil, e.internal("encoding report", err)
		}
		key := binary.BigEndian.AppendUint32(slices.Clone(uploadID), uint32(day))
		err = e.sealPutBytes(b, day, tableUploads, key, body)
		clear(body)
		if err != nil {
			return nil, nil, e.internal("sealing report", err)
		}
		r, o, err := e.entries(part, day)
		if err != nil {
			return nil, nil, e.internal("deriving identifiers", err)
		}
		recip, oneSided = append(recip, r...), append(oneSided, o...)
	}
	return recip, oneSided, nil
}

// entries returns the index entries of the part of an upload that belongs
// to day, for the indexes the policy's matching rules use.
func (e *Enclave) entries(part contactlog.Report, day calendar.Day) (recip, oneSided []matchindex.Entry, err error) {
	if e.policy.Reciprocal() && len(part.Sightings) > 0 {
		own, err := ownRPIs(part)
		if err != nil {
			return nil, nil, err
		}
		recip = reciprocalEntries(part.Sightings, own, day)
		clear(own)
	}
	if e.policy.OneSided() {
		if oneSided, err = oneSidedEntries(part.Keys, day); err != nil {
			return nil, nil, err
		}
	}
	return recip, oneSided, nil
}
