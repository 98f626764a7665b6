package population

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// day0 is the first interval of the rules tests' day 0.
var day0 = enid.IntervalOf(DefaultStart())

// iv returns the interval of minute min of day d of the rules tests.
func iv(d, min int) enid.Interval { return day0 + enid.Interval(d*enid.RollingPeriod+min/10) }

// actor is a phone of the rules tests, with a daily key for each of days
// -20 to 5, derived from its name.
type actor struct {
	keys map[int]*enid.Key
}

func newActor(t *testing.T, name string) actor {
	a := actor{keys: map[int]*enid.Key{}}
	for d := -20; d <= 5; d++ {
		h := sha256.Sum256(fmt.Appendf(nil, "rules test %s %d", name, d))
		k, err := enid.NewKey(enid.TEK(h[:16]), iv(d, 0), enid.RollingPeriod)
		if err != nil {
			t.Fatal(err)
		}
		a.keys[d] = k
	}
	return a
}

// dayOf returns the rules tests' day of interval i.
func dayOf(i enid.Interval) int { return int(i-day0+20*enid.RollingPeriod)/enid.RollingPeriod - 20 }

// rpi returns what the actor broadcast in interval i.
func (a actor) rpi(i enid.Interval) enid.RPI { return a.keys[dayOf(i)].RPI(i) }

// dailyKeys returns the actor's keys of days first to last.
func (a actor) dailyKeys(first, last int) []contactlog.DailyKey {
	var ks []contactlog.DailyKey
	for d := first; d <= last; d++ {
		k := a.keys[d]
		ks = append(ks, contactlog.DailyKey{TEK: k.TEK(), Start: k.Start(), Period: uint8(k.Period())})
	}
	return ks
}

// sight returns the actor's record of hearing other's identifier of
// interval heardOf while its own clock said interval at.
func (a actor) sight(other actor, heardOf, at enid.Interval, minutes, att uint8) rec {
	return rec{s: contactlog.Sighting{Heard: other.rpi(heardOf), Interval: at, Minutes: minutes, Attenuation: att}, own: a.rpi(at)}
}

// report returns the report that sends recs with the actor's keys of days
// first to last.
func (a actor) report(recs []rec, first, last int) contactlog.Report {
	r := contactlog.Report{Keys: a.dailyKeys(first, last)}
	for _, x := range recs {
		r.Sightings = append(r.Sightings, x.s)
	}
	return r
}

// outcome is what a rules case must come to, summed over the days of the
// answer: it keeps the cases honest (an oracle and a backend that both
// matched nothing would agree too).
type outcome struct {
	minutes            int
	reciprocal, oneSid bool
}

// verdict is what every answer says, coarse or detailed: whether the
// device was exposed, on which day last (the rules tests' day), and by
// which rules on its exposed days.
type verdict struct {
	exposed              bool
	last                 int
	reciprocal, oneSided bool
}

func verdictOf(t *testing.T, resp api.ExposureResponse) verdict {
	t.Helper()
	v := verdict{exposed: resp.Exposed, last: -100, reciprocal: resp.Reciprocal, oneSided: resp.OneSided}
	if resp.LastExposure != "" {
		day, err := time.Parse(api.DateLayout, resp.LastExposure)
		if err != nil {
			t.Fatalf("last exposure %q: %v", resp.LastExposure, err)
		}
		v.last = int(day.Sub(DefaultStart()) / (24 * time.Hour))
	}
	return v
}

func sumUp(resp api.ExposureResponse) outcome {
	var o outcome
	for _, d := range resp.Days {
		o.minutes += d.Minutes
		o.reciprocal = o.reciprocal || d.Reciprocal
		o.oneSid = o.oneSid || d.OneSided
	}
	return o
}

// rulesWorld is a backend of the rules test with its clock and a client.
type rulesWorld struct {
	b      *localbackend.Backend
	c      *client.Client
	mu     sync.Mutex
	now    time.Time
	signer *ecdsa.PrivateKey
}

func (w *rulesWorld) clock() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.now }

// tick moves the clock on by a second and returns the new time. The
// gateway refuses a request identical to one it answered, date included,
// as a replay, and dates have seconds: checks of the same sightings must
// be a second apart.
func (w *rulesWorld) tick() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = w.now.Add(time.Second)
	return w.now
}

func (w *rulesWorld) set(d, minute int) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = DefaultStart().Add(time.Duration(d)*24*time.Hour + time.Duration(minute)*time.Minute)
	return w.now
}

// startRules starts a backend with policy pol plus a GAEN export key.
func startRules(t *testing.T, pol policy.Policy) *rulesWorld {
	t.Helper()
	w := &rulesWorld{now: DefaultStart()}
	var err error
	if w.signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&w.signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pol.GAENExportKeys = []policy.ExportKey{{Name: "rules-gaen", PublicKey: der}}
	pol.AnswerReleaseMillis = 0 // in-process: nothing to hide, no need to wait
	w.b, err = localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Policy: &pol, Now: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.b.Close() })
	w.c, err = client.New(t.Context(), client.Config{Server: w.b.URL, Expectations: w.b.Expectations(), Now: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// upload has the authority declare a test positive at day d 23:00, and
// the uploader's phone upload r at 23:10 in an exchange that polls the
// result and uploads under it, as a phone whose user consented does. It
// returns when the backend took the upload, and the test's secret.
func (w *rulesWorld) upload(t *testing.T, d int, r contactlog.Report) (time.Time, []byte) {
	t.Helper()
	ctx := t.Context()
	secret := make([]byte, api.TestSecretSize)
	rand.Read(secret)
	now := w.set(d, 23*60)
	sr, err := w.b.Authority.SignResult(api.TestCode(secret), api.Positive, now.Add(-12*time.Hour), time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.c.SubmitResult(ctx, sr); err != nil {
		t.Fatal(err)
	}
	at := w.set(d, 23*60+10)
	resp, err := w.c.Exchange(ctx, client.Daily{Report: r, Secret: secret, Upload: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Upload == nil || resp.UploadError != nil || resp.Result == nil || !resp.Result.UploadPending {
		t.Fatalf("an exchange uploading under a positive result: upload %+v, refusal %v, result %+v", resp.Upload, resp.UploadError, resp.Result)
	}
	return at, secret
}

// durable moves the clock to day d, minute minute, has the backend make
// the journal flushes due by then, and reports whether the phone's poll of
// secret hears that its upload is durable.
func (w *rulesWorld) durable(t *testing.T, d, minute int, secret []byte) bool {
	t.Helper()
	w.set(d, minute)
	if err := w.b.Service.Enclave.FlushDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	pr, err := w.c.PollResult(t.Context(), secret)
	if err != nil {
		t.Fatal(err)
	}
	return pr.Uploaded
}

// importKeys imports an export of keys at day d, minute minute, and
// checks the backend's count against importable's.
func (w *rulesWorld) importKeys(t *testing.T, d, minute int, keys []contactlog.DailyKey) time.Time {
	t.Helper()
	at := w.set(d, minute)
	exp := &gaen.Export{Region: gaenRegion, Start: at.Add(-time.Hour), End: at}
	for _, k := range keys {
		exp.Keys = append(exp.Keys, gaen.Key{TEK: k.TEK, RollingStart: k.Start, RollingPeriod: int(k.Period)})
	}
	zip, err := gaen.Write(exp, gaen.SigningKey{KeyID: gaenKeyID, KeyVersion: gaenKeyVersion, Key: w.signer})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.c.ImportGAEN(t.Context(), zip)
	if err != nil {
		t.Fatal(err)
	}
	took := importable(w.b.Policy, keys, at)
	if resp.Imported != len(took) || resp.Skipped != len(keys)-len(took) {
		t.Fatalf("import: the backend took %d keys and skipped %d; the oracle says %d and %d", resp.Imported, resp.Skipped, len(took), len(keys)-len(took))
	}
	return at
}

// rulesCase is one exposure check of the rules test: the checking phone's
// sightings, and what they must come to by reciprocal matching alone and
// with uploaded keys matched one-sided too.
type rulesCase struct {
	name            string
	recs            []rec
	recipOnly, both outcome
}

// TestRulesMatchEnclave checks the oracle's per-sighting rules against
// the backend's on hand-built cases: the same uploads, imports and checks
// go to a real backend and to the oracle's ledger, whose answers must
// agree in everything they carry, under a reciprocal-only policy and one
// that also matches uploaded keys one-sided, each with coarse answers
// (the default: exposed, last exposed day, rules) and detailed ones (every
// figure of every day). The cases cover the edges the simulation never
// reaches: clock skew at the tolerance and beyond it, repeated sightings,
// a sighting matching both rules, the next day's first interval, checks
// before the upload, exposures on two days and rules of days below the
// threshold, and retention. Coarse answers say nothing of matches below
// the threshold, so there the oracle's full answer must come to each
// case's outcome; detailed ones must come to it themselves.
func TestRulesMatchEnclave(t *testing.T) {
	t.Parallel()
	u, c, g, x := newActor(t, "uploader"), newActor(t, "checker"), newActor(t, "gaen"), newActor(t, "stranger")
	j1, j2, j3, j4, j5 := iv(1, 600), iv(1, 700), iv(1, 800), iv(1, 900), iv(2, 600)
	k, gi, gi2 := iv(1, 1000), iv(1, 1100), iv(2, 1100)
	uploaded := []rec{
		u.sight(c, j1, j1, 7, 60),
		u.sight(c, j2, j2+1, 5, 55), // U's clock one interval ahead
		u.sight(c, j3, j3+2, 6, 55), // two ahead: beyond the tolerance
		u.sight(c, j4, j4, 10, 50),
		u.sight(c, j5, j5, 8, 50),
	}
	// G's export: days 0 to 3 (3 ends after the check, whose window it
	// reaches by clock skew), one too old for the window, one invalid.
	gKeys := append(g.dailyKeys(0, 3), g.dailyKeys(-20, -20)...)
	bad := g.dailyKeys(1, 1)[0]
	bad.Period = 0
	gKeys = append(gKeys, bad)
	none := outcome{}
	cases := []rulesCase{
		{"stranger", []rec{c.sight(x, j1, j1, 9, 50)}, none, none},
		{"reciprocal", []rec{c.sight(u, j1, j1, 9, 50)}, outcome{7, true, false}, outcome{7, true, false}},
		{"checker shorter", []rec{c.sight(u, j1, j1, 3, 50)}, outcome{3, true, false}, outcome{3, true, false}},
		{"skew at tolerance", []rec{c.sight(u, j2+1, j2, 6, 70)}, outcome{5, true, false}, outcome{5, true, false}},
		{"skew beyond tolerance", []rec{c.sight(u, j3+2, j3, 8, 50)}, none, none},
		{"not heard back", []rec{c.sight(u, k, k, 8, 50)}, none, outcome{8, false, true}},
		{"one-sided at tolerance", []rec{c.sight(u, k, k+1, 8, 50)}, none, outcome{8, false, true}},
		{"one-sided beyond tolerance", []rec{c.sight(u, k, k+2, 8, 50)}, none, none},
		{"GAEN", []rec{c.sight(g, gi, gi, 10, 50)}, outcome{10, false, true}, outcome{10, false, true}},
		{"GAEN at tolerance", []rec{c.sight(g, gi, gi-1, 4, 80)}, outcome{4, false, true}, outcome{4, false, true}},
		{"GAEN beyond tolerance", []rec{c.sight(g, gi, gi+2, 4, 50)}, none, none},
		{"repeated reciprocal", []rec{c.sight(u, j4, j4, 9, 50), c.sight(u, j4, j4, 4, 40)}, outcome{9, true, false}, outcome{9, true, false}},
		{"repeated GAEN", []rec{c.sight(g, gi, gi, 6, 50), c.sight(g, gi, gi, 10, 40)}, outcome{6, false, true}, outcome{6, false, true}},
		{"both rules", []rec{c.sight(u, j1, j1, 10, 50), c.sight(g, gi, gi, 10, 66)}, outcome{17, true, true}, outcome{17, true, true}},
		{"two days", []rec{c.sight(u, j1, j1, 9, 50), c.sight(u, j5, j5, 8, 50)}, outcome{15, true, false}, outcome{15, true, false}},
		{"next day's first interval", []rec{c.sight(g, iv(3, 0), iv(3, 0), 10, 50)}, outcome{10, false, true}, outcome{10, false, true}},
	}
	verdicts := []verdictCase{
		{"below the threshold", []rec{c.sight(u, j1, j1, 9, 50)}, verdict{last: -100}},
		{"exposed", []rec{c.sight(u, j1, j1, 10, 50), c.sight(g, gi, gi, 10, 50)}, verdict{true, 1, true, true}},
		{"exposed on two days", []rec{c.sight(u, j1, j1, 9, 50), c.sight(u, j4, j4, 10, 50), c.sight(u, j5, j5, 8, 50), c.sight(g, gi2, gi2, 10, 50)},
			verdict{true, 2, true, true}},
		{"rules of exposed days only", []rec{c.sight(u, j1, j1, 9, 50), c.sight(u, j4, j4, 10, 50), c.sight(g, gi2, gi2, 5, 50)},
			verdict{true, 1, true, false}},
	}
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		for _, matching := range [][]string{{policy.MatchReciprocal}, {policy.MatchReciprocal, policy.MatchOneSided}} {
			t.Run(fmt.Sprint(answers, matching), func(t *testing.T) {
				t.Parallel()
				pol := policy.Default()
				pol.Matching, pol.Answers = matching, answers
				// One flush a day, at midnight: the test's clock jumps
				// days, and every flush due writes its rows.
				pol.StoreFlushSeconds = 24 * 60 * 60
				testRules(t, pol, rulesFixture{u: u, c: c, g: g, uploaded: uploaded, gKeys: gKeys, cases: cases, verdicts: verdicts, j1: j1, j5: j5, gi: gi})
			})
		}
	}
}

// verdictCase is an exposure check of the rules test and what every
// answer to it, coarse or detailed, must say.
type verdictCase struct {
	name string
	recs []rec
	want verdict
}

// rulesFixture is what the subtests of TestRulesMatchEnclave share: the
// actors, the upload, the GAEN export and the checks.
type rulesFixture struct {
	u, c, g    actor
	uploaded   []rec
	gKeys      []contactlog.DailyKey
	cases      []rulesCase
	verdicts   []verdictCase
	j1, j5, gi enid.Interval
}

// testRules runs the rules test on a backend with policy pol: checks
// before the upload and the import, after them, and once the days of the
// cases left the window.
func testRules(t *testing.T, pol policy.Policy, f rulesFixture) {
	w := startRules(t, pol)
	l := newLedger(w.b.Policy)
	c, u, g := f.c, f.u, f.g
	check := func(name string, recs []rec, want *outcome) api.ExposureResponse {
		t.Helper()
		now := w.tick()
		// Keys up to the interval after now: a phone has no key of the
		// future, and the backend refuses one.
		got, err := w.c.CheckExposure(t.Context(), c.report(recs, -20, min(5, dayOf(enid.IntervalOf(now)+1))))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		full, _ := l.answer(recs, now)
		if oracle := l.release(full); !reflect.DeepEqual(got, oracle) {
			t.Errorf("%s: the backend answered\n%+v\nthe oracle\n%+v", name, got, oracle)
		}
		// Coarse answers say nothing below the threshold: then the
		// oracle's full answer must come to the outcome.
		sum := sumUp(full)
		if pol.Detailed() {
			sum = sumUp(got)
		}
		if want != nil && sum != *want {
			t.Errorf("%s: %+v, want %+v", name, sum, *want)
		}
		return got
	}
	// Before the upload and the import: nothing matches yet.
	w.set(2, 22*60+50)
	check("before the upload", []rec{c.sight(u, f.j1, f.j1, 9, 50), c.sight(g, f.gi, f.gi, 10, 50)}, &outcome{})

	at, secret := w.upload(t, 2, u.report(f.uploaded, 0, 2))
	l.addUpload(f.uploaded, u.dailyKeys(0, 2), 1, at, 1)
	at = w.importKeys(t, 2, 23*60+52, f.gKeys)
	l.addKeys(importable(w.b.Policy, f.gKeys, at), 2, at, 1)
	w.set(2, 23*60+55)
	for _, tc := range f.cases {
		want := tc.recipOnly
		if pol.OneSided() {
			want = tc.both
		}
		check(tc.name, tc.recs, &want)
	}
	for _, v := range f.verdicts {
		if got := verdictOf(t, check(v.name, v.recs, nil)); got != v.want {
			t.Errorf("%s: the answer says %+v, want %+v", v.name, got, v.want)
		}
	}
	// The upload is durable once the backend flushed its journal, on its
	// clock: at midnight.
	if !w.durable(t, 3, 0, secret) {
		t.Error("an upload of the evening before is not durable after the flush at midnight")
	}

	// Thirteen days on, day 1 has left the window: its sightings and the
	// uploads and imports of it no longer count.
	w.set(15, 23*60+55)
	if err := w.b.Service.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	check("two days, the first expired", []rec{c.sight(u, f.j1, f.j1, 9, 50), c.sight(u, f.j5, f.j5, 8, 50)}, &outcome{8, true, false})
	check("GAEN, expired", []rec{c.sight(g, f.gi, f.gi, 10, 50)}, &outcome{})
}
