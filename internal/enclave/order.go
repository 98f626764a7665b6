package enclave

// n-order notifications (docs/n-order.md). A phone exposed at order k below
// the policy's max_order finds in its exposure answer an order
// authorization: a token with which it may upload its own report, once, as
// a source of order k+1. Uploads of each order k above 1 go to indexes of
// their own, so that the order-1 indexes, and a max_order 1 policy's
// checks, are what they were; a check matches every order and answers the
// lowest at which the phone was exposed, each order judged by its own
// threshold (policy.OrderRisk).
//
// The token is derived, not stored, like a result's upload authorization
// (results.go): a MAC, under a key derived from the key-encryption key, of
// the order it grants, the exposing day (the earliest exposed day of the
// phone's lowest order), the period of the policy's authorization lifetime
// and the phone's daily key of the exposing day, which the upload must
// carry. So every check in a period hands out the same token, a token is
// useless without the phone's key, and the enclave tells it from a
// result's authorization by which MAC verifies. Its use is recorded by an
// id derived from the order, the day and the daily key (not the period),
// in memory and, sealed, in the journal, so that it uploads once; the
// record lives in the exposing day, and expires with it.
//
// Cycles and duplicates (the rule docs/n-order.md states):
//
//   - an upload of order k keeps only the days from its exposing day on,
//     and leaves out every sighting whose mirror a lower order's
//     reciprocal index holds: the contact with a source it was exposed
//     by, or could have been, is not sent back to that source;
//   - a check's match at order j above 1 is ignored when the checking
//     phone's own side of the same sighting is held at a lower order:
//     its own tuple (own, heard) in the reciprocal index, or, when the
//     policy matches one-sided, its own identifier at that interval in
//     the one-sided index. That covers the sources that uploaded after
//     the higher-order upload, which the first rule cannot see;
//   - an answer says the lowest order at which the phone is exposed, and
//     duplicates of one encounter (several uploads, several orders) count
//     once per order, as at order 1.

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/policy"
)

// Kinds of journal records of n-order uploads (journal.go has the
// others). An order-1 upload is written as before (journalUpload).
const (
	// journalOrderUpload is one day's part of an upload of order 2 or
	// more: the order (1 byte), then the contactlog report.
	journalOrderUpload byte = 3
	// journalOrderUsed marks an order authorization used; the record's id
	// is its use id, its day the exposing day.
	journalOrderUsed byte = 4
)

// orders is the enclave's state of n-order notifications.
type orders struct {
	max int
	// recip[k-2] and oneSided[k-2] hold the uploads of order k.
	recip, oneSided []matchindex.Index
	// key authenticates order authorizations and derives their use ids.
	key []byte

	mu sync.Mutex
	// used holds the order authorizations whose upload was made (or is
	// being made), by use id, with the exposing day they expire with.
	used map[[16]byte]calendar.Day
}

// newOrders returns the n-order state of policy p, its key derived from
// the key-encryption key kek.
func newOrders(p policy.Policy, kek []byte) (*orders, error) {
	key, err := hkdf.Key(sha256.New, kek, nil, "conftrace enclave order authorization v1", 32)
	if err != nil {
		return nil, err
	}
	o := &orders{max: p.MaxOrder(), key: key, used: map[[16]byte]calendar.Day{}}
	for range o.max - 1 {
		o.recip = append(o.recip, matchindex.NewCompact())
		o.oneSided = append(o.oneSided, matchindex.NewCompact())
	}
	return o, nil
}

// indexesOf returns the indexes of the uploads of order k (1 to the
// policy's max_order).
func (e *Enclave) indexesOf(k int) (recip, oneSided matchindex.Index) {
	if k <= 1 {
		return e.index, e.oneSided
	}
	return e.orders.recip[k-2], e.orders.oneSided[k-2]
}

// dropOrderDay drops day from the indexes of orders above 1 and returns
// how many entries it removed. Expire calls it.
func (e *Enclave) dropOrderDay(day calendar.Day) int {
	n := 0
	for k := range e.orders.recip {
		n += e.orders.recip[k].Drop(day) + e.orders.oneSided[k].Drop(day)
	}
	return n
}

// forgetOrderUses forgets the uses of authorizations whose exposing day
// is before first: such a token is refused as out of the window anyway.
func (e *Enclave) forgetOrderUses(first calendar.Day) {
	o := e.orders
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, day := range o.used {
		if day < first {
			delete(o.used, id)
		}
	}
}

// Layout of an order authorization: the order it grants (1), the
// exposing day (4), the period (4), and the MAC of those and of the
// phone's daily key of the exposing day (23).
const (
	orderTokenHeader = 1 + 4 + 4
	orderMACLen      = api.AuthorizationSize - orderTokenHeader
)

// orderGrant is what a verified order authorization grants.
type orderGrant struct {
	order int
	day   calendar.Day
	use   [16]byte
}

// orderPeriod returns the period of the policy's authorization lifetime
// at now, and when a token of it stops being accepted: at the end of the
// next period, so that a token handed out is valid at least a lifetime.
func (e *Enclave) orderPeriod(now time.Time) (period uint32, expires int64) {
	ttl := int64(e.policy.UploadAuthorizationSeconds)
	p := max(now.Unix(), 0) / ttl
	return uint32(p), (p + 2) * ttl
}

// orderMAC returns the MAC of an order authorization's header under the
// phone's daily key tek.
func (e *Enclave) orderMAC(header []byte, tek enid.TEK) []byte {
	m := hmac.New(sha256.New, e.orders.key)
	m.Write([]byte("token\x00"))
	m.Write(header)
	m.Write(tek[:])
	return m.Sum(nil)[:orderMACLen]
}

// orderUse returns the use id of the authorization of order on day under
// tek: the same for every period's token.
func (e *Enclave) orderUse(order int, day calendar.Day, tek enid.TEK) [16]byte {
	m := hmac.New(sha256.New, e.orders.key)
	m.Write([]byte("use\x00"))
	m.Write([]byte{byte(order)})
	m.Write(binary.BigEndian.AppendUint32(nil, uint32(day)))
	m.Write(tek[:])
	return [16]byte(m.Sum(nil))
}

// orderToken returns the authorization to upload as a source of order on
// day, for the phone whose daily key of day is tek, and when it expires.
func (e *Enclave) orderToken(order int, day calendar.Day, tek enid.TEK, now time.Time) ([]byte, int64) {
	period, expires := e.orderPeriod(now)
	token := make([]byte, orderTokenHeader, api.AuthorizationSize)
	token[0] = byte(order)
	binary.BigEndian.PutUint32(token[1:5], uint32(day))
	binary.BigEndian.PutUint32(token[5:9], period)
	return append(token, e.orderMAC(token, tek)...), expires
}

// exposingKey returns the phone's daily key of day in rep: the first (keys are
// sorted by start) valid at some interval of day.
func exposingKey(rep contactlog.Report, day calendar.Day) (enid.TEK, bool) {
	from := enid.IntervalOf(day.Time())
	to := from + enid.RollingPeriod
	for _, k := range rep.Keys {
		if k.End() > from && k.Start < to {
			return k.TEK, true
		}
	}
	return enid.TEK{}, false
}

// readOrderToken returns what token grants if it is an order
// authorization: if its MAC verifies under the report's daily key of the
// day it names. A token that is not one (a result's authorization, or
// nothing valid) gives nil and no error; an order authorization the
// enclave refuses (expired, of a day the window left, of an order the
// policy does not have) gives its grant and why.
func (e *Enclave) readOrderToken(token []byte, rep contactlog.Report, now time.Time) (*orderGrant, error) {
	if e.orders.max < 2 || len(token) != api.AuthorizationSize {
		return nil, nil
	}
	day := calendar.Day(binary.BigEndian.Uint32(token[1:5]))
	tek, ok := exposingKey(rep, day)
	if !ok || !hmac.Equal(e.orderMAC(token[:orderTokenHeader], tek), token[orderTokenHeader:]) {
		return nil, nil
	}
	g := &orderGrant{order: int(token[0]), day: day, use: e.orderUse(int(token[0]), day, tek)}
	clear(tek[:])
	period, _ := e.orderPeriod(now)
	first, _ := e.window(now)
	switch got := binary.BigEndian.Uint32(token[5:9]); {
	case g.order < 2 || g.order > e.orders.max:
		return g, api.Errorf(api.CodeNotAuthorized, "an order authorization of order %d; the policy's max_order is %d", g.order, e.orders.max)
	case got > period:
		return g, api.Errorf(api.CodeNotAuthorized, "an order authorization of a period to come")
	case got+1 < period:
		ttl := int64(e.policy.UploadAuthorizationSeconds)
		return g, api.Errorf(api.CodeExpired, "the order authorization expired at %s; the next exposure check hands out a new one",
			time.Unix((int64(got)+2)*ttl, 0).UTC().Format(time.RFC3339))
	case day < first:
		return g, api.Errorf(api.CodeOutOfWindow, "the order authorization's exposing day %s left the %d-day retention window", day, e.policy.RetentionDays)
	}
	return g, nil
}

// orderUsed reports whether the authorization of use id was used.
func (e *Enclave) orderUsed(id [16]byte) bool {
	e.orders.mu.Lock()
	defer e.orders.mu.Unlock()
	_, ok := e.orders.used[id]
	return ok
}

// reserveOrder marks g used, or says it was. An upload that fails after
// it calls releaseOrder.
func (e *Enclave) reserveOrder(g *orderGrant) error {
	o := e.orders
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.used[g.use]; ok {
		return api.Errorf(api.CodeAlreadyUsed, "this order authorization was already used: one upload per exposure")
	}
	o.used[g.use] = g.day
	return nil
}

func (e *Enclave) releaseOrder(g *orderGrant) {
	e.orders.mu.Lock()
	defer e.orders.mu.Unlock()
	delete(e.orders.used, g.use)
}

// grantOrder adds to resp, the answer of a phone exposed at order k with
// score s, the authorization to upload as a source of order k+1, unless
// k is the policy's max_order, the phone used it already, or its report
// has no key of the exposing day (its earliest exposed day at order k).
func (e *Enclave) grantOrder(resp *api.ExposureResponse, rep contactlog.Report, s *score, k int, now time.Time) {
	if k < 1 || k >= e.orders.max {
		return
	}
	i := slices.IndexFunc(s.days, func(d api.ExposureDay) bool { return d.Exposed })
	if i < 0 {
		return
	}
	day := s.first + calendar.Day(i)
	tek, ok := exposingKey(rep, day)
	if !ok {
		return
	}
	defer clear(tek[:])
	if e.orderUsed(e.orderUse(k+1, day, tek)) {
		return
	}
	resp.OrderAuthorization, resp.OrderAuthorizationExpiresAt = e.orderToken(k+1, day, tek, now)
	resp.UploadFrom = dayDate(day)
}

// withdrawOrder takes the order authorization out of an exchange's answer
// whose upload used it, g: the answer's token, if it is of g's order and
// exposing day (of the same phone, since the same report made both), of
// this period or the last. One of another exposing day stays.
func withdrawOrder(resp *api.ExposureResponse, g *orderGrant) {
	t := resp.OrderAuthorization
	if len(t) == api.AuthorizationSize && int(t[0]) == g.order && calendar.Day(binary.BigEndian.Uint32(t[1:5])) == g.day {
		resp.OrderAuthorization, resp.OrderAuthorizationExpiresAt, resp.UploadFrom = nil, 0, ""
	}
}

// dropLowerSources applies the check's cycle rule to the matches of order
// k (above 1) of the sightings ss[in[j]]: a match (longest[j] >= 0, or
// hit[j]) is ignored when the checking phone's own side of the sighting is
// held at an order below k, its tuple (own, heard) by a reciprocal index
// or its own identifier by a one-sided index, near the sighting's
// interval and in the window.
func (e *Enclave) dropLowerSources(k int, ss []contactlog.Sighting, own []enid.RPI, in, longest []int, hit []bool, w reportWindow, tol uint32) {
	var recip, ones []matchindex.Query
	var of []int // of[q] is the j of queries recip[q] and ones[q]
	for j, i := range in {
		if longest[j] < 0 && !hit[j] {
			continue
		}
		iv := uint32(ss[i].Interval)
		recip = append(recip, matchindex.Query{Key: reciprocalKey(own[i], ss[i].Heard), Interval: iv})
		ones = append(ones, matchindex.Query{Key: oneSidedKey(own[i]), Interval: iv})
		of = append(of, j)
	}
	defer clear(recip)
	defer clear(ones)
	if len(of) == 0 {
		return
	}
	drop := func(found []matchindex.Found) {
		for _, f := range found {
			if w.keeps(f.Contact) {
				j := of[f.Query]
				longest[j], hit[j] = -1, false
			}
		}
	}
	for m := 1; m < k; m++ {
		r, o := e.indexesOf(m)
		drop(r.LookupBatch(nil, recip, tol))
		if e.policy.OneSided() && o.Len() > 0 {
			drop(o.LookupBatch(nil, ones, tol))
		}
	}
}

// dropCycles returns the sightings of rep, a phone's upload of order k
// (above 1), whose mirror no reciprocal index of a lower order holds, in
// the window: the upload's cycle rule. It leaves rep's slices as they
// are; the caller clears what it returns.
func (e *Enclave) dropCycles(rep contactlog.Report, k int, w reportWindow) ([]contactlog.Sighting, error) {
	kept := slices.Clone(rep.Sightings)
	if !e.policy.Reciprocal() || len(kept) == 0 {
		return kept, nil
	}
	own, err := ownRPIs(rep)
	if err != nil {
		clear(kept)
		return nil, err
	}
	defer clear(own)
	qs := make([]matchindex.Query, len(kept))
	defer clear(qs)
	for i := range kept {
		setMatchQuery(&qs[i], &own[i], &kept[i].Heard, uint32(kept[i].Interval))
	}
	drop := make([]bool, len(kept))
	tol := uint32(e.policy.Risk.IntervalTolerance)
	for m := 1; m < k; m++ {
		r, _ := e.indexesOf(m)
		for _, f := range r.LookupBatch(nil, qs, tol) {
			if w.keeps(f.Contact) {
				drop[f.Query] = true
			}
		}
	}
	n := 0
	for i := range kept {
		if !drop[i] {
			kept[n] = kept[i]
			n++
		}
	}
	clear(kept[n:])
	return kept[:n], nil
}

// fromDay returns rep's keys and sightings of day and later, in new
// slices: what an upload under an order authorization of day takes.
func fromDay(rep contactlog.Report, day calendar.Day) contactlog.Report {
	first := enid.IntervalOf(day.Time())
	var out contactlog.Report
	for _, k := range rep.Keys {
		if k.End() > first {
			out.Keys = append(out.Keys, k)
		}
	}
	for _, s := range rep.Sightings {
		if s.Interval >= first {
			out.Sightings = append(out.Sightings, s)
		}
	}
	return out
}

// applyOrderRecord applies a journal record of an n-order upload, at
// start (restore.go) or from another replica (applyJournal): a part goes
// into the indexes of its order, a use mark into the uses. A record of an
// order the policy does not have (written under another policy) is
// reported and skipped, as is one that does not decode. It is safe for
// concurrent use.
func (e *Enclave) applyOrderRecord(kind byte, day calendar.Day, id [16]byte, data []byte) error {
	if kind == journalOrderUsed {
		e.orders.mu.Lock()
		e.orders.used[id] = day
		e.orders.mu.Unlock()
		return nil
	}
	if len(data) == 0 || int(data[0]) < 2 || int(data[0]) > e.orders.max {
		e.log.Error("stored upload of an order the policy does not have; ignored", "day", day)
		return nil
	}
	recip, oneSided, ok := e.decodeUpload(day, data[1:])
	if !ok {
		return nil
	}
	r, o := e.indexesOf(int(data[0]))
	if err := r.Add(recip); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	if err := o.Add(oneSided); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	return nil
}
