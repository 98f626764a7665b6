package enclave

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// walk returns a trace of n fixes, one a minute from start, moving east
// from (lat, lon) by step degrees a fix, at the resolution the wire keeps.
func walk(start time.Time, n int, lat, lon, step float64) gps.Trace {
	tr := make(gps.Trace, n)
	for i := range tr {
		tr[i] = gps.Point{Time: start.Add(time.Duration(i) * time.Minute).Unix(), Lat: round7(lat), Lon: round7(lon + float64(i)*step)}
	}
	return tr
}

func round7(x float64) float64 { return math.Round(x*1e7) / 1e7 }

// metersNorth is the change of latitude that moves m metres north.
func metersNorth(m float64) float64 { return m / (gps.EarthRadius * math.Pi / 180) }

func (v *env) signTrace(tr gps.Trace) api.SignedTrace {
	v.t.Helper()
	s, err := v.lab.SignTrace(tr, v.now())
	if err != nil {
		v.t.Fatal(err)
	}
	return s
}

func (v *env) submitTrace(tr gps.Trace) {
	v.t.Helper()
	if r, err := v.e.SubmitTrace(context.Background(), v.signTrace(tr)); err != nil || r.Points != len(tr) {
		v.t.Fatalf("SubmitTrace: %+v, %v", r, err)
	}
}

func (v *env) checkTrace(tr gps.Trace) api.TraceCheckResponse {
	v.t.Helper()
	wire, err := tr.MarshalBinary()
	if err != nil {
		v.t.Fatal(err)
	}
	r, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: wire})
	if err != nil {
		v.t.Fatalf("CheckTrace: %v", err)
	}
	return r
}

// wantBruteForce fails unless the enclave's answer to device is what the
// reference rule gives against the infected traces, as precisely as the
// policy answers: whether and on which day most recently the device was
// exposed, and, in detailed answers only, the episodes.
func (v *env) wantBruteForce(name string, device gps.Trace, infected []gps.Trace) {
	v.t.Helper()
	params := v.pol.GPS.Params()
	want := gps.BruteForce(device, infected, params)
	got := v.checkTrace(device)
	exposed := gps.Exposed(want, params)
	if got.Exposed != exposed {
		v.t.Errorf("%s: exposed = %v, the reference says %v", name, got.Exposed, exposed)
	}
	last := ""
	if ep, ok := gps.LastExposure(want, params); ok {
		last = time.Unix(ep.Start, 0).UTC().Format(api.DateLayout)
	}
	if got.LastExposure != last || (last != "") != exposed {
		v.t.Errorf("%s: last exposure %q, the reference's %q (exposed %v)", name, got.LastExposure, last, exposed)
	}
	if !v.pol.Detailed() {
		if got.Episodes != nil || got.Truncated {
			v.t.Errorf("%s: a coarse answer lists episodes: %+v", name, got)
		}
		return
	}
	if got.Truncated != (len(want) > api.MaxEpisodes) {
		v.t.Errorf("%s: truncated = %v with %d episodes", name, got.Truncated, len(want))
	}
	if len(got.Episodes) != min(len(want), api.MaxEpisodes) {
		v.t.Errorf("%s: %d episodes, the reference has %d", name, len(got.Episodes), len(want))
		return
	}
	for i, g := range got.Episodes {
		w := want[i]
		if g.Start != w.Start || g.End != w.End || g.ClosestMeters != math.Round(w.Closest*10)/10 || g.Minutes != math.Round(w.Minutes*10)/10 {
			v.t.Errorf("%s: episode %d is %+v, the reference's %+v", name, i, g, w)
		}
	}
}

// gpsWorld is three patients on three days and phones near and far from
// them in space and time.
type gpsWorld struct {
	patients []gps.Trace
	phones   map[string]gps.Trace
}

func newGPSWorld(now time.Time) gpsWorld {
	w := gpsWorld{phones: map[string]gps.Trace{}}
	base := now.UTC().Truncate(24 * time.Hour)
	for i := range 3 {
		startAt := base.Add(time.Duration(i-3)*24*time.Hour + 10*time.Hour)
		lat := 46.5 + 0.1*float64(i)
		w.patients = append(w.patients, walk(startAt, 60, lat, 6.5, 0.00001))
	}
	p := w.patients[0]
	at := time.Unix(p[0].Time, 0)
	lat, lon := p[0].Lat, p[0].Lon
	w.phones["4 m north, alongside for 30 minutes"] = walk(at.Add(10*time.Minute), 30, lat+metersNorth(4), lon+0.0001, 0.00001)
	w.phones["9.9 m north"] = walk(at.Add(10*time.Minute), 30, lat+metersNorth(9.9), lon+0.0001, 0.00001)
	w.phones["10.1 m north"] = walk(at.Add(10*time.Minute), 30, lat+metersNorth(10.1), lon+0.0001, 0.00001)
	w.phones["alongside for 10 minutes only"] = walk(at.Add(10*time.Minute), 10, lat+metersNorth(2), lon+0.0001, 0.00001)
	w.phones["same path, 4 minutes late"] = walk(at.Add(4*time.Minute), 40, lat, lon, 0.00001)
	w.phones["same path, 7 minutes late"] = walk(at.Add(7*time.Minute), 40, lat, lon, 0.00001)
	w.phones["same path, a day late"] = walk(at.Add(24*time.Hour), 40, lat, lon, 0.00001)
	w.phones["a fix every 5 minutes"] = walk5(at, 12, lat+metersNorth(3), lon)
	w.phones["in and out, crossing patients 0 and 1"] = append(
		walk(at.Add(20*time.Minute), 20, lat, lon+0.0002, 0.00001),
		walk(time.Unix(w.patients[1][0].Time, 0).Add(-30*time.Minute), 60, w.patients[1][0].Lat+metersNorth(5), w.patients[1][0].Lon-0.0003, 0.00001)...)
	w.phones["another town"] = walk(at, 60, 47.5, 7.5, 0.00001)
	return w
}

// walk5 is walk with a fix every five minutes, standing still.
func walk5(start time.Time, n int, lat, lon float64) gps.Trace {
	tr := make(gps.Trace, n)
	for i := range tr {
		tr[i] = gps.Point{Time: start.Add(time.Duration(i) * 5 * time.Minute).Unix(), Lat: round7(lat), Lon: round7(lon)}
	}
	return tr
}

// TestCheckTraceMatchesBruteForce: the enclave's answers are the reference
// rule's, after uploads, after a restart (the index rebuilt from the sealed
// store) and after a patient's day expires.
func TestCheckTraceMatchesBruteForce(t *testing.T) {
	v := newEnv(t, detailed)
	w := newGPSWorld(v.now())
	for _, p := range w.patients {
		v.submitTrace(p)
	}
	// A shorter trace far away on patient 0's day leaves that day in two
	// generations of the index until it is compacted.
	far := walk(time.Unix(w.patients[0][0].Time, 0), 20, 46.9, 6.9, 0.00001)
	v.submitTrace(far)
	all := append(append([]gps.Trace{}, w.patients...), far)
	exposed := 0
	for name, phone := range w.phones {
		v.wantBruteForce(name, phone, all)
		if gps.Exposed(gps.BruteForce(phone, all, v.pol.GPS.Params()), v.pol.GPS.Params()) {
			exposed++
		}
	}
	if exposed < 3 || exposed > len(w.phones)-3 {
		t.Fatalf("test set-up: %d of %d phones exposed; the traces test little", exposed, len(w.phones))
	}

	if n := v.e.CompactGPS(); n != 1 {
		t.Errorf("CompactGPS rebuilt %d days, want the one with two uploads", n)
	}
	for name, phone := range w.phones {
		v.wantBruteForce("after compaction: "+name, phone, all)
	}
	v.restart()
	for name, phone := range w.phones {
		v.wantBruteForce("after a restart: "+name, phone, all)
	}

	// Patient 0's day (3 days ago) leaves the window; patient 1's stays.
	v.clock.Advance(24 * time.Hour * time.Duration(v.pol.RetentionDays-3))
	if err := v.e.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, phone := range w.phones {
		v.wantBruteForce("after patient 0 expired: "+name, phone, w.patients[1:])
	}
	if rs := v.records(tableTraces); len(rs) != 2 {
		t.Errorf("%d trace records after expiry, want patients 1 and 2's", len(rs))
	}
}

// TestCheckTraceTruncated: past MaxEpisodes episodes the answer lists the
// first ones, says it is truncated, and still fits the padding bound.
func TestCheckTraceTruncated(t *testing.T) {
	v := newEnv(t, detailed)
	const visits = api.MaxEpisodes + 6
	// The patient stands still for the phone's visits; the phone comes
	// for one fix every 22 minutes and waits 1 km away in between, so
	// every visit is an episode of its own.
	startAt := v.now().Add(-30 * time.Hour).Truncate(time.Minute)
	patient := walk(startAt, visits*22, 46.5, 6.5, 0)
	v.submitTrace(patient)
	var phone gps.Trace
	for k := range visits {
		at := startAt.Add(time.Duration(k*22) * time.Minute)
		phone = append(phone,
			gps.Point{Time: at.Unix(), Lat: 46.5, Lon: 6.5},
			gps.Point{Time: at.Add(11 * time.Minute).Unix(), Lat: round7(46.5 + metersNorth(1000)), Lon: 6.5})
	}
	v.wantBruteForce("visits", phone, []gps.Trace{patient})
	r := v.checkTrace(phone)
	if !r.Truncated || len(r.Episodes) != api.MaxEpisodes || !r.Exposed {
		t.Fatalf("%d visits: truncated %v, %d episodes, exposed %v", visits, r.Truncated, len(r.Episodes), r.Exposed)
	}
	quiet := v.checkTrace(walk(startAt, 10, 40, 5, 0))
	for _, resp := range []api.TraceCheckResponse{r, quiet} {
		b, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if bound := min(v.e.TraceResponseBound(), v.e.AnswerBound()); len(b)+64 > bound {
			t.Errorf("answer of %d bytes leaves no room for the framing in the bound %d", len(b), bound)
		}
	}
}

// TestSubmitTraceRefusals: only a fresh trace in the window that an
// authority of the policy signed is stored, once.
func TestSubmitTraceRefusals(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) { p.GPS.MaxTracePoints = 100 })
	ctx := context.Background()
	now := v.now()
	startAt := now.Add(-2 * time.Hour).Truncate(time.Minute)
	good := walk(startAt, 30, 46.5, 6.5, 0.00001)
	stranger, err := authority.GenerateKey("lab-9")
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := stranger.SignTrace(good, now)
	if err != nil {
		t.Fatal(err)
	}
	// custom has the lab sign arbitrary trace bytes, at issued.
	custom := func(wire []byte, issued time.Time) api.SignedTrace {
		s := api.SignedTrace{Authority: v.lab.Name, Trace: wire, IssuedAt: issued.Unix(), Nonce: bytes.Repeat([]byte{1}, 16)}
		s.Signature = ed25519.Sign(v.labPriv, s.SignedBytes())
		return s
	}
	wire := func(tr gps.Trace) []byte {
		b, err := tr.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	altered := v.signTrace(good)
	altered.Trace = flip(altered.Trace)
	tooMany := make(gps.Trace, 101)
	for i := range tooMany {
		tooMany[i] = gps.Point{Time: startAt.Unix() + int64(i), Lat: 46.5, Lon: 6.5}
	}
	for _, tc := range []struct {
		name string
		s    api.SignedTrace
		code string
	}{
		{"authority not in the policy", unknown, api.CodeUnknownAuthority},
		{"altered after signing", altered, api.CodeBadSignature},
		{"signed 8 days ago", custom(wire(good), now.Add(-8*24*time.Hour)), api.CodeExpired},
		{"signed in the future", custom(wire(good), now.Add(time.Hour)), api.CodeFutureDated},
		{"not a trace", custom([]byte{0xff, 1, 2}, now), api.CodeMalformed},
		{"truncated", custom(wire(good)[:20], now), api.CodeMalformed},
		{"trailing bytes", custom(append(wire(good), 0), now), api.CodeMalformed},
		{"empty", custom(wire(gps.Trace{}), now), api.CodeMalformed},
		{"more fixes than the policy allows", v.signTrace(tooMany), api.CodeTooLarge},
		{"in the future", v.signTrace(walk(now.Add(time.Hour), 5, 46.5, 6.5, 0)), api.CodeOutOfWindow},
		{"begins before the window", v.signTrace(walk(v.pol.WindowStart(now).Add(-time.Minute), 5, 46.5, 6.5, 0)), api.CodeOutOfWindow},
	} {
		_, err := v.e.SubmitTrace(ctx, tc.s)
		wantCode(t, tc.name, err, tc.code)
	}
	if rs := v.records(tableTraces); len(rs) != 0 {
		t.Fatalf("refused traces left %d records", len(rs))
	}
	near := walk(startAt, 30, 46.5+metersNorth(2), 6.5, 0.00001)
	if r := v.checkTrace(near); r.Exposed || len(r.Episodes) != 0 {
		t.Fatal("a refused trace matches")
	}

	signed := v.signTrace(good)
	if _, err := v.e.SubmitTrace(ctx, signed); err != nil {
		t.Fatal(err)
	}
	_, err = v.e.SubmitTrace(ctx, signed)
	wantCode(t, "the same statement again", err, api.CodeReplayed)
	v.restart()
	_, err = v.e.SubmitTrace(ctx, signed)
	wantCode(t, "the same statement after a restart", err, api.CodeReplayed)
	if r := v.checkTrace(near); !r.Exposed {
		t.Fatal("the accepted trace does not match")
	}
	// A trace that begins on the window's first day is accepted.
	v.submitTrace(walk(v.pol.WindowStart(now), 5, 40, 5, 0))
}

// TestCheckTraceRefusals: a device trace that is malformed, too long or
// from the future is refused.
func TestCheckTraceRefusals(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) { p.GPS.MaxTracePoints = 10 })
	for _, tc := range []struct {
		name string
		tr   []byte
		code string
	}{
		{"not a trace", []byte{0xff}, api.CodeMalformed},
		{"truncated", mustWire(t, walk(v.now().Add(-time.Hour), 3, 46.5, 6.5, 0))[:8], api.CodeMalformed},
		{"more fixes than the policy allows", mustWire(t, walk(v.now().Add(-time.Hour), 11, 46.5, 6.5, 0)), api.CodeTooLarge},
		{"from the future", mustWire(t, walk(v.now().Add(time.Hour), 3, 46.5, 6.5, 0)), api.CodeOutOfWindow},
	} {
		_, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: tc.tr})
		wantCode(t, tc.name, err, tc.code)
	}
}

func mustWire(t *testing.T, tr gps.Trace) []byte {
	t.Helper()
	b, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckTraceLeavesNoTrace: a device's trace is not stored, not
// logged, and wiped from the request once answered.
func TestCheckTraceLeavesNoTrace(t *testing.T) {
	v := newEnv(t)
	startAt := v.now().Add(-2 * time.Hour).Truncate(time.Minute)
	v.submitTrace(walk(startAt, 30, 46.5, 6.5, 0.00001))
	before := v.snapshot()
	v.logs.Reset()
	req := api.TraceCheckRequest{Trace: mustWire(t, walk(startAt, 30, 46.5+metersNorth(3), 6.5, 0.00001))}
	r, err := v.e.CheckTrace(context.Background(), req)
	if err != nil || !r.Exposed {
		t.Fatalf("check: %+v, %v", r, err)
	}
	if !bytes.Equal(req.Trace, make([]byte, len(req.Trace))) {
		t.Error("the device's trace was left in the request")
	}
	if !sameRecords(before, v.snapshot()) {
		t.Error("a trace check wrote to the store")
	}
	if logs := v.logs.String(); logs != "" {
		t.Errorf("a trace check logged:\n%s", logs)
	}
}

// TestRestartRefusesTamperedTraces: a trace record the host altered is
// refused and reported when the GPS index is rebuilt; the other patients
// still match.
func TestRestartRefusesTamperedTraces(t *testing.T) {
	v := newEnv(t)
	w := newGPSWorld(v.now())
	for _, p := range w.patients {
		v.submitTrace(p)
	}
	for _, r := range v.records(tableTraces) {
		if r.Day == utcDay(time.Unix(w.patients[0][0].Time, 0)) {
			v.put(store.Record{Table: r.Table, Key: r.Key, Day: r.Day, Value: flip(r.Value)})
		}
	}
	v.logs.Reset()
	v.restart()
	for name, phone := range w.phones {
		v.wantBruteForce("after tampering: "+name, phone, w.patients[1:])
	}
	if logs := v.logs.String(); strings.Count(logs, "stored trace does not open") != 1 || !strings.Contains(logs, "refused_records=1") {
		t.Errorf("the altered trace was not reported once; logs:\n%s", logs)
	}
}

// TestRestartKeepsTracesAfter2038: the start-up rebuild accepts stored
// traces whatever their date; it once took any fix after January 2038 (a
// 32-bit time) for one from the future and dropped every trace at restart.
func TestRestartKeepsTracesAfter2038(t *testing.T) {
	v := newEnv(t)
	v.clock.Advance(time.Date(2039, 6, 1, 14, 0, 0, 0, time.UTC).Sub(v.now()))
	startAt := v.now().Add(-2 * time.Hour).Truncate(time.Minute)
	patient := walk(startAt, 30, 46.5, 6.5, 0.00001)
	v.submitTrace(patient)
	phone := walk(startAt, 30, 46.5+metersNorth(3), 6.5, 0.00001)
	v.wantBruteForce("before the restart", phone, []gps.Trace{patient})
	v.restart()
	v.wantBruteForce("after the restart", phone, []gps.Trace{patient})
	if !v.checkTrace(phone).Exposed {
		t.Fatal("a 2039 trace no longer matches after a restart")
	}
}

// TestCheckTraceCoarse: by default a trace check says only whether the
// device was exposed and the most recent day of an episode that made it
// so: no episodes, and an answer below the threshold is the answer of no
// match at all.
func TestCheckTraceCoarse(t *testing.T) {
	v := newEnv(t)
	w := newGPSWorld(v.now())
	for _, p := range w.patients {
		v.submitTrace(p)
	}
	for name, phone := range w.phones {
		v.wantBruteForce(name, phone, w.patients)
	}
	// Alongside patient 0 for 30 minutes, and patient 1 a day later.
	p0, p1 := w.patients[0], w.patients[1]
	both := append(walk(time.Unix(p0[0].Time, 0), 30, p0[0].Lat+metersNorth(3), p0[0].Lon, 0.00001),
		walk(time.Unix(p1[0].Time, 0), 30, p1[0].Lat+metersNorth(3), p1[0].Lon, 0.00001)...)
	v.wantBruteForce("two days of exposures", both, w.patients)
	if r := v.checkTrace(both); r.LastExposure != time.Unix(p1[0].Time, 0).UTC().Format(api.DateLayout) {
		t.Errorf("exposed on two days: last exposure %q, want patient 1's day", r.LastExposure)
	}
	below, _ := json.Marshal(v.checkTrace(w.phones["alongside for 10 minutes only"]))
	none, _ := json.Marshal(v.checkTrace(w.phones["another town"]))
	if string(below) != string(none) {
		t.Errorf("an episode below the threshold shows: %s, with no match: %s", below, none)
	}
}

// TestTraceSameTimeSlack: two fixes of one second further apart than
// gps.SameTimeSlack are refused, in a device's trace and a patient's, so
// that a trace cannot sweep a neighbourhood at one instant; a receiver's
// noise within the slack is accepted.
func TestTraceSameTimeSlack(t *testing.T) {
	v := newEnv(t)
	at := v.now().Add(-time.Hour).Truncate(time.Minute)
	trace := func(apart float64) gps.Trace {
		return gps.Trace{
			{Time: at.Unix(), Lat: 46.5, Lon: 6.5},
			{Time: at.Unix(), Lat: round7(46.5 + metersNorth(apart)), Lon: 6.5},
			{Time: at.Unix() + 60, Lat: 46.5, Lon: 6.5},
		}
	}
	far, near := trace(gps.SameTimeSlack+5), trace(gps.SameTimeSlack-5)
	_, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: mustWire(t, far)})
	wantCode(t, "a device's fixes of one second beyond the slack", err, api.CodeMalformed)
	_, err = v.e.SubmitTrace(context.Background(), v.signTrace(far))
	wantCode(t, "a patient's fixes of one second beyond the slack", err, api.CodeMalformed)
	if _, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: mustWire(t, near)}); err != nil {
		t.Errorf("a device's fixes of one second within the slack: %v", err)
	}
	v.submitTrace(near)
}
