package population

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/conftrace/conftrace/gps"
)

// upload has the health authority upload, at 23:00 of day d, the traces
// of the people whose positive result it signed today and who consent.
func (g *gpsWorld) upload(ctx context.Context, d int) error {
	w := g.w
	now, err := w.clock.advance(ctx, d, gpsUploadMinute)
	if err != nil {
		return err
	}
	first := w.clock.uploadFirst(now)
	for i := range w.people {
		p := &w.people[i]
		for _, t := range p.lab.pending {
			if !t.submitted || t.resultDay != d || !t.positive || g.uploaded[i] || g.rng.Float64() >= w.cfg.Consent {
				continue
			}
			// From two days before symptom onset, or the test without
			// symptoms, to the upload.
			from := t.day - 2
			if p.disease.symptomatic && p.disease.onset <= t.day {
				from = p.disease.onset - 2
			}
			if err := g.submit(ctx, d, i, g.patientTrace(i, max(from, first), d), now); err != nil {
				return err
			}
		}
	}
	return nil
}

// patientTrace returns person i's trace of days first to d, one fix a
// minute up to the upload, at most as many fixes as the policy allows
// (the latest).
func (g *gpsWorld) patientTrace(i, first, d int) gps.Trace {
	var tr gps.Trace
	for k := first; k <= d; k++ {
		last := 24*60 - 1
		if k == d {
			last = gpsUploadMinute
		}
		tr = g.appendDay(tr, i, k, 1, last)
	}
	if n := g.w.pol.GPS.MaxTracePoints; len(tr) > n {
		tr = tr[len(tr)-n:]
	}
	return tr
}

// submit has the authority sign patient i's trace tr at now and upload it,
// and keeps its fixes for the truth.
func (g *gpsWorld) submit(ctx context.Context, d, i int, tr gps.Trace, now time.Time) error {
	w := g.w
	signed, err := w.cfg.Authority.SignTrace(tr, now)
	if err != nil {
		return fmt.Errorf("population: day %d: signing a trace: %w", d, err)
	}
	if _, err := w.backend.SubmitTrace(ctx, signed); err != nil {
		return fmt.Errorf("population: day %d: uploading a trace: %w", d, err)
	}
	w.sum.Requests++
	g.uploaded[i] = true
	g.sum.GPSUploads++
	g.sum.GPSUploadedPoints += len(tr)
	for _, q := range tr {
		k := w.clock.dayOf(time.Unix(q.Time, 0))
		g.patientDays[k] = append(g.patientDays[k], q)
	}
	return nil
}

// gpsAnswer is one device's check: what the backend said and what the
// brute force says.
type gpsAnswer struct {
	points    int
	got, want bool
	differ    bool // in anything the answer carries
}

// check has the app users whose turn it is check their traces at 23:40 of
// day d, and compares every answer with the brute force.
func (g *gpsWorld) check(ctx context.Context, d int) error {
	w := g.w
	checkAt, err := w.clock.advance(ctx, d, gpsCheckMinute)
	if err != nil {
		return err
	}
	first := w.clock.firstDay(checkAt)
	for k := range g.patientDays {
		if k < first {
			delete(g.patientDays, k) // expired on the backend too
		}
	}
	truth := newTruth(g.params, g.patientDays, first, g.city.lat)
	var users []int
	for i, p := range w.people {
		if p.app && !g.uploaded[i] && (d+i)%g.every == 0 {
			users = append(users, i)
		}
	}
	answers := make([]gpsAnswer, len(users))
	err = w.checker.each(ctx, len(users), checkAt, func(ctx context.Context, j int, now time.Time) error {
		a, err := g.checkDevice(ctx, users[j], d, now, truth)
		answers[j] = a
		return err
	})
	if err != nil {
		return err
	}
	for j, i := range users {
		g.record(i, answers[j])
	}
	return nil
}

// checkDevice has device i check its trace of the retention window at
// now, on day d, and returns the answer beside the truth's.
//
// A live backend expires old days on a timer of its own, so when its
// window moves during a run, the simulator cannot know whether the fixes
// of the day that left are still there. Live devices therefore leave out
// their fixes within the time tolerance of the window's start: no fix
// from before the window can then match theirs, present or not.
func (g *gpsWorld) checkDevice(ctx context.Context, i, d int, now time.Time, truth *truth) (gpsAnswer, error) {
	w := g.w
	var tr gps.Trace
	for k := w.clock.firstDay(now); k <= d; k++ {
		last := 24*60 - 1
		if k == d {
			last = gpsCheckMinute
		}
		tr = g.appendDay(tr, i, k, deviceFixMinutes, last)
	}
	if w.clock.live {
		edge := w.pol.WindowStart(now).Unix() + g.params.ToleranceSeconds()
		tr = slices.DeleteFunc(tr, func(p gps.Point) bool { return p.Time <= edge })
	}
	resp, err := w.backend.CheckTrace(ctx, tr)
	if err != nil {
		return gpsAnswer{}, fmt.Errorf("population: day %d: checking a GPS trace: %w", d, err)
	}
	eps := truth.episodes(tr)
	return gpsAnswer{
		points: len(tr),
		got:    resp.Exposed,
		want:   gps.Exposed(eps, g.params),
		differ: !sameTraceAnswer(resp, eps, g.params, w.pol.Detailed()),
	}, nil
}

// record counts device i's check, answered a.
func (g *gpsWorld) record(i int, a gpsAnswer) {
	s := g.sum
	s.GPSChecks++
	g.w.sum.Requests++
	s.GPSCheckedPoints += a.points
	switch {
	case a.want && !a.got:
		s.GPSMissed++
	case a.got && !a.want:
		s.GPSFalse++
	}
	if a.differ {
		s.GPSMismatchedAnswers++
	}
	if a.got && !g.notified[i] {
		g.notified[i] = true
		s.GPSNotified++
	}
	if a.want && !g.should[i] {
		g.should[i] = true
		s.GPSShouldBeNotified++
	}
}

// finish sets the GPS exactness after the last day.
func (g *gpsWorld) finish() {
	s := g.sum
	s.GPSProtocolExact = s.GPSMissed == 0 && s.GPSFalse == 0 && s.GPSMismatchedAnswers == 0
}
