package enclave

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/policy"
)

// TestOneSidedMatching: under a policy whose matching includes one_sided,
// a device that only heard an uploader (and was not heard) is exposed,
// scored by its own minutes and attenuation; under the default policy it
// is not. A device that met the uploader both ways is matched once, by
// the reciprocal rule where the policy has it.
func TestOneSidedMatching(t *testing.T) {
	for _, tc := range []struct {
		name     string
		matching []string
		// hearer is whether the device that only heard the uploader is
		// exposed; metBy is the rule that matches the one it met.
		hearer bool
		metBy  string
	}{
		{"default", []string{policy.MatchReciprocal}, false, policy.MatchReciprocal},
		{"both", []string{policy.MatchReciprocal, policy.MatchOneSided}, true, policy.MatchReciprocal},
		{"one-sided only", []string{policy.MatchOneSided}, true, policy.MatchOneSided},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, detailed, func(p *policy.Policy) { p.Matching = tc.matching })
			at := v.now().Add(-26 * time.Hour)
			u, hearer, met := newDevice(), newDevice(), newDevice()
			j := enid.IntervalOf(at)
			heard := []contactlog.Sighting{hearer.hears(u, j, j, 8, 60), hearer.hears(u, j+1, j+1, 9, 40)}
			um, mu := meet(u, met, at, 4, 70) // u logged 4 minutes at 70 dB
			mu.Minutes, mu.Attenuation = 10, 50
			v.mustUpload(u.report(um))

			r := v.check(hearer.report(heard...))
			d := dayOf(t, r, at)
			if tc.hearer {
				// The hearer's own figures: 8 + 9 minutes, the closer 40 dB.
				if !r.Exposed || d.Minutes != 17 || d.WeightedMinutes != 1700 || d.MinAttenuation != 40 || !d.OneSided || d.Reciprocal {
					t.Errorf("the device that heard the uploader: %+v; want exposed one-sided with its 17 minutes", d)
				}
				wantQuiet(t, r, d.Date)
			} else {
				if r.Exposed {
					t.Error("the device that heard the uploader is exposed")
				}
				wantQuiet(t, r)
			}

			d = dayOf(t, v.check(met.report(mu)), at)
			switch tc.metBy {
			case policy.MatchReciprocal:
				// The shorter side's minutes, once: not also one-sided.
				if d.Minutes != 4 || d.MinAttenuation != 50 || !d.Reciprocal || d.OneSided {
					t.Errorf("the device met both ways: %+v; want 4 reciprocal minutes only", d)
				}
			case policy.MatchOneSided:
				if d.Minutes != 10 || d.MinAttenuation != 50 || d.Reciprocal || !d.OneSided {
					t.Errorf("the device met both ways: %+v; want its own 10 minutes, one-sided", d)
				}
			}
		})
	}
}

// TestOneSidedTolerance: a sighted identifier matches one-sidedly if the
// uploaded key derives it for an interval within the policy's tolerance
// of the sighting's, not further; and only for the intervals the key is
// valid, since the uploader broadcast nothing else.
func TestOneSidedTolerance(t *testing.T) {
	for _, tolerance := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(tolerance), func(t *testing.T) {
			v := newEnv(t, bothRules, detailed, func(p *policy.Policy) { p.Risk.IntervalTolerance = tolerance })
			at := v.now().Add(-26 * time.Hour)
			j := enid.IntervalOf(at)
			// The uploader's key is valid for 6 intervals from j.
			key := contactlog.DailyKey{TEK: enid.NewTEK(), Start: j, Period: 6}
			v.mustUpload(newDevice(key).report())
			k, err := key.Key()
			if err != nil {
				t.Fatal(err)
			}
			// heard returns the minutes matched by a check of the RPI that
			// the key derives for rpiOf, heard skew intervals later. The
			// RPI is derived from the key directly, so that it can be one
			// of an interval the key is not valid for.
			heard := func(rpiOf enid.Interval, skew int) int {
				d := newDevice()
				s := contactlog.Sighting{Heard: k.RPI(rpiOf), Interval: enid.Interval(int(rpiOf) + skew), Minutes: 5, Attenuation: 50}
				d.key(s.Interval)
				return dayOf(t, v.check(d.report(s)), at).Minutes
			}
			for _, rpiOf := range []enid.Interval{key.Start, key.End() - 1} {
				for _, skew := range []int{-tolerance, tolerance} {
					if heard(rpiOf, skew) != 5 {
						t.Errorf("the RPI of interval %d heard %d intervals off: no match", rpiOf-j, skew)
					}
				}
				for _, skew := range []int{-tolerance - 1, tolerance + 1} {
					if heard(rpiOf, skew) != 0 {
						t.Errorf("the RPI of interval %d heard %d intervals off: matched", rpiOf-j, skew)
					}
				}
			}
			for _, rpiOf := range []enid.Interval{key.Start - 1, key.End()} {
				if heard(rpiOf, 0) != 0 {
					t.Errorf("an RPI the key derives for interval %d, outside its validity: matched", rpiOf-j)
				}
			}
		})
	}
}

// TestMatchCountsOnce: a sighting repeated in a check (the same identifier
// in the same interval) counts once, by either rule, so a device cannot
// inflate its score by repeating itself; the same identifier heard in
// another interval is another sighting.
func TestMatchCountsOnce(t *testing.T) {
	v := newEnv(t, bothRules, detailed)
	at := v.now().Add(-26 * time.Hour)
	u, hearer, met := newDevice(), newDevice(), newDevice()
	j := enid.IntervalOf(at)
	h := hearer.hears(u, j, j, 6, 50)
	um, mu := meet(u, met, at, 6, 50)
	v.mustUpload(u.report(um))

	if d := dayOf(t, v.check(met.report(mu, mu, mu)), at); d.Minutes != 6 || !d.Reciprocal || d.OneSided {
		t.Errorf("a reciprocal sighting sent three times: %+v; want its 6 minutes once", d)
	}
	if d := dayOf(t, v.check(hearer.report(h, h, h)), at); d.Minutes != 6 || !d.OneSided {
		t.Errorf("a one-sided sighting sent three times: %+v; want its 6 minutes once", d)
	}
	// The hearer kept hearing the same RPI after its clock moved on to the
	// next interval (the uploader's clock lagged): two sightings.
	if d := dayOf(t, v.check(hearer.report(h, hearer.hears(u, j+1, j, 6, 50))), at); d.Minutes != 12 {
		t.Errorf("one RPI heard in two intervals: %+v; want 12 minutes", d)
	}
}

// midnightWorld is an uploader whose key runs from noon yesterday to noon
// today, a device that only heard it, and one that met it both ways with
// a key that also spans midnight (from 18:00).
type midnightWorld struct {
	u, hearer, met *device
	heard, um, mu  []contactlog.Sighting
	yesterday      time.Time
}

func newMidnightWorld(v *env) midnightWorld {
	today := enid.IntervalOf(v.now()).RollingStart()
	noon := today - enid.RollingPeriod/2
	w := midnightWorld{
		u:         newDevice(contactlog.DailyKey{TEK: enid.NewTEK(), Start: noon, Period: enid.RollingPeriod}),
		hearer:    newDevice(),
		met:       newDevice(contactlog.DailyKey{TEK: enid.NewTEK(), Start: noon + 36, Period: enid.RollingPeriod}),
		yesterday: (today - 1).Time(),
	}
	// Heard at 23:50, 00:00 and the key's last interval, 11:50.
	for _, i := range []enid.Interval{today - 1, today, noon + enid.RollingPeriod - 1} {
		w.heard = append(w.heard, w.hearer.hears(w.u, i, i, 10, 50))
	}
	// Met at 23:50 and 00:10.
	for _, i := range []enid.Interval{today - 1, today + 1} {
		x, y := meet(w.u, w.met, i.Time(), 10, 50)
		w.um, w.mu = append(w.um, x), append(w.mu, y)
	}
	return w
}

// TestOneSidedKeySpanningMidnight: a key valid across midnight is stored
// with each of its two days and matches on both, one-sidedly and
// reciprocally; a restart rebuilds both indexes to the same answers.
func TestOneSidedKeySpanningMidnight(t *testing.T) {
	v := newEnv(t, bothRules, detailed)
	w := newMidnightWorld(v)
	v.mustUpload(w.u.report(w.um...))
	var days []calendar.Day
	for _, r := range v.e.journal.pending {
		if r.kind == journalUpload {
			days = append(days, r.day)
		}
	}
	if len(days) != 2 || days[0] == days[1] {
		t.Fatalf("upload parts of days %v; want one on each of the key's two days", days)
	}
	// Every interval of the key, and each sighting once.
	if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 2 || m != enid.RollingPeriod {
		t.Fatalf("indexes hold %d sightings and %d identifiers, want 2 and %d", n, m, enid.RollingPeriod)
	}
	heard, met := v.check(w.hearer.report(w.heard...)), v.check(w.met.report(w.mu...))
	for _, at := range []time.Time{w.yesterday, v.now()} {
		if d := dayOf(t, heard, at); d.Minutes == 0 || !d.OneSided || d.Reciprocal {
			t.Errorf("the hearer on %s: %+v; want a one-sided match", d.Date, d)
		}
		if d := dayOf(t, met, at); d.Minutes != 10 || d.OneSided || !d.Reciprocal {
			t.Errorf("the met device on %s: %+v; want 10 reciprocal minutes", d.Date, d)
		}
	}
	if d := dayOf(t, heard, v.now()); d.Minutes != 20 {
		t.Errorf("the hearer today: %d minutes, want 20", d.Minutes)
	}

	n, m := v.e.index.Len(), v.e.oneSided.Len()
	v.flushAll()
	v.restart()
	if n2, m2 := v.e.index.Len(), v.e.oneSided.Len(); n2 != n || m2 != m {
		t.Errorf("after a restart the indexes hold %d and %d entries, before %d and %d", n2, m2, n, m)
	}
	if r := v.check(w.hearer.report(w.heard...)); !equalExposure(r, heard) {
		t.Errorf("the hearer after a restart: %+v, before: %+v", r, heard)
	}
	if r := v.check(w.met.report(w.mu...)); !equalExposure(r, met) {
		t.Errorf("the met device after a restart: %+v, before: %+v", r, met)
	}
}

// TestExpireOneSided: Expire drops a day's one-sided identifiers with the
// day; of a key that spans midnight, the half of the day still kept stays
// and still matches, after a restart too.
func TestExpireOneSided(t *testing.T) {
	v := newEnv(t, bothRules, detailed)
	w := newMidnightWorld(v)
	v.mustUpload(w.u.report(w.um...))
	v.flushAll()
	// The last day on which yesterday is in the window; then one more.
	v.clock.Advance(time.Duration(v.pol.RetentionDays-2) * 24 * time.Hour)
	if err := v.e.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := v.e.oneSided.Len(); m != enid.RollingPeriod {
		t.Fatalf("Expire within the window left %d identifiers, want %d", m, enid.RollingPeriod)
	}
	v.clock.Advance(24 * time.Hour)
	if err := v.e.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 1 || m != enid.RollingPeriod/2 {
			t.Fatalf("after expiry the indexes hold %d sightings and %d identifiers, want the kept day's 1 and %d", n, m, enid.RollingPeriod/2)
		}
		r := v.check(w.hearer.report(w.heard...))
		if d := dayOf(t, r, w.yesterday.Add(24*time.Hour)); d.Minutes != 20 || !d.OneSided {
			t.Errorf("the hearer on the kept day: %+v; want its 20 minutes", d)
		}
		v.restart()
	}
}
