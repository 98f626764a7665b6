package enclave

import (
	"context"
	"crypto/rand"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// Upload consumes an upload authorization and takes the device's daily
// keys and sightings. It checks the whole report first and takes all or
// nothing. The upload matches at once; it is written by the journal's next
// flushes (see journal.go), and the device's next result poll says whether
// it is durable.
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
	up, uperr := e.prepareUpload(rep, true)
	defer up.clear()
	e.mu.Lock()
	defer e.mu.Unlock()
	key, res, err := e.checkAuthorization(r.Authorization, e.now())
	if err != nil {
		return api.UploadResponse{}, err
	}
	if uperr != nil {
		return api.UploadResponse{}, uperr
	}
	return e.uploadLocked(key, res, up)
}

// preparedUpload is an upload checked, split by day, encoded and turned
// into index entries: what needs no lock.
type preparedUpload struct {
	recip, oneSided []matchindex.Entry
	days            []calendar.Day
	bodies          [][]byte
	sightings, keys int
}

// clear wipes what the journal did not take.
func (p *preparedUpload) clear() {
	if p == nil {
		return
	}
	clear(p.recip)
	clear(p.oneSided)
	for _, b := range p.bodies {
		clear(b)
	}
}

// prepareUpload readies rep as an upload, without e.mu: the work of an
// upload but the index insert and the journal's queue. In a strict
// upload, keys and sightings before the window are refused; in an
// exchange, whose report is also its check, they are left out.
func (e *Enclave) prepareUpload(rep contactlog.Report, strict bool) (*preparedUpload, error) {
	w := e.reportWindow(e.now())
	if !strict {
		rep = w.recent(rep)
		defer rep.Clear()
	}
	if len(rep.Keys) == 0 {
		return nil, api.Errorf(api.CodeMalformed, "an upload needs at least one daily key of the window")
	}
	if len(rep.Sightings) > e.policy.Limits.MaxUploadSightings {
		return nil, api.Errorf(api.CodeTooLarge, "%d sightings, policy limit %d for uploads", len(rep.Sightings), e.policy.Limits.MaxUploadSightings)
	}
	if err := e.checkReport(rep, w, true); err != nil {
		return nil, err
	}
	p := &preparedUpload{sightings: len(rep.Sightings), keys: len(rep.Keys)}
	for day, part := range splitByDay(rep, w) {
		r, o, err := e.entries(part, day)
		if err != nil {
			p.clear()
			return nil, e.internal("deriving identifiers", err)
		}
		body, err := part.AppendBinary(nil)
		if err != nil {
			p.clear()
			return nil, e.internal("encoding report", err)
		}
		p.recip, p.oneSided = append(p.recip, r...), append(p.oneSided, o...)
		p.days, p.bodies = append(p.days, day), append(p.bodies, body)
	}
	return p, nil
}

// uploadLocked takes the prepared upload p as the upload of the result
// res (under key): it indexes it and queues it in the journal. The caller
// holds e.mu.
func (e *Enclave) uploadLocked(key []byte, res *result, p *preparedUpload) (api.UploadResponse, error) {
	// Index first: a failure leaves nothing queued and the authorization
	// unused.
	if err := e.index.Add(p.recip); err != nil {
		return api.UploadResponse{}, e.internal("indexing upload", err)
	}
	if err := e.oneSided.Add(p.oneSided); err != nil {
		return api.UploadResponse{}, e.internal("indexing upload", err)
	}
	uploadID := make([]byte, 16)
	rand.Read(uploadID)
	for i, day := range p.days {
		e.journal.add(journalUpload, day, uploadID, p.bodies[i], nil)
	}
	p.bodies = nil // the journal's now
	res.uploaded = true
	// Last, so that the mark is durable only once every part is: the
	// journal writes records in order.
	e.journal.add(journalUploaded, res.day, key, nil, func() { res.durable = true })
	return api.UploadResponse{Sightings: p.sightings, Keys: p.keys, DurableBy: e.journal.durableBy(e.policy), Durable: false}, nil
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
