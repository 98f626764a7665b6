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

// TestExposureReciprocal: a device is exposed only by an upload that holds
// the mirror of one of its tuples; hearing an infected device, or
// replaying the infected device's own tuple, is not enough.
func TestExposureReciprocal(t *testing.T) {
	v := newEnv(t)
	at := v.now().Add(-26 * time.Hour)
	inf, contact := encounter(at, 10, 40)
	inf2, contact2 := encounter(at, 10, 40)
	v.mustUpload(inf, inf2)

	if r := v.check(contact, contact2); !r.Exposed || dayOf(t, r, at).Minutes != 20 {
		t.Errorf("the contact holding the mirrors: %+v; want exposed with 20 minutes", r)
	}
	for _, tc := range []struct {
		name string
		ts   []contactlog.Tuple
	}{
		{"heard the infected device, was not heard", []contactlog.Tuple{{Own: newRPI(), Heard: inf.Own, Interval: inf.Interval, Duration: 10, Attenuation: 40}, {Own: newRPI(), Heard: inf2.Own, Interval: inf2.Interval, Duration: 10, Attenuation: 40}}},
		{"the uploaded tuples themselves", []contactlog.Tuple{inf, inf2}},
		{"own RPI right, heard RPI wrong", []contactlog.Tuple{{Own: contact.Own, Heard: newRPI(), Interval: contact.Interval, Duration: 10, Attenuation: 40}, {Own: contact2.Own, Heard: newRPI(), Interval: contact2.Interval, Duration: 10, Attenuation: 40}}},
		{"RPIs crossed between encounters", []contactlog.Tuple{{Own: contact.Own, Heard: contact2.Heard, Interval: contact.Interval, Duration: 10, Attenuation: 40}, {Own: contact2.Own, Heard: contact.Heard, Interval: contact2.Interval, Duration: 10, Attenuation: 40}}},
		{"nothing", nil},
	} {
		r := v.check(tc.ts...)
		if r.Exposed {
			t.Errorf("%s: exposed", tc.name)
		}
		wantQuiet(t, r)
	}
}

// TestExposureIntervalTolerance: the two sides' intervals may differ by
// the policy's tolerance (clock skew), not more.
func TestExposureIntervalTolerance(t *testing.T) {
	for _, tolerance := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(tolerance), func(t *testing.T) {
			v := newEnv(t, func(p *policy.Policy) { p.Risk.IntervalTolerance = tolerance })
			at := v.now().Add(-26 * time.Hour)
			var ups []contactlog.Tuple
			var within, beyond []contactlog.Tuple
			for _, skew := range []int{-tolerance, tolerance} {
				inf, contact := encounter(at, 10, 40)
				contact.Interval = enid.Interval(int(contact.Interval) + skew)
				ups, within = append(ups, inf), append(within, contact)
			}
			for _, skew := range []int{-tolerance - 1, tolerance + 1} {
				inf, contact := encounter(at, 10, 40)
				contact.Interval = enid.Interval(int(contact.Interval) + skew)
				ups, beyond = append(ups, inf), append(beyond, contact)
			}
			v.mustUpload(ups...)
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
		infected, contact uint16 // minutes each side logged
		att               uint8  // attenuation the checking device measured
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
			v := newEnv(t)
			at := v.now().Add(-50 * time.Hour)
			var ups, checks []contactlog.Tuple
			for i, s := range tc.encounters {
				inf, contact := encounter(at.Add(time.Duration(i)*20*time.Minute), s.infected, 60)
				contact.Duration, contact.Attenuation = s.contact, s.att
				ups, checks = append(ups, inf), append(checks, contact)
			}
			v.mustUpload(ups...)
			r := v.check(checks...)
			want := tc.want
			want.Date = at.Format(api.DateLayout)
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
	v := newEnv(t)
	d1, d2 := v.now().Add(-24*time.Hour), v.now().Add(-48*time.Hour)
	inf1, c1 := encounter(d1, 10, 50)
	inf2, c2 := encounter(d2, 10, 50)
	v.mustUpload(inf1, inf2)
	r := v.check(c1, c2)
	if r.Exposed || dayOf(t, r, d1).Minutes != 10 || dayOf(t, r, d2).Minutes != 10 {
		t.Fatalf("10 minutes on each of two days: %+v; want two unexposed days of 10 minutes", r)
	}
}

// TestExposurePolicy: the score follows the attested policy, not
// constants: its threshold and its weights.
func TestExposurePolicy(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) {
		p.Risk.AttenuationThresholds = []int{40}
		p.Risk.WeightsPercent = []int{300, 10}
		p.Risk.MinimumWeightedMinutes = 5
	})
	at := v.now().Add(-3 * time.Hour)
	near, cNear := encounter(at, 2, 40)
	far, cFar := encounter(at, 10, 41)
	v.mustUpload(near, far)
	if r := v.check(cNear); !r.Exposed || dayOf(t, r, at).WeightedMinutes != 600 {
		t.Errorf("2 minutes at 40 dB, weight 300%%, threshold 5: %+v; want 600 and exposed", dayOf(t, r, at))
	}
	if r := v.check(cFar); r.Exposed || dayOf(t, r, at).WeightedMinutes != 100 {
		t.Errorf("10 minutes at 41 dB, weight 10%%: %+v; want 100 and not exposed", dayOf(t, r, at))
	}
}

// TestExposureWindow: the answer lists every day of the retention window,
// oldest first, whether or not there is a match; tuples outside the window
// never match, even before Expire has dropped their day.
func TestExposureWindow(t *testing.T) {
	for _, days := range []int{1, 3, 14} {
		t.Run(fmt.Sprint(days), func(t *testing.T) {
			v := newEnv(t, func(p *policy.Policy) { p.RetentionDays = days })
			_, stranger := encounter(v.now(), 5, 50)
			for _, r := range []api.ExposureResponse{v.check(), v.check(stranger)} {
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

	v := newEnv(t)
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

// TestExposureAnswerSize: an exposed and an unexposed device get answers
// of the same shape, and no answer exceeds the bound the HTTP layer pads
// to, even the heaviest the policy allows.
func TestExposureAnswerSize(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) {
		p.RetentionDays = 2
		p.Limits.MaxCheckTuples = 6
		p.Limits.MaxUploadTuples = 6
		p.Limits.MaxTupleMinutes = 60
		p.Risk.WeightsPercent = []int{1000, 1000, 1000, 1000}
	})
	at := v.now().Add(-time.Hour)
	var ups, checks []contactlog.Tuple
	for i := range 6 {
		inf, contact := encounter(at.Add(-time.Duration(i)*10*time.Minute), 60, 0)
		ups, checks = append(ups, inf), append(checks, contact)
	}
	v.mustUpload(ups...)
	exposed, quiet := v.check(checks...), v.check()
	if !exposed.Exposed || quiet.Exposed {
		t.Fatalf("exposed %v, quiet %v", exposed.Exposed, quiet.Exposed)
	}
	if len(exposed.Days) != len(quiet.Days) {
		t.Fatalf("an exposed answer lists %d days, an unexposed one %d", len(exposed.Days), len(quiet.Days))
	}
	for i := range exposed.Days {
		if exposed.Days[i].Date != quiet.Days[i].Date {
			t.Errorf("day %d: %s exposed, %s not", i, exposed.Days[i].Date, quiet.Days[i].Date)
		}
	}
	bound := v.e.ExposureResponseBound()
	for _, r := range []api.ExposureResponse{exposed, quiet} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > bound {
			t.Errorf("answer of %d bytes exceeds the bound %d", len(b), bound)
		}
	}
}

// TestCheckExposureRefusals: malformed and oversized checks are refused.
func TestCheckExposureRefusals(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) { p.Limits.MaxCheckTuples = 2 })
	_, c := encounter(v.now(), 5, 50)
	for _, tc := range []struct {
		name  string
		batch []byte
		code  string
	}{
		{"no bytes", nil, api.CodeMalformed},
		{"wrong version", append([]byte{2}, encode(t, []contactlog.Tuple{c})[1:]...), api.CodeMalformed},
		{"truncated", encode(t, []contactlog.Tuple{c})[:30], api.CodeMalformed},
		{"trailing bytes", append(encode(t, []contactlog.Tuple{c}), 1), api.CodeMalformed},
		{"more tuples than the policy allows", encode(t, []contactlog.Tuple{c, c, c}), api.CodeTooLarge},
	} {
		_, err := v.e.CheckExposure(context.Background(), api.ExposureRequest{Tuples: tc.batch})
		wantCode(t, tc.name, err, tc.code)
	}
	if r := v.check(c, c); r.Exposed || len(r.Days) != v.pol.RetentionDays {
		t.Fatalf("a check at the limit: %+v", r)
	}
}

// TestCheckExposureLeavesNoTrace: a check writes nothing to the store,
// logs nothing, and wipes the tuples it was sent.
func TestCheckExposureLeavesNoTrace(t *testing.T) {
	v := newEnv(t)
	inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf)
	before := v.snapshot()
	v.logs.Reset()
	req := api.ExposureRequest{Tuples: encode(t, []contactlog.Tuple{contact, contact})}
	r, err := v.e.CheckExposure(context.Background(), req)
	if err != nil || !r.Exposed {
		t.Fatalf("check: %+v, %v", r, err)
	}
	if !bytes.Equal(req.Tuples, make([]byte, len(req.Tuples))) {
		t.Error("the check's tuples were left in the request")
	}
	if !sameRecords(before, v.snapshot()) {
		t.Error("a check wrote to the store")
	}
	if logs := v.logs.String(); logs != "" {
		t.Errorf("a check logged:\n%s", logs)
	}
}
