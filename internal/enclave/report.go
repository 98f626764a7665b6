package enclave

import (
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// A report is what uploads and exposure checks carry: a device's daily keys
// and its sightings (package contactlog). Nothing in it is taken on trust:
// the device's own identifier at every sighting is derived here from its
// keys, so that the reciprocal pair (own, heard) is proven on both sides of
// a match, and a device can neither claim another's identifier (to frame
// it, or to probe whether it was exposed) nor invent one.

// parseReport decodes a report body within the policy's limits and maps
// its refusals to answers.
func (e *Enclave) parseReport(body []byte, maxSightings int) (contactlog.Report, error) {
	r, err := contactlog.ParseReport(body, contactlog.Limits{MaxKeys: e.policy.MaxKeys(), MaxSightings: maxSightings})
	switch {
	case err == nil:
		return r, nil
	case errors.Is(err, contactlog.ErrTooMany):
		return r, api.Errorf(api.CodeTooLarge, "%v (policy limits: %d daily keys, %d sightings)", err, e.policy.MaxKeys(), maxSightings)
	default:
		return r, api.Errorf(api.CodeMalformed, "report: %v", err)
	}
}

// reportWindow is the retention window at one instant, in the units a
// report is checked in.
type reportWindow struct {
	firstDay, lastDay calendar.Day
	first             enid.Interval // the first interval of firstDay
	latest            enid.Interval // the current interval, plus one of clock skew
}

func (e *Enclave) reportWindow(now time.Time) reportWindow {
	first, last := e.window(now)
	return reportWindow{
		firstDay: first,
		lastDay:  last,
		first:    enid.IntervalOf(first.Time()),
		latest:   enid.IntervalOf(now) + 1,
	}
}

// recent returns r without its keys and sightings before the window (r's
// slices are not modified).
func (w reportWindow) recent(r contactlog.Report) contactlog.Report {
	var out contactlog.Report
	for _, k := range r.Keys {
		if k.End() > w.first {
			out.Keys = append(out.Keys, k)
		}
	}
	for _, s := range r.Sightings {
		if !w.stale(s.Interval) {
			out.Sightings = append(out.Sightings, s)
		}
	}
	return out
}

// stale reports whether a sighting's interval lies before the window.
func (w reportWindow) stale(i enid.Interval) bool { return calendar.DayOf(i.Time()) < w.firstDay }

// checkReport checks a report against the window and the policy. Keys and
// sightings in the future, and sightings longer than the policy allows, are
// refused. Keys and sightings entirely before the window are refused in an
// upload (whose keys must be of the days it shares) and ignored in a check
// (a device's clock may put a day into its window that the backend's has
// left: they cannot match anything).
func (e *Enclave) checkReport(r contactlog.Report, w reportWindow, upload bool) error {
	for i, k := range r.Keys {
		switch {
		case k.Start > w.latest:
			return api.Errorf(api.CodeOutOfWindow, "daily key %d starts in the future (interval %d, now %d)", i, k.Start, w.latest-1)
		case upload && k.End() <= w.first:
			return api.Errorf(api.CodeOutOfWindow, "daily key %d (valid to interval %d) is older than the %d-day retention window", i, k.End(), e.policy.RetentionDays)
		}
	}
	for i, s := range r.Sightings {
		switch {
		case s.Interval > w.latest:
			return api.Errorf(api.CodeOutOfWindow, "sighting %d is in the future (interval %d, now %d)", i, s.Interval, w.latest-1)
		case upload && w.stale(s.Interval):
			return api.Errorf(api.CodeOutOfWindow, "sighting %d is older than the %d-day retention window", i, e.policy.RetentionDays)
		case int(s.Minutes) > e.policy.Limits.MaxSightingMinutes:
			return api.Errorf(api.CodeMalformed, "sighting %d lasts %d minutes, want at most %d", i, s.Minutes, e.policy.Limits.MaxSightingMinutes)
		}
	}
	return nil
}

// ownRPIs returns, for each sighting of r, the identifier the device was
// broadcasting: its daily key's RPI at the sighting's interval. Only the
// keys that cover a sighting are expanded, and only at the sighted
// intervals. r must be well formed (contactlog.ParseReport checked it).
// Each sighting's key is looked for first where the previous sighting's
// was, then at the next key, and only then searched (Report.Covering): a
// parsed report groups its sightings by key, and thousands of sightings
// then cost no binary search each. Sightings in any other order get the
// same answer, found the slower way.
func ownRPIs(r contactlog.Report) ([]enid.RPI, error) {
	keys := make([]*enid.Key, len(r.Keys))
	defer clear(keys)
	own := make([]enid.RPI, len(r.Sightings))
	k := 0
	for i := range r.Sightings {
		iv := r.Sightings[i].Interval
		switch {
		case k < len(r.Keys) && r.Keys[k].Contains(iv):
		case k+1 < len(r.Keys) && r.Keys[k+1].Contains(iv):
			k++
		default:
			if k = r.Covering(iv); k < 0 {
				clear(own)
				return nil, fmt.Errorf("sighting %d is covered by no daily key", i)
			}
		}
		if keys[k] == nil {
			var err error
			if keys[k], err = r.Keys[k].Key(); err != nil {
				clear(own)
				return nil, fmt.Errorf("daily key %d: %w", k, err)
			}
		}
		keys[k].PutRPI(&own[i], iv)
	}
	return own, nil
}

// reciprocalKey is the match index key of a sighting: the pair (own,
// heard), each cut to the prefix a report carries of a heard RPI
// (contactlog.RPIPrefix). Uploads and checks key alike, so that an
// upload's sighting of a phone and that phone's sighting of the uploader
// are each other's mirror; own RPIs are derived here whole and cut, since
// the other phone heard them and sent only their prefix.
func reciprocalKey(own, heard enid.RPI) matchindex.Key {
	return matchindex.NewKey(contactlog.RPIPrefix(own), contactlog.RPIPrefix(heard))
}

// reciprocalEntries returns the match index entries of an upload's
// sightings on day: each under its proven pair (own, heard).
func reciprocalEntries(ss []contactlog.Sighting, own []enid.RPI, day calendar.Day) []matchindex.Entry {
	es := make([]matchindex.Entry, len(ss))
	for i, s := range ss {
		es[i] = matchindex.Entry{
			Key: reciprocalKey(own[i], s.Heard),
			Contact: matchindex.Contact{
				Interval:    uint32(s.Interval),
				Minutes:     uint16(s.Minutes),
				Attenuation: s.Attenuation,
				Day:         day,
			},
		}
	}
	return es
}

// oneSidedKey is the one-sided index's key for an identifier: its prefix
// (contactlog.RPIPrefix), as a report carries a heard one, then zeros (the
// index keys pairs; one side suffices here).
func oneSidedKey(rpi enid.RPI) matchindex.Key {
	return matchindex.NewKey(contactlog.RPIPrefix(rpi), enid.RPI{})
}

// oneSidedEntries returns the one-sided index entries of daily keys: every
// RPI each key derives for the intervals of day. One-sided matches are
// scored with the checking device's own minutes and attenuation, so the
// entries carry only the interval and the day.
func oneSidedEntries(keys []contactlog.DailyKey, day calendar.Day) ([]matchindex.Entry, error) {
	from := enid.IntervalOf(day.Time())
	to := from + enid.RollingPeriod
	var es []matchindex.Entry
	for i, dk := range keys {
		lo, hi := max(dk.Start, from), min(dk.End(), to)
		if lo >= hi {
			continue
		}
		k, err := dk.Key()
		if err != nil {
			return nil, fmt.Errorf("daily key %d: %w", i, err)
		}
		for iv := lo; iv < hi; iv++ {
			es = append(es, matchindex.Entry{
				Key:     oneSidedKey(k.RPI(iv)),
				Contact: matchindex.Contact{Interval: uint32(iv), Day: day},
			})
		}
	}
	return es, nil
}

// splitByDay returns, for each day of the window that r's sightings or
// keys touch, the part of r that belongs to it: the day's sightings and the
// keys valid during the day (a key that spans midnight belongs to both of
// its days). Each part is well formed on its own, so it is stored, sealed
// under its day's key, and deleted with its day.
func splitByDay(r contactlog.Report, w reportWindow) map[calendar.Day]contactlog.Report {
	parts := map[calendar.Day]contactlog.Report{}
	for d, ks := range keysByDay(r.Keys, w) {
		parts[d] = contactlog.Report{Keys: ks}
	}
	for _, s := range r.Sightings {
		d := calendar.DayOf(s.Interval.Time())
		p := parts[d]
		p.Sightings = append(p.Sightings, s)
		parts[d] = p
	}
	return parts
}

// keysByDay returns, for each day from the window's first that keys are
// valid in, those keys. Not clipped at the end: a key that began today may
// run into tomorrow, and sightings of tomorrow's first interval (clock
// skew) need it.
func keysByDay(keys []contactlog.DailyKey, w reportWindow) map[calendar.Day][]contactlog.DailyKey {
	days := map[calendar.Day][]contactlog.DailyKey{}
	for _, k := range keys {
		first := max(calendar.DayOf(k.Start.Time()), w.firstDay)
		last := calendar.DayOf((k.End() - 1).Time())
		for d := first; d <= last; d++ {
			days[d] = append(days[d], k)
		}
	}
	return days
}
