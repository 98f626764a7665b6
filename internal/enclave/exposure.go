package enclave

import (
	"context"
	"encoding/json"
	"slices"

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
	s := newScore(w)
	e.match(rep.Sightings, own, w, s)
	return s.answer(e), nil
}

// match scores each sighting in the window once: by the reciprocal rule if
// it matches, else by the one-sided rule. A sighting repeated in the report
// (the same identifier in the same interval) counts once.
func (e *Enclave) match(ss []contactlog.Sighting, own []enid.RPI, w reportWindow, s *score) {
	tol := uint32(e.policy.Risk.IntervalTolerance)
	type seen struct {
		heard    enid.RPI
		interval enid.Interval
	}
	counted := map[seen]bool{}
	defer clear(counted)
	var buf []matchindex.Contact
	defer func() { clear(buf) }()
	for i, sg := range ss {
		if w.stale(sg.Interval) {
			continue
		}
		minutes, rule := 0, ""
		buf = w.kept(matchindex.Match(e.index, buf[:0], reciprocalKey(own[i], sg.Heard), uint32(sg.Interval), tol))
		if len(buf) > 0 {
			// Both sides heard each other for at most the shorter of the
			// two durations; the attenuation is what this device measured.
			// Of several uploads of the encounter, the longest counts,
			// whatever order the index returns them in.
			longest := 0
			for _, c := range buf {
				longest = max(longest, int(c.Minutes))
			}
			minutes, rule = min(int(sg.Minutes), longest), api.RuleReciprocal
		} else if buf = w.kept(matchindex.Near(e.oneSided, buf[:0], oneSidedKey(sg.Heard), uint32(sg.Interval), tol)); len(buf) > 0 {
			minutes, rule = int(sg.Minutes), api.RuleOneSided
		}
		if rule == "" || counted[seen{sg.Heard, sg.Interval}] {
			continue
		}
		counted[seen{sg.Heard, sg.Interval}] = true
		s.add(calendar.DayOf(sg.Interval.Time()), minutes, int(sg.Attenuation), rule, e)
	}
}

// kept drops the contacts of days that have left the window but that
// Expire has not dropped yet, so that answers do not depend on when it
// last ran.
func (w reportWindow) kept(cs []matchindex.Contact) []matchindex.Contact {
	return slices.DeleteFunc(cs, func(c matchindex.Contact) bool { return c.Day < w.firstDay })
}

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

// answer judges each day against the policy's threshold, and says as much
// as the policy's answers setting allows: coarse answers give only whether
// the phone was exposed, the most recent exposed day and the rules that
// matched on exposed days, so that matches below the threshold stay hidden.
func (s *score) answer(e *Enclave) api.ExposureResponse {
	var resp api.ExposureResponse
	for i := range s.days {
		d := &s.days[i]
		d.Exposed = e.policy.Risk.Exposed(d.WeightedMinutes)
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
	resp := api.ExposureResponse{LastExposure: "0000-00-00"}
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
