package enclave

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/store"
)

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
