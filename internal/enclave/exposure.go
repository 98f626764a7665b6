package enclave

import (
	"context"
	"encoding/json"
	"math"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// CheckExposure answers whether any of a device's sightings matches an
// infected user's: reciprocally (an upload holds a sighting of this
// device's identifier in the same encounter, both proven by daily keys),
// or, where the policy allows it and for imported GAEN keys, one-sidedly
// (the sighted identifier derives from an infected user's daily key). The
// answer lists every day of the retention window, so its size does not
// depend on whether the device was exposed. Sightings and keys before the
// window cannot match and are skipped. Nothing is stored or logged, and the
// device's keys and derived identifiers are cleared before it returns.
func (e *Enclave) CheckExposure(ctx context.Context, r api.ExposureRequest) (api.ExposureResponse, error) {
	rep, err := e.parseReport(r.Report, e.policy.Limits.MaxCheckSightings)
	clear(r.Report)
	if err != nil {
		return api.ExposureResponse{}, err
	}
	defer rep.Clear()
	w := e.reportWindow(e.now())
	if err := e.checkReport(rep, w, false); err != nil {
		return api.ExposureResponse{}, err
	}
	own, err := ownRPIs(rep)
	if err != nil {
		return api.ExposureResponse{}, api.Errorf(api.CodeMalformed, "report: %v", err)
	}
	defer clear(own)
	return e.exposure(rep, own, w), nil
}

// exposure answers the check of rep, whose sightings' own identifiers are
// own, in window w: at the lowest order at which the phone was exposed,
// each order judged by its own risk rule (policy.OrderRisk), with the
// authorization to upload as a source of the next order when the policy
// has one (order.go). A phone exposed at no order gets order 1's answer,
// with Order 0.
func (e *Enclave) exposure(rep contactlog.Report, own []enid.RPI, w reportWindow) api.ExposureResponse {
	scores := e.match(rep.Sightings, own, w)
	for i, s := range scores {
		if resp := s.answer(e, i+1); resp.Exposed {
			resp.Order = i + 1
			e.grantOrder(&resp, rep, s, i+1, e.now())
			return resp
		}
	}
	return scores[0].answer(e, 1)
}

// match scores each sighting in the window once per order, from 1 to the
// policy's max_order: by the reciprocal rule if it matches an upload of
// that order, else by the one-sided rule. A sighting repeated in the
// report (the same identifier in the same interval) counts once. The
// lookups of a check go to each index as one batch, which lets the index
// overlap their memory accesses; the answer is the one
// sighting-by-sighting lookups would give. The indexes of an order above
// 1 that hold nothing are not searched: whether they do is the same for
// every check at a time, so skipping them tells nothing about a check.
func (e *Enclave) match(ss []contactlog.Sighting, own []enid.RPI, w reportWindow) []*score {
	tol := uint32(e.policy.Risk.IntervalTolerance)
	// in[j] is the sighting of query j: sightings before the window are
	// left out.
	in := make([]int, 0, len(ss))
	for i := range ss {
		if !w.stale(ss[i].Interval) {
			in = append(in, i)
		}
	}
	qs := make([]matchindex.Query, len(in))
	defer clear(qs)
	for j, i := range in {
		setMatchQuery(&qs[j], &own[i], &ss[i].Heard, uint32(ss[i].Interval))
	}
	scores := make([]*score, e.policy.MaxOrder())
	for k := range scores {
		scores[k] = newScore(w)
		recip, oneSided := e.indexesOf(k + 1)
		if k > 0 && recip.Len() == 0 && oneSided.Len() == 0 {
			continue
		}
		longest := reciprocalMatches(recip, qs, w, tol)
		hit := oneSidedMatches(oneSided, ss, in, longest, w, tol)
		if k > 0 {
			e.dropLowerSources(k+1, ss, own, in, longest, hit, w, tol)
		}
		e.score(ss, in, longest, hit, scores[k])
	}
	return scores
}

// score adds to s the sightings ss[in[j]] that matched: reciprocally the
// longest[j] minutes (or none, -1), else one-sided if hit[j].
func (e *Enclave) score(ss []contactlog.Sighting, in, longest []int, hit []bool, s *score) {
	type seen struct {
		heard    enid.RPI
		interval enid.Interval
	}
	counted := map[seen]bool{}
	defer clear(counted)
	for j, i := range in {
		sg := &ss[i]
		minutes, rule := 0, ""
		switch {
		case longest[j] >= 0:
			// Both sides heard each other for at most the shorter of the
			// two durations; the attenuation is what this device measured.
			// Of several uploads of the encounter, the longest counts,
			// whatever order the index returns them in.
			minutes, rule = min(int(sg.Minutes), longest[j]), api.RuleReciprocal
		case hit[j]:
			minutes, rule = int(sg.Minutes), api.RuleOneSided
		}
		if rule == "" || counted[seen{sg.Heard, sg.Interval}] {
			continue
		}
		counted[seen{sg.Heard, sg.Interval}] = true
		s.add(calendar.DayOf(sg.Interval.Time()), minutes, int(sg.Attenuation), rule, e)
	}
}

// reciprocalMatches looks up in idx the mirrors of the sightings, whose
// queries are qs (setMatchQuery), in one batch, and returns for each
// query the longest minutes of the contacts found in the window, or -1 if
// none.
func reciprocalMatches(idx matchindex.Index, qs []matchindex.Query, w reportWindow, tol uint32) []int {
	found := idx.LookupBatch(nil, qs, tol)
	defer clear(found)
	longest := make([]int, len(qs))
	for j := range longest {
		longest[j] = -1
	}
	for _, f := range found {
		if w.keeps(f.Contact) {
			longest[f.Query] = max(longest[f.Query], int(f.Contact.Minutes))
		}
	}
	return longest
}

// setMatchQuery sets *q to matchindex.MatchQuery(reciprocalKey(*own,
// *heard), interval), the query of a sighting: the key of the uploader's
// tuple of the same encounter, whose own and heard halves are this
// device's heard and own. It writes the key in place: built by value, the
// query was copied a dozen times, in 16- and 32-byte pieces, per sighting.
func setMatchQuery(q *matchindex.Query, own, heard *enid.RPI, interval uint32) {
	const half = len(matchindex.Key{}) / 2
	q.Key = matchindex.Key{}
	copy(q.Key[:contactlog.RPIPrefixSize], heard[:contactlog.RPIPrefixSize])
	copy(q.Key[half:half+contactlog.RPIPrefixSize], own[:contactlog.RPIPrefixSize])
	q.Interval = interval
}

// oneSidedMatches looks up, in one batch, the sightings ss[in[j]] that
// matched nothing reciprocally (longest[j] < 0) in the one-sided index
// idx, and reports for each j whether a contact in the window was found.
//
// An empty one-sided index (the policy matches uploads reciprocally only,
// and no GAEN keys were imported) is not searched: it can find nothing,
// and searching it cost a check as much as a third of its index work.
// Whether it is empty is the same for every check at a time, so skipping
// it tells nothing about a check.
func oneSidedMatches(idx matchindex.Index, ss []contactlog.Sighting, in, longest []int, w reportWindow, tol uint32) []bool {
	hit := make([]bool, len(in))
	if idx.Len() == 0 {
		return hit
	}
	qs := make([]matchindex.Query, 0, len(in))
	of := make([]int, 0, len(in)) // of[k] is the j of query k
	for j, i := range in {
		if longest[j] < 0 {
			qs = append(qs, matchindex.Query{Key: oneSidedKey(ss[i].Heard), Interval: uint32(ss[i].Interval)})
			of = append(of, j)
		}
	}
	defer clear(qs)
	found := idx.LookupBatch(nil, qs, tol)
	defer clear(found)
	for _, f := range found {
		if w.keeps(f.Contact) {
			hit[of[f.Query]] = true
		}
	}
	return hit
}

// keeps reports whether c is of a day in the window: the index may still
// hold days that have left it but that Expire has not dropped yet, and
// answers must not depend on when it last ran.
func (w reportWindow) keeps(c matchindex.Contact) bool { return c.Day >= w.firstDay }

// score accumulates a check's matches per day of the window.
type score struct {
	first calendar.Day
	days  []api.ExposureDay
}

func newScore(w reportWindow) *score {
	s := &score{first: w.firstDay, days: make([]api.ExposureDay, int(w.lastDay-w.firstDay)+1)}
	for i := range s.days {
		s.days[i] = api.ExposureDay{Date: dayDate(w.firstDay + calendar.Day(i)), MinAttenuation: 255}
	}
	return s
}

// add scores one matched sighting. A sighting of the next day's first
// interval (clock skew) counts on the last day.
func (s *score) add(day calendar.Day, minutes, attenuation int, rule string, e *Enclave) {
	d := min(int(day-s.first), len(s.days)-1)
	x := &s.days[d]
	x.Minutes += minutes
	x.WeightedMinutes += e.policy.Risk.WeightedMinutes(minutes, attenuation)
	x.MinAttenuation = min(x.MinAttenuation, attenuation)
	x.Reciprocal = x.Reciprocal || rule == api.RuleReciprocal
	x.OneSided = x.OneSided || rule == api.RuleOneSided
}

// answer judges each day against the threshold of order k, and says as
// much as the policy's answers setting allows: coarse answers give only
// whether the phone was exposed, the most recent exposed day and the rules
// that matched on exposed days, so that matches below the threshold stay
// hidden.
func (s *score) answer(e *Enclave, k int) api.ExposureResponse {
	var resp api.ExposureResponse
	risk := e.policy.OrderRisk(k)
	for i := range s.days {
		d := &s.days[i]
		d.Exposed = risk.Exposed(d.WeightedMinutes)
		if d.Exposed {
			resp.Exposed = true
			resp.LastExposure = d.Date
			resp.Reciprocal = resp.Reciprocal || d.Reciprocal
			resp.OneSided = resp.OneSided || d.OneSided
		}
	}
	if e.policy.Detailed() {
		resp.Days = s.days
	}
	return resp
}

// ExposureResponseBound returns the encoded size of the largest exposure
// answer the policy allows, so the HTTP layer can pad every answer to it.
func (e *Enclave) ExposureResponseBound() int {
	b, _ := json.Marshal(e.largestExposureAnswer())
	return len(b) + 64 // Binary HTTP framing and the content-type field
}

// largestExposureAnswer is at least as long as any answer the policy
// allows. Its flags are false, the longer of the two in JSON: a real
// answer's rules are not all true.
func (e *Enclave) largestExposureAnswer() api.ExposureResponse {
	p := e.policy
	resp := api.ExposureResponse{LastExposure: "0000-00-00", Order: p.MaxOrder()}
	if p.MaxOrder() > 1 {
		// The answer of a phone exposed below max_order carries the
		// authorization to upload at the next order (order.go).
		resp.OrderAuthorization = make([]byte, api.AuthorizationSize)
		resp.OrderAuthorizationExpiresAt = math.MaxInt64
		resp.UploadFrom = "0000-00-00"
	}
	if !p.Detailed() {
		return resp
	}
	most := p.Limits.MaxCheckSightings * p.Limits.MaxSightingMinutes
	heaviest := 0
	for _, w := range p.Risk.WeightsPercent {
		heaviest = max(heaviest, w)
	}
	resp.Days = make([]api.ExposureDay, p.RetentionDays)
	for i := range resp.Days {
		resp.Days[i] = api.ExposureDay{Date: "0000-00-00", Minutes: most, WeightedMinutes: most * heaviest, MinAttenuation: 255}
	}
	return resp
}

func dayDate(d calendar.Day) string { return d.Time().Format(api.DateLayout) }
