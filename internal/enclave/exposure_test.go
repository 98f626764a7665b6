package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// dayOf returns the entry of r for the day of t, failing if there is none.
func dayOf(t *testing.T, r api.ExposureResponse, at time.Time) api.ExposureDay {
	t.Helper()
	date := at.UTC().Format(api.DateLayout)
	for _, d := range r.Days {
		if d.Date == date {
			return d
		}
	}
	t.Fatalf("the answer has no entry for %s: %+v", date, r.Days)
	return api.ExposureDay{}
}

// wantQuiet fails unless every day of r but those in except shows no
// match.
func wantQuiet(t *testing.T, r api.ExposureResponse, except ...string) {
	t.Helper()
	for _, d := range r.Days {
		if slices.Contains(except, d.Date) {
			continue
		}
		if d != (api.ExposureDay{Date: d.Date, MinAttenuation: 255}) {
			t.Errorf("day %s shows a match: %+v", d.Date, d)
		}
	}
}

// TestExposureReciprocal: a device is exposed only by an upload that
// holds a sighting of its own identifier in the encounter in which it
// sighted the uploader's. Hearing an infected device, sending its report,
// or sending the contact's sightings under other keys is not enough.
func TestExposureReciprocal(t *testing.T) {
	v := newEnv(t, detailed)
	at := v.now().Add(-26 * time.Hour)
	inf, contact, stranger := newDevice(), newDevice(), newDevice()
	i1, c1 := meet(inf, contact, at, 10, 40)
	i2, c2 := meet(inf, contact, at.Add(20*time.Minute), 10, 40)
	v.mustUpload(inf.report(i1, i2))

	if r := v.check(contact.report(c1, c2)); !r.Exposed || dayOf(t, r, at).Minutes != 20 || !dayOf(t, r, at).Reciprocal || dayOf(t, r, at).OneSided {
		t.Errorf("the contact holding the mirrors: %+v; want exposed with 20 reciprocal minutes", r)
	}
	overheard := func(s contactlog.Sighting) contactlog.Sighting {
		return stranger.hears(inf, s.Interval, s.Interval, s.Minutes, s.Attenuation)
	}
	withHeard := func(s contactlog.Sighting, heard enid.RPI) contactlog.Sighting {
		s.Heard = heard
		return s
	}
	heardInf := []contactlog.Sighting{overheard(c1), overheard(c2)}
	for _, tc := range []struct {
		name string
		r    contactlog.Report
	}{
		{"heard the infected device, was not heard", stranger.report(heardInf...)},
		{"the uploaded report itself", inf.report(i1, i2)},
		{"the contact's sightings under another device's keys", stranger.report(c1, c2)},
		{"own keys right, heard RPI wrong", contact.report(withHeard(c1, newRPI()), withHeard(c2, newRPI()))},
		{"RPIs crossed between encounters", contact.report(withHeard(c1, c2.Heard), withHeard(c2, c1.Heard))},
		{"the contact's keys, no sighting", contact.report()},
		{"nothing", contactlog.Report{}},
	} {
		r := v.check(tc.r)
		if r.Exposed {
			t.Errorf("%s: exposed", tc.name)
		}
		wantQuiet(t, r)
	}
}

// TestExposureIntervalTolerance: the two sides' intervals may differ by
// the policy's tolerance (clock skew), not more. A device whose clock runs
// ahead broadcasts, and logs, the identifier of its own interval.
func TestExposureIntervalTolerance(t *testing.T) {
	for _, tolerance := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(tolerance), func(t *testing.T) {
			v := newEnv(t, detailed, func(p *policy.Policy) { p.Risk.IntervalTolerance = tolerance })
			at := v.now().Add(-26 * time.Hour)
			j := enid.IntervalOf(at)
			inf := newDevice()
			var ups []contactlog.Sighting
			// skewed returns the report of a contact whose clock was skew
			// intervals ahead of the infected device's.
			skewed := func(skew int) contactlog.Report {
				c := newDevice()
				jc := enid.Interval(int(j) + skew)
				ups = append(ups, inf.hears(c, j, jc, 10, 40))
				return c.report(c.hears(inf, jc, j, 10, 40))
			}
			within := []contactlog.Report{skewed(-tolerance), skewed(tolerance)}
			beyond := []contactlog.Report{skewed(-tolerance - 1), skewed(tolerance + 1)}
			v.mustUpload(inf.report(ups...))
			for i, c := range within {
				if r := v.check(c); dayOf(t, r, at).Minutes != 10 {
					t.Errorf("skew of %d intervals within a tolerance of %d: no match", []int{-tolerance, tolerance}[i], tolerance)
				}
			}
			for i, c := range beyond {
				if r := v.check(c); dayOf(t, r, at).Minutes != 0 {
					t.Errorf("skew of %d intervals beyond a tolerance of %d: matched", []int{-tolerance - 1, tolerance + 1}[i], tolerance)
				}
			}
		})
	}
}

// TestExposureScoring: each day's score is its matched minutes weighted by
// the policy's attenuation buckets, and a day is an exposure from the
// policy's threshold on, per day.
func TestExposureScoring(t *testing.T) {
	type side struct {
		infected, contact uint8 // minutes each side logged
		att               uint8 // attenuation the checking device measured
	}
	close10 := side{10, 10, 50}
	for _, tc := range []struct {
		name       string
		encounters []side
		want       api.ExposureDay // without the date
	}{
		{"one close encounter, under the threshold", []side{close10},
			api.ExposureDay{Minutes: 10, WeightedMinutes: 1000, MinAttenuation: 50}},
		{"two close encounters add up", []side{close10, close10},
			api.ExposureDay{Minutes: 20, WeightedMinutes: 2000, MinAttenuation: 50, Exposed: true}},
		{"exactly the threshold", []side{close10, {10, 10, 70}},
			api.ExposureDay{Minutes: 20, WeightedMinutes: 1500, MinAttenuation: 50, Exposed: true}},
		{"a minute under the threshold", []side{close10, {9, 9, 70}},
			api.ExposureDay{Minutes: 19, WeightedMinutes: 1450, MinAttenuation: 50}},
		{"63 dB is near: full weight", []side{{10, 10, 63}, {5, 5, 63}},
			api.ExposureDay{Minutes: 15, WeightedMinutes: 1500, MinAttenuation: 63, Exposed: true}},
		{"64 dB is medium: half weight", []side{{10, 10, 64}, {5, 5, 64}},
			api.ExposureDay{Minutes: 15, WeightedMinutes: 750, MinAttenuation: 64}},
		{"73 dB is medium", []side{{10, 10, 73}, {10, 10, 73}, {10, 10, 73}},
			api.ExposureDay{Minutes: 30, WeightedMinutes: 1500, MinAttenuation: 73, Exposed: true}},
		{"74 dB and beyond count nothing", []side{{10, 10, 74}, {10, 10, 90}, {10, 10, 255}, {10, 10, 74}},
			api.ExposureDay{Minutes: 40, WeightedMinutes: 0, MinAttenuation: 74}},
		{"the infected side logged less", []side{{4, 10, 50}, {4, 10, 50}, {4, 10, 50}},
			api.ExposureDay{Minutes: 12, WeightedMinutes: 1200, MinAttenuation: 50}},
		{"the checking side logged less", []side{{10, 4, 50}, {10, 4, 50}, {10, 4, 50}},
			api.ExposureDay{Minutes: 12, WeightedMinutes: 1200, MinAttenuation: 50}},
		{"the closest attenuation is reported", []side{{10, 10, 70}, {10, 10, 30}, {10, 10, 60}},
			api.ExposureDay{Minutes: 30, WeightedMinutes: 2500, MinAttenuation: 30, Exposed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, detailed)
			at := v.now().Add(-50 * time.Hour)
			inf, contact := newDevice(), newDevice()
			var ups, checks []contactlog.Sighting
			for i, s := range tc.encounters {
				si, sc := meet(inf, contact, at.Add(time.Duration(i)*20*time.Minute), s.infected, 60)
				sc.Minutes, sc.Attenuation = s.contact, s.att
				ups, checks = append(ups, si), append(checks, sc)
			}
			v.mustUpload(inf.report(ups...))
			r := v.check(contact.report(checks...))
			want := tc.want
			want.Date = at.Format(api.DateLayout)
			want.Reciprocal = true
			if got := dayOf(t, r, at); got != want {
				t.Errorf("day: %+v, want %+v", got, want)
			}
			if r.Exposed != want.Exposed {
				t.Errorf("exposed = %v, want %v", r.Exposed, want.Exposed)
			}
			wantQuiet(t, r, want.Date)
		})
	}
}

// TestExposurePerDay: the threshold applies to each day alone; minutes of
// two days do not add up.
func TestExposurePerDay(t *testing.T) {
	v := newEnv(t, detailed)
	d1, d2 := v.now().Add(-24*time.Hour), v.now().Add(-48*time.Hour)
	inf, contact := newDevice(), newDevice()
	i1, c1 := meet(inf, contact, d1, 10, 50)
	i2, c2 := meet(inf, contact, d2, 10, 50)
	v.mustUpload(inf.report(i1, i2))
	r := v.check(contact.report(c1, c2))
	if r.Exposed || dayOf(t, r, d1).Minutes != 10 || dayOf(t, r, d2).Minutes != 10 {
		t.Fatalf("10 minutes on each of two days: %+v; want two unexposed days of 10 minutes", r)
	}
}

// TestExposurePolicy: the score follows the attested policy, not
// constants: its threshold and its weights.
func TestExposurePolicy(t *testing.T) {
	v := newEnv(t, detailed, func(p *policy.Policy) {
		p.Risk.AttenuationThresholds = []int{40}
		p.Risk.WeightsPercent = []int{300, 10}
		p.Risk.MinimumWeightedMinutes = 5
	})
	at := v.now().Add(-3 * time.Hour)
	inf, near, far := newDevice(), newDevice(), newDevice()
	iNear, cNear := meet(inf, near, at, 2, 40)
	iFar, cFar := meet(inf, far, at, 10, 41)
	v.mustUpload(inf.report(iNear, iFar))
	if r := v.check(near.report(cNear)); !r.Exposed || dayOf(t, r, at).WeightedMinutes != 600 {
		t.Errorf("2 minutes at 40 dB, weight 300%%, threshold 5: %+v; want 600 and exposed", dayOf(t, r, at))
	}
	if r := v.check(far.report(cFar)); r.Exposed || dayOf(t, r, at).WeightedMinutes != 100 {
		t.Errorf("10 minutes at 41 dB, weight 10%%: %+v; want 100 and not exposed", dayOf(t, r, at))
	}
}

// TestExposureWindow: the answer lists every day of the retention window,
// oldest first, whether or not there is a match; sightings outside the
// window never match, even before Expire has dropped their day, and a
// check that still holds them is answered, not refused.
func TestExposureWindow(t *testing.T) {
	for _, days := range []int{1, 3, 14} {
		t.Run(fmt.Sprint(days), func(t *testing.T) {
			v := newEnv(t, detailed, func(p *policy.Policy) { p.RetentionDays = days })
			_, stranger := encounter(v.now(), 5, 50)
			for _, r := range []api.ExposureResponse{v.check(contactlog.Report{}), v.check(stranger)} {
				if len(r.Days) != days {
					t.Fatalf("%d days in the answer, want the policy's %d", len(r.Days), days)
				}
				for i, d := range r.Days {
					if want := v.pol.WindowStart(v.now()).AddDate(0, 0, i).Format(api.DateLayout); d.Date != want {
						t.Errorf("day %d is %s, want %s", i, d.Date, want)
					}
				}
			}
		})
	}

	v := newEnv(t, detailed)
	first := v.pol.WindowStart(v.now())
	inf, contact := encounter(first.Add(10*time.Minute), 10, 50)
	v.mustUpload(inf)
	if r := v.check(contact); dayOf(t, r, first).Minutes != 10 || r.Days[0].Minutes != 10 {
		t.Fatalf("match on the window's first day: %+v", r.Days[0])
	}
	v.clock.Advance(24 * time.Hour) // the day leaves the window; Expire has not run
	if r := v.check(contact); r.Days[0].Date == first.Format(api.DateLayout) {
		t.Fatalf("the window did not move with the clock: %+v", r.Days[0])
	} else {
		wantQuiet(t, r)
	}
}

// heavyAnswers is a policy edit under which a check can be answered with
// the largest figures: one day, few sightings, each as long and as heavy
// as the policy allows.
func heavyAnswers(p *policy.Policy) {
	p.RetentionDays = 1
	p.Limits.MaxCheckSightings = 6
	p.Limits.MaxUploadSightings = 6
	p.Limits.MaxSightingMinutes = 60
	p.Risk.WeightsPercent = []int{1000, 1000, 1000, 1000}
}

// TestExposureAnswerSize: an exposed and an unexposed device get answers
// of the same shape, and no answer exceeds the bounds the HTTP layer pads
// to, even the heaviest the policy allows, coarse or detailed.
func TestExposureAnswerSize(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		t.Run(answers, func(t *testing.T) {
			v := newEnv(t, heavyAnswers, func(p *policy.Policy) { p.Answers = answers })
			at := v.now().Add(-time.Hour)
			inf, contact := newDevice(), newDevice()
			var ups, checks []contactlog.Sighting
			for i := range 6 {
				// 255 dB: the longest attenuation to write, weighed in full.
				si, sc := meet(inf, contact, at.Add(-time.Duration(i)*10*time.Minute), 60, 255)
				ups, checks = append(ups, si), append(checks, sc)
			}
			v.mustUpload(inf.report(ups...))
			exposed, quiet := v.check(contact.report(checks...)), v.check(contactlog.Report{})
			if !exposed.Exposed || quiet.Exposed {
				t.Fatalf("exposed %v, quiet %v", exposed.Exposed, quiet.Exposed)
			}
			if want := map[bool]int{false: 0, true: 1}[v.pol.Detailed()]; len(exposed.Days) != want || len(quiet.Days) != want {
				t.Fatalf("an exposed answer lists %d days, an unexposed one %d; want %d", len(exposed.Days), len(quiet.Days), want)
			}
			for i := range exposed.Days {
				if exposed.Days[i].Date != quiet.Days[i].Date {
					t.Errorf("day %d: %s exposed, %s not", i, exposed.Days[i].Date, quiet.Days[i].Date)
				}
			}
			for _, r := range []api.ExposureResponse{exposed, quiet} {
				b, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				if bound := min(v.e.ExposureResponseBound(), v.e.AnswerBound()); len(b)+64 > bound {
					t.Errorf("answer of %d bytes leaves no room for the framing in the bound %d", len(b), bound)
				}
			}
		})
	}
}

// TestCoarseAnswers: by default an answer says only whether the device
// was exposed, its most recent exposed day, and the rules that matched on
// exposed days. A match below the threshold shows nowhere: not as a rule,
// not as the last day, and alone it is answered as no match at all.
// Detailed answers say the same and add every day's figures.
func TestCoarseAnswers(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		t.Run(answers, func(t *testing.T) {
			v := newEnv(t, bothRules, func(p *policy.Policy) { p.Answers = answers })
			d3, d1, d0 := v.now().Add(-74*time.Hour), v.now().Add(-26*time.Hour), v.now().Add(-2*time.Hour)
			date := func(at time.Time) string { return at.UTC().Format(api.DateLayout) }
			inf, a, b := newDevice(), newDevice(), newDevice()
			// A: heard inf for 20 minutes on d3 (one-sided), met it for
			// 20 on d1 (reciprocal); both are exposures.
			j3 := enid.IntervalOf(d3)
			aHeard := []contactlog.Sighting{a.hears(inf, j3, j3, 10, 50), a.hears(inf, j3+1, j3+1, 10, 50)}
			infA, aMet := metAt(inf, a, d1, 2)
			// B: heard inf for 20 minutes on d1 (one-sided, an exposure),
			// met it for 10 on d0 (reciprocal, below the threshold).
			j1 := enid.IntervalOf(d1) + 6
			bHeard := []contactlog.Sighting{b.hears(inf, j1, j1, 10, 50), b.hears(inf, j1+1, j1+1, 10, 50)}
			infB, bMet := meet(inf, b, d0, 10, 50)
			v.mustUpload(inf.report(append(infA, infB)...))

			for _, tc := range []struct {
				name string
				r    contactlog.Report
				want api.ExposureResponse // without Days
			}{
				{"A", a.report(append(aHeard, aMet...)...), api.ExposureResponse{Exposed: true, LastExposure: date(d1), Reciprocal: true, OneSided: true}},
				{"B", b.report(append(bHeard, bMet)...), api.ExposureResponse{Exposed: true, LastExposure: date(d1), OneSided: true}},
				{"B's match below the threshold alone", b.report(bMet), api.ExposureResponse{}},
			} {
				got := v.check(tc.r)
				days := got.Days
				got.Days = nil
				if !equalExposure(got, tc.want) {
					t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
				}
				if want := map[bool]int{false: 0, true: v.pol.RetentionDays}[v.pol.Detailed()]; len(days) != want {
					t.Errorf("%s: %d days in the answer, want %d", tc.name, len(days), want)
				}
			}
			below, none := v.check(b.report(bMet)), v.check(newDevice().report())
			if v.pol.Detailed() {
				if d := dayOf(t, below, d0); d.Minutes != 10 || !d.Reciprocal || d.Exposed {
					t.Errorf("a detailed answer's day below the threshold: %+v", d)
				}
				return
			}
			bb, _ := json.Marshal(below)
			bn, _ := json.Marshal(none)
			if string(bb) != string(bn) {
				t.Errorf("a match below the threshold shows: %s, with no match: %s", bb, bn)
			}
		})
	}
}

// TestCheckExposureRefusals: malformed, oversized and future reports are
// refused, with the code each deserves; keys and sightings older than the
// window are not, since they cannot match (see reportRefusals).
func TestCheckExposureRefusals(t *testing.T) {
	v := newEnv(t, detailed, bothRules, refusalLimits)
	inf, contact := newDevice(), newDevice()
	si, sc := meet(inf, contact, v.now().Add(-time.Hour), 5, 50)
	v.mustUpload(inf.report(si))
	before := v.snapshot()
	v.logs.Reset()
	for _, tc := range reportRefusals(t, v) {
		_, err := v.e.CheckExposure(context.Background(), api.ExposureRequest{Report: tc.body})
		if tc.check == "" {
			if err != nil {
				t.Errorf("%s: a check refused: %v", tc.name, err)
			}
			continue
		}
		wantCode(t, tc.name, err, tc.check)
	}
	if !sameRecords(before, v.snapshot()) || v.logs.String() != "" {
		t.Error("refused checks wrote to the store or logged")
	}
	// At the policy's limits, a check is answered.
	full := make([]contactlog.Sighting, v.pol.Limits.MaxCheckSightings)
	for i := range full {
		full[i] = sc
	}
	if r := v.check(contact.report(full...)); dayOf(t, r, sc.Interval.Time()).Minutes != 5 || len(r.Days) != v.pol.RetentionDays {
		t.Fatalf("a check at the limit: %+v", r)
	}
}

// TestCheckExposureLeavesNoTrace: a check writes nothing to the store,
// logs nothing, and wipes the report it was sent.
func TestCheckExposureLeavesNoTrace(t *testing.T) {
	v := newEnv(t)
	inf, contact := newDevice(), newDevice()
	i1, c1 := meet(inf, contact, v.now().Add(-time.Hour), 10, 50)
	i2, c2 := meet(inf, contact, v.now().Add(-2*time.Hour), 10, 50)
	v.mustUpload(inf.report(i1, i2))
	before := v.snapshot()
	v.logs.Reset()
	req := api.ExposureRequest{Report: encode(t, contact.report(c1, c2))}
	r, err := v.e.CheckExposure(context.Background(), req)
	if err != nil || !r.Exposed {
		t.Fatalf("check: %+v, %v", r, err)
	}
	if !bytes.Equal(req.Report, make([]byte, len(req.Report))) {
		t.Error("the check's report was left in the request")
	}
	if !sameRecords(before, v.snapshot()) {
		t.Error("a check wrote to the store")
	}
	if logs := v.logs.String(); logs != "" {
		t.Errorf("a check logged:\n%s", logs)
	}
}

// TestExposureWindowUploadedSide: an upload's sightings and keys of a day
// that has left the window match nothing, even within the tolerance of a
// sighting still in the window, whether or not Expire has dropped their
// day yet; so answers do not depend on when Expire last ran (or on a
// restart, which runs it).
func TestExposureWindowUploadedSide(t *testing.T) {
	v := newEnv(t, detailed, bothRules)
	first := enid.IntervalOf(v.pol.WindowStart(v.now()))
	inf, contact, hearer := newDevice(), newDevice(), newDevice()
	// The first window day's last interval by the uploader's clock, the
	// next day's first by the others'.
	edge := first + enid.RollingPeriod - 1
	up := inf.hears(contact, edge, edge+1, 10, 50)
	c := contact.report(contact.hears(inf, edge+1, edge, 10, 50))
	h := hearer.report(hearer.hears(inf, edge+1, edge, 10, 50))
	v.mustUpload(inf.report(up))
	for name, r := range map[string]contactlog.Report{"reciprocal": c, "one-sided": h} {
		if dayOf(t, v.check(r), (edge+1).Time()).Minutes != 10 {
			t.Fatalf("%s: no match across midnight within the window", name)
		}
	}
	v.clock.Advance(24 * time.Hour) // the uploader's day leaves the window
	for _, expire := range []bool{false, true} {
		if expire {
			if err := v.e.Expire(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		for name, r := range map[string]contactlog.Report{"reciprocal": c, "one-sided": h} {
			if got := v.check(r); got.Exposed || dayOf(t, got, (edge+1).Time()).Minutes != 0 {
				t.Errorf("%s, Expire run %v: an uploaded day out of the window matches: %+v", name, expire, dayOf(t, got, (edge+1).Time()))
			}
		}
	}
}
