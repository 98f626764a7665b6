package enclave

import (
	"context"
	"crypto/rand"
	"slices"

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
//
// Of its work, only what changes the enclave's shared state takes e.mu,
// and only for memory: checking and reserving the authorization, then
// queueing the records. Decoding, deriving the identifiers and encoding
// the records come before (prepareUpload), the index insert in between,
// and the commit, later, is the journal's flush (flush.go).
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
	g, gerr := e.readOrderToken(r.Authorization, rep, e.now())
	if g != nil {
		// An order authorization (order.go): its refusal comes first.
		if gerr != nil {
			return api.UploadResponse{}, gerr
		}
		up, uperr := e.prepareUploadOf(rep, true, g)
		defer up.clear()
		return e.takeOrderUpload(g, up, uperr)
	}
	up, uperr := e.prepareUpload(rep, true)
	defer up.clear()
	return e.takeUpload(r.Authorization, up, uperr)
}

// takeOrderUpload takes the prepared upload p (or refuses it with perr)
// under the order authorization g, as takeUpload takes one under a
// result's: the authorization is reserved under e.mu, p added to the
// indexes of its order without it, and queued under it again.
func (e *Enclave) takeOrderUpload(g *orderGrant, p *preparedUpload, perr error) (api.UploadResponse, error) {
	e.ingest.RLock()
	defer e.ingest.RUnlock()
	e.mu.Lock()
	err := e.admitOrderLocked(g, p, perr)
	if err == nil {
		err = e.reserveOrder(g)
	}
	e.mu.Unlock()
	if err != nil {
		return api.UploadResponse{}, err
	}
	if err := e.indexUpload(p); err != nil {
		e.releaseOrder(g)
		return api.UploadResponse{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queueOrderUploadLocked(g, p), nil
}

// admitOrderLocked says why the upload p under the order authorization g
// (perr, the error preparing it) is refused, if it is: the authorization
// used, then what is wrong with the report, then its exposing day or
// every day of p having left the window since. The caller holds e.mu.
func (e *Enclave) admitOrderLocked(g *orderGrant, p *preparedUpload, perr error) error {
	if e.orderUsed(g.use) {
		return api.Errorf(api.CodeAlreadyUsed, "this order authorization was already used: one upload per exposure")
	}
	if perr != nil {
		return perr
	}
	// Expire, which takes e.mu, may have dropped the exposing day since
	// the token was read: its use could no longer be sealed.
	if first, _ := e.window(e.now()); g.day < first {
		return api.Errorf(api.CodeOutOfWindow, "the order authorization's exposing day %s left the %d-day retention window", g.day, e.policy.RetentionDays)
	}
	return e.keepWindowLocked(p)
}

// orderUploadLocked takes the prepared upload p under the order
// authorization g, all under e.mu, as uploadLocked takes one under a
// result. The caller holds e.mu.
func (e *Enclave) orderUploadLocked(g *orderGrant, p *preparedUpload, perr error) (api.UploadResponse, error) {
	if err := e.admitOrderLocked(g, p, perr); err != nil {
		return api.UploadResponse{}, err
	}
	if err := e.indexUpload(p); err != nil {
		return api.UploadResponse{}, err
	}
	if err := e.reserveOrder(g); err != nil {
		return api.UploadResponse{}, err // not reached: admitted under e.mu
	}
	return e.queueOrderUploadLocked(g, p), nil
}

// prepareExchangeUpload readies an exchange's report rep as its upload
// under authorization: as prepareUpload does, or, when authorization is
// an order authorization (readOrderToken), as an upload of its order,
// which it returns with why it is refused, if it is.
func (e *Enclave) prepareExchangeUpload(rep contactlog.Report, authorization []byte) (*preparedUpload, *orderGrant, error) {
	g, err := e.readOrderToken(authorization, rep, e.now())
	if err != nil {
		return nil, g, err
	}
	p, err := e.prepareUploadOf(rep, false, g)
	return p, g, err
}

// queueOrderUploadLocked queues p's parts in the journal as records of
// its order, then the mark that g was used, and answers. g is reserved
// already. The caller holds e.mu.
func (e *Enclave) queueOrderUploadLocked(g *orderGrant, p *preparedUpload) api.UploadResponse {
	uploadID := make([]byte, 16)
	rand.Read(uploadID)
	for i, u := range p.parts {
		e.journal.add(journalOrderUpload, u.day, uploadID, u.body, nil)
		p.parts[i].body = nil // the journal's now
	}
	// Last, as a result's mark: durable only once every part is.
	e.journal.add(journalOrderUsed, g.day, g.use[:], nil, nil)
	sightings, keys := p.counts()
	return api.UploadResponse{Sightings: sightings, Keys: keys, DurableBy: e.journal.durableBy(e.policy), Durable: false}
}

// takeUpload takes the prepared upload p (or refuses it with perr, the
// error preparing it) under authorization: it reserves the authorization
// under e.mu, adds p to the indexes without it, and queues p in the journal
// under it again. What is wrong with the authorization is said before what
// is wrong with the report.
func (e *Enclave) takeUpload(authorization []byte, p *preparedUpload, perr error) (api.UploadResponse, error) {
	// Held until p is queued: Expire, which takes it to write, neither
	// drops a day from the indexes while p is added to them, nor forgets
	// a day between the check of p's days and its queueing.
	e.ingest.RLock()
	defer e.ingest.RUnlock()
	e.mu.Lock()
	key, res, err := e.checkAuthorization(authorization, e.now())
	if err == nil && perr != nil {
		err = perr
	}
	if err == nil {
		err = e.keepWindowLocked(p)
	}
	if err != nil {
		e.mu.Unlock()
		return api.UploadResponse{}, err
	}
	// Reserved: an upload under the same authorization meanwhile is
	// refused as already made, and a poll says it is pending.
	res.uploaded = true
	e.mu.Unlock()

	if err := e.indexUpload(p); err != nil {
		e.mu.Lock()
		res.uploaded = false
		e.mu.Unlock()
		return api.UploadResponse{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queueUploadLocked(key, res, p), nil
}

// uploadPart is the part of an upload that belongs to one day: its record,
// encoded, and what it counts.
type uploadPart struct {
	day  calendar.Day
	body []byte
	// sightings are the part's; keys are the keys whose last day it is,
	// so that each key counts once.
	sightings, keys int
}

// preparedUpload is an upload checked, split by day, encoded and turned
// into index entries: what needs no lock.
type preparedUpload struct {
	recip, oneSided []matchindex.Entry
	parts           []uploadPart
	// order is the order the upload is a source of: 1 under a result,
	// more under an order authorization (order.go).
	order int
}

// clear wipes what the journal did not take.
func (p *preparedUpload) clear() {
	if p == nil {
		return
	}
	clear(p.recip)
	clear(p.oneSided)
	for _, u := range p.parts {
		clear(u.body)
	}
}

// counts returns how many sightings and keys p holds.
func (p *preparedUpload) counts() (sightings, keys int) {
	for _, u := range p.parts {
		sightings, keys = sightings+u.sightings, keys+u.keys
	}
	return sightings, keys
}

// dropBefore leaves out of p its parts, and their index entries, of the
// days before first.
func (p *preparedUpload) dropBefore(first calendar.Day) {
	if !slices.ContainsFunc(p.parts, func(u uploadPart) bool { return u.day < first }) {
		return
	}
	stale := func(x matchindex.Entry) bool { return x.Contact.Day < first }
	p.recip = slices.DeleteFunc(p.recip, stale)
	p.oneSided = slices.DeleteFunc(p.oneSided, stale)
	p.parts = slices.DeleteFunc(p.parts, func(u uploadPart) bool {
		if u.day < first {
			clear(u.body)
			return true
		}
		return false
	})
}

// keepWindowLocked leaves out of p what the retention window has left
// since p was prepared: p checked its days against the window of its own
// time, and Expire may have destroyed the key of one of them since (a
// record of that day could no longer be sealed, and every flush would fail
// on it), or may do so before p is written. It is what an upload taken a
// moment earlier would have become once expired. It refuses p if nothing
// is left. The caller holds e.mu.
func (e *Enclave) keepWindowLocked(p *preparedUpload) error {
	first, _ := e.window(e.now())
	p.dropBefore(first)
	if len(p.parts) == 0 {
		return api.Errorf(api.CodeOutOfWindow, "every day of the upload left the %d-day retention window while it was taken", e.policy.RetentionDays)
	}
	return nil
}

// prepareUpload readies rep as an upload, without e.mu: the work of an
// upload but the index insert and the journal's queue. In a strict
// upload, keys and sightings before the window are refused; in an
// exchange, whose report is also its check, they are left out.
func (e *Enclave) prepareUpload(rep contactlog.Report, strict bool) (*preparedUpload, error) {
	return e.prepareUploadOf(rep, strict, nil)
}

// prepareUploadOf is prepareUpload for an upload under the order
// authorization g, or, if g is nil, under a result. An order upload keeps
// the days from g's exposing day on, less the sightings its cycle rule
// leaves out (dropCycles), and its records carry its order.
func (e *Enclave) prepareUploadOf(rep contactlog.Report, strict bool, g *orderGrant) (*preparedUpload, error) {
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
	p := &preparedUpload{order: 1}
	var prefix []byte // of every part's record: its order, above 1
	if g != nil {
		from := fromDay(rep, g.day)
		defer from.Clear()
		ss, err := e.dropCycles(from, g.order, w)
		if err != nil {
			return nil, e.internal("deriving identifiers", err)
		}
		defer clear(ss)
		rep = contactlog.Report{Keys: from.Keys, Sightings: ss}
		p.order, prefix = g.order, []byte{byte(g.order)}
	}
	var err error
	if p.recip, err = e.reciprocalUpload(rep); err != nil {
		return nil, e.internal("deriving identifiers", err)
	}
	// One-sided entries, a few thousand, are made by day, and joined once
	// their number is known.
	var oneSided [][]matchindex.Entry
	for day, part := range splitByDay(rep, w) {
		if e.policy.OneSided() {
			o, err := oneSidedEntries(part.Keys, day)
			if err != nil {
				p.clear()
				return nil, e.internal("deriving identifiers", err)
			}
			oneSided = append(oneSided, o)
		}
		body, err := part.AppendBinary(slices.Clone(prefix))
		if err != nil {
			p.clear()
			return nil, e.internal("encoding report", err)
		}
		p.parts = append(p.parts, uploadPart{day: day, body: body, sightings: len(part.Sightings), keys: keysEndingOn(part.Keys, day)})
	}
	p.oneSided = slices.Concat(oneSided...)
	return p, nil
}

// reciprocalUpload returns the reciprocal index entries of an upload's
// sightings, each of its day, if the policy matches reciprocally: those of
// entries for each day's part, made for the whole report at once, so that
// thousands of entries are made in place rather than by day and joined.
func (e *Enclave) reciprocalUpload(rep contactlog.Report) ([]matchindex.Entry, error) {
	if !e.policy.Reciprocal() || len(rep.Sightings) == 0 {
		return nil, nil
	}
	own, err := ownRPIs(rep)
	if err != nil {
		return nil, err
	}
	defer clear(own)
	es := make([]matchindex.Entry, len(rep.Sightings))
	for i, s := range rep.Sightings {
		es[i] = matchindex.Entry{
			Key: reciprocalKey(own[i], s.Heard),
			Contact: matchindex.Contact{
				Interval:    uint32(s.Interval),
				Minutes:     uint16(s.Minutes),
				Attenuation: s.Attenuation,
				Day:         calendar.DayOf(s.Interval.Time()),
			},
		}
	}
	return es, nil
}

// keysEndingOn returns how many of keys are valid last on day.
func keysEndingOn(keys []contactlog.DailyKey, day calendar.Day) int {
	n := 0
	for _, k := range keys {
		if calendar.DayOf((k.End() - 1).Time()) == day {
			n++
		}
	}
	return n
}

// uploadLocked takes the prepared upload p as the upload of the result
// res (under key), all under e.mu: the exchange's way, which holds e.mu
// for its poll anyway. The caller holds e.mu.
func (e *Enclave) uploadLocked(key []byte, res *result, p *preparedUpload) (api.UploadResponse, error) {
	// The lock is held throughout, so Expire cannot run between this check
	// and the queueing.
	if err := e.keepWindowLocked(p); err != nil {
		return api.UploadResponse{}, err
	}
	// Index first: a failure leaves nothing queued and the authorization
	// unused.
	if err := e.indexUpload(p); err != nil {
		return api.UploadResponse{}, err
	}
	res.uploaded = true
	return e.queueUploadLocked(key, res, p), nil
}

// indexUpload adds p's entries to the indexes. The indexes are safe for
// lookups and adds concurrent with it (matchindex.Index); the caller holds
// e.ingest or e.mu, either of which keeps Expire from dropping days
// meanwhile.
func (e *Enclave) indexUpload(p *preparedUpload) error {
	recip, oneSided := e.indexesOf(p.order)
	if err := recip.Add(p.recip); err != nil {
		return e.internal("indexing upload", err)
	}
	if err := oneSided.Add(p.oneSided); err != nil {
		return e.internal("indexing upload", err)
	}
	return nil
}

// queueUploadLocked queues p's parts in the journal, then the mark that
// the upload of res (under key) was made, and answers. res is marked
// uploaded already. The caller holds e.mu.
func (e *Enclave) queueUploadLocked(key []byte, res *result, p *preparedUpload) api.UploadResponse {
	uploadID := make([]byte, 16)
	rand.Read(uploadID)
	for i, u := range p.parts {
		e.journal.add(journalUpload, u.day, uploadID, u.body, nil)
		p.parts[i].body = nil // the journal's now
	}
	// Last, so that the mark is durable only once every part is: the
	// journal writes records in order.
	e.journal.add(journalUploaded, res.day, key, nil, func() { res.durable = true })
	sightings, keys := p.counts()
	return api.UploadResponse{Sightings: sightings, Keys: keys, DurableBy: e.journal.durableBy(e.policy), Durable: false}
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
