package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/policy"
)

// maxOrder is a policy edit that notifies up to order n, with the default
// thresholds: order 2 needs 30 weighted minutes, order 3 60.
func maxOrder(n int) func(*policy.Policy) {
	return func(p *policy.Policy) { p.Orders = policy.DefaultOrders(n, p.Risk.MinimumWeightedMinutes) }
}

// meetFor has a and b meet for n consecutive intervals from at, 10
// minutes each at 40 dB (10 weighted minutes each), and returns both
// sides' sightings.
func meetFor(a, b *device, at time.Time, n int) (ab, ba []contactlog.Sighting) {
	for k := range n {
		x, y := meet(a, b, at.Add(time.Duration(k)*10*time.Minute), 10, 40)
		ab, ba = append(ab, x), append(ba, y)
	}
	return ab, ba
}

// chain is a case p who uploaded, a phone a exposed by p (20 minutes, two
// days ago), and a's later contact c (40 minutes, yesterday): a's report
// holds both of its encounters.
type chain struct {
	p, a, c      *device
	pa, ap       []contactlog.Sighting
	ac, ca       []contactlog.Sighting
	exposedOn    time.Time
	aReport      contactlog.Report
	aFirstAnswer api.ExposureResponse
}

func newChain(t *testing.T, v *env) *chain {
	t.Helper()
	x := &chain{p: newDevice(), a: newDevice(), c: newDevice(), exposedOn: v.now().Add(-50 * time.Hour)}
	x.pa, x.ap = meetFor(x.p, x.a, x.exposedOn, 2)
	x.ac, x.ca = meetFor(x.a, x.c, v.now().Add(-26*time.Hour), 4)
	v.mustUpload(x.p.report(x.pa...))
	x.aReport = x.a.report(append(append([]contactlog.Sighting{}, x.ap...), x.ac...)...)
	x.aFirstAnswer = v.check(x.aReport)
	r := x.aFirstAnswer
	if !r.Exposed || r.Order != 1 || len(r.OrderAuthorization) != api.AuthorizationSize || r.UploadFrom != x.exposedOn.Format(api.DateLayout) ||
		r.OrderAuthorizationExpiresAt <= v.now().Unix() {
		t.Fatalf("a, exposed by p: %+v; want order 1 with an authorization from %s", r, x.exposedOn.Format(api.DateLayout))
	}
	return x
}

// TestOrderChain: a phone exposed at order 1 uploads under its order
// authorization, and its contact is then told it was exposed at order 2,
// judged by order 2's own threshold; the top order hands out no
// authorization.
func TestOrderChain(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	c2 := newDevice()
	ac2, c2a := meetFor(x.a, c2, v.now().Add(-25*time.Hour), 2) // 20 minutes: order 1's threshold, not order 2's
	x.aReport.Sightings = append(x.aReport.Sightings, ac2...)
	if r := v.check(x.c.report(x.ca...)); r.Exposed || r.Order != 0 {
		t.Fatalf("c before a uploaded: %+v; want not exposed", r)
	}
	again := v.check(x.aReport)
	if !bytes.Equal(again.OrderAuthorization, x.aFirstAnswer.OrderAuthorization) {
		t.Errorf("a second check in the same period handed out another token")
	}
	up, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport)
	// a's sightings of p mirror p's upload: the cycle rule leaves them out.
	if err != nil || up.Sightings != len(x.ac)+len(ac2) || up.Keys != 2 {
		t.Fatalf("a's order-2 upload: %+v, %v; want %d sightings (not its sightings of p) and 2 keys", up, err, len(x.ac)+len(ac2))
	}
	r := v.check(x.c.report(x.ca...))
	if !r.Exposed || r.Order != 2 || !r.Reciprocal || r.OrderAuthorization != nil || r.UploadFrom != "" {
		t.Errorf("c, a's contact: %+v; want exposed at order 2 with no authorization (max_order 2)", r)
	}
	if r := v.check(c2.report(c2a...)); r.Exposed {
		t.Errorf("c2, 20 minutes with a: %+v; want not exposed (order 2 needs 30)", r)
	}
	if r := v.check(x.p.report(x.pa...)); r.Exposed {
		t.Errorf("p, whose contact a uploaded at order 2: %+v; want not exposed by its own case", r)
	}
	if r := v.check(x.aReport); r.Order != 1 || r.OrderAuthorization != nil {
		t.Errorf("a after its upload: %+v; want order 1 and no authorization", r)
	}
	if _, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport); err == nil {
		t.Errorf("a second upload under the same authorization was taken")
	} else {
		wantCode(t, "second upload", err, api.CodeAlreadyUsed)
	}
}

// TestOrderExchange: an exchange uploads under an order authorization,
// and its answer no longer carries it; replaying it is refused.
func TestOrderExchange(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	resp, err := v.exchange(api.ExchangeUpload, nil, x.aFirstAnswer.OrderAuthorization, x.aReport)
	if err != nil || resp.Upload == nil || resp.UploadError != nil || resp.Upload.Sightings != len(x.ac) {
		t.Fatalf("exchange upload: %+v, %v", resp, err)
	}
	if resp.Exposure.Order != 1 || resp.Exposure.OrderAuthorization != nil || resp.Exposure.UploadFrom != "" {
		t.Errorf("the uploading exchange's answer: %+v; want order 1 without the authorization it used", resp.Exposure)
	}
	resp, err = v.exchange(api.ExchangeUpload, nil, x.aFirstAnswer.OrderAuthorization, x.aReport)
	if err != nil || resp.Upload != nil || resp.UploadError == nil || resp.UploadError.Code != api.CodeAlreadyUsed {
		t.Errorf("replayed exchange upload: %+v, %v; want already_used", resp, err)
	}
	if r := v.check(x.c.report(x.ca...)); r.Order != 2 {
		t.Errorf("c: %+v; want order 2", r)
	}
}

// TestOrderAuthorizationExpires: a token is refused once its period and
// the next are over; the next check hands out a new one, which works.
func TestOrderAuthorizationExpires(t *testing.T) {
	v := newEnv(t, maxOrder(2), func(p *policy.Policy) { p.UploadAuthorizationSeconds = 3600 })
	x := newChain(t, v)
	old := x.aFirstAnswer
	if left := time.Unix(old.OrderAuthorizationExpiresAt, 0).Sub(v.now()); left < time.Hour || left > 2*time.Hour {
		t.Fatalf("the token expires in %s; want one to two lifetimes", left)
	}
	v.clock.Advance(time.Unix(old.OrderAuthorizationExpiresAt, 0).Sub(v.now()))
	_, err := v.upload(old.OrderAuthorization, x.aReport)
	wantCode(t, "expired token", err, api.CodeExpired)
	r := v.check(x.aReport)
	if bytes.Equal(r.OrderAuthorization, old.OrderAuthorization) || len(r.OrderAuthorization) != api.AuthorizationSize {
		t.Fatalf("the check after expiry: %+v; want a new token", r)
	}
	if _, err := v.upload(r.OrderAuthorization, x.aReport); err != nil {
		t.Errorf("upload under the new token: %v", err)
	}
}

// TestOrderAuthorizationForged: a token is good only with the phone's own
// daily key of its day, as the enclave made it: changed, moved to another
// day or order, presented by another phone or to another enclave, it is
// refused; and the two kinds of authorization are never taken for each
// other.
func TestOrderAuthorizationForged(t *testing.T) {
	v := newEnv(t, maxOrder(3))
	x := newChain(t, v)
	token := x.aFirstAnswer.OrderAuthorization
	edited := func(f func(b []byte)) []byte {
		b := bytes.Clone(token)
		f(b)
		return b
	}
	for name, tc := range map[string]struct {
		token []byte
		r     contactlog.Report
	}{
		"MAC flipped":                {edited(func(b []byte) { b[len(b)-1] ^= 1 }), x.aReport},
		"order raised":               {edited(func(b []byte) { b[0] = 3 }), x.aReport},
		"day moved back":             {edited(func(b []byte) { b[4]-- }), x.aReport},
		"period moved":               {edited(func(b []byte) { b[8]++ }), x.aReport},
		"another phone's report":     {token, x.c.report(x.ca...)},
		"a's report without its key": {token, contactlog.Report{Keys: x.a.keys[1:], Sightings: x.ac}},
		"zeros":                      {make([]byte, api.AuthorizationSize), x.aReport},
	} {
		_, err := v.upload(tc.token, tc.r)
		if err == nil {
			t.Errorf("%s: upload taken", name)
			continue
		}
		wantCode(t, name, err, api.CodeNotAuthorized)
	}
	// Another enclave (another key-encryption key) made no such token.
	w := newEnv(t, maxOrder(2))
	_, err := w.upload(token, x.aReport)
	wantCode(t, "another enclave's token", err, api.CodeNotAuthorized)

	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := v.e.parseReport(encode(t, x.aReport), 1000)
	if g, err := v.e.readOrderToken(pr.UploadAuthorization, rep, v.now()); g != nil || err != nil {
		t.Errorf("a result's authorization read as an order authorization: %+v, %v", g, err)
	}
	v.e.mu.Lock()
	_, _, err = v.e.checkAuthorization(token, v.now())
	v.e.mu.Unlock()
	wantCode(t, "an order authorization as a result's", err, api.CodeNotAuthorized)
	// Both work, each for its own upload.
	if _, err := v.upload(pr.UploadAuthorization, x.a.report(x.ac...)); err != nil {
		t.Errorf("result upload: %v", err)
	}
	if _, err := v.upload(token, x.aReport); err != nil {
		t.Errorf("order upload after a's result upload: %v", err)
	}
}

// TestOrderBindsExposingDay: an order upload takes only the days from the
// exposing day on, so a contact a had before it was exposed is not
// warned.
func TestOrderBindsExposingDay(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	before := newDevice()
	ab, ba := meetFor(x.a, before, v.now().Add(-5*24*time.Hour), 6)
	x.aReport = x.a.report(append(ab, x.aReport.Sightings...)...)
	r := v.check(x.aReport)
	up, err := v.upload(r.OrderAuthorization, x.aReport)
	if err != nil || up.Sightings != len(x.ac) || up.Keys != 2 {
		t.Fatalf("upload: %+v, %v; want only the %d sightings and 2 keys from the exposing day on", up, err, len(x.ac))
	}
	if r := v.check(before.report(ba...)); r.Exposed {
		t.Errorf("a contact from before a's exposure: %+v; want not exposed", r)
	}
	if r := v.check(x.c.report(x.ca...)); r.Order != 2 {
		t.Errorf("c: %+v; want order 2", r)
	}
}

// TestOrderCycleAtCheck: a phone that uploaded at order 1 after a
// contact uploaded it at order 2 is not told it was exposed at order 2 by
// that contact (the check's cycle rule, which the upload's cannot apply:
// the order-1 upload came later).
func TestOrderCycleAtCheck(t *testing.T) {
	for name, edit := range map[string]func(*policy.Policy){"reciprocal": func(*policy.Policy) {}, "both rules": bothRules} {
		t.Run(name, func(t *testing.T) {
			v := newEnv(t, maxOrder(2), edit)
			x := newChain(t, v)
			if _, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport); err != nil {
				t.Fatal(err)
			}
			// c tests positive and uploads: its own side of the encounter
			// with a is now held at order 1.
			if r := v.check(x.c.report(x.ca...)); r.Order != 2 {
				t.Fatalf("c before its upload: %+v; want order 2", r)
			}
			v.mustUpload(x.c.report(x.ca...))
			if r := v.check(x.c.report(x.ca...)); r.Exposed {
				t.Errorf("c after its own upload: %+v; want not told order 2 by the contact it exposed", r)
			}
		})
	}
}

// TestOrderOneSided: with one-sided matching, an order upload's keys
// warn phones that only heard it, at its order; the case that exposed it
// is not warned back.
func TestOrderOneSided(t *testing.T) {
	v := newEnv(t, maxOrder(2), bothRules)
	p, a, c := newDevice(), newDevice(), newDevice()
	at := v.now().Add(-30 * time.Hour)
	pa, ap := meetFor(p, a, at, 4)
	v.mustUpload(p.report())
	r := v.check(a.report(ap...))
	if !r.Exposed || !r.OneSided || r.Order != 1 || r.OrderAuthorization == nil {
		t.Fatalf("a heard p: %+v; want order 1, one-sided, with an authorization", r)
	}
	_, ca := meetFor(a, c, v.now().Add(-10*time.Hour), 4)
	if _, err := v.upload(r.OrderAuthorization, a.report()); err != nil {
		t.Fatal(err)
	}
	if r := v.check(c.report(ca...)); !r.Exposed || !r.OneSided || r.Order != 2 {
		t.Errorf("c heard a: %+v; want order 2, one-sided", r)
	}
	if r := v.check(p.report(pa...)); r.Exposed {
		t.Errorf("p heard a while p's own keys were held at order 1: %+v; want not exposed", r)
	}
}

// TestOrderLowestWins: a phone exposed at orders 1 and 2 is told order
// 1; each order's authorization leads to the next, up to max_order.
func TestOrderLowestWins(t *testing.T) {
	v := newEnv(t, maxOrder(3))
	x := newChain(t, v)
	if _, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport); err != nil {
		t.Fatal(err)
	}
	// c also met p: order 1 wins, and its authorization is for order 2.
	pc, cp := meetFor(x.p, x.c, v.now().Add(-40*time.Hour), 2)
	v.mustUpload(x.p.report(pc...))
	both := x.c.report(append(append([]contactlog.Sighting{}, x.ca...), cp...)...)
	r := v.check(both)
	if r.Order != 1 || len(r.OrderAuthorization) == 0 || r.OrderAuthorization[0] != 2 {
		t.Errorf("c, exposed at orders 1 and 2: %+v; want order 1, authorized for order 2", r)
	}
	// Without p, c is at order 2 and may upload at order 3.
	r = v.check(x.c.report(x.ca...))
	if r.Order != 2 || len(r.OrderAuthorization) == 0 || r.OrderAuthorization[0] != 3 {
		t.Fatalf("c, exposed at order 2: %+v; want an authorization for order 3", r)
	}
	d := newDevice()
	cd, dc := meetFor(x.c, d, v.now().Add(-20*time.Hour), 6)
	if _, err := v.upload(r.OrderAuthorization, x.c.report(append(append([]contactlog.Sighting{}, x.ca...), cd...)...)); err != nil {
		t.Fatal(err)
	}
	if r := v.check(d.report(dc...)); r.Order != 3 || r.OrderAuthorization != nil {
		t.Errorf("d, 60 minutes with c: %+v; want order 3 and no authorization", r)
	}
	if r := v.check(d.report(dc[:5]...)); r.Exposed {
		t.Errorf("d, 50 minutes with c: %+v; want not exposed (order 3 needs 60)", r)
	}
}

// TestOrderSurvivesRestartAndReplicas: an order upload, once written,
// matches at its order after a restart and on a replica that follows the
// store, and its authorization stays used there.
func TestOrderSurvivesRestartAndReplicas(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	w := v.replica()
	if _, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport); err != nil {
		t.Fatal(err)
	}
	v.flushAll()
	w.catchUp()
	v.restart()
	for name, e := range map[string]*env{"restarted": v, "replica": w} {
		if r := e.check(x.c.report(x.ca...)); r.Order != 2 {
			t.Errorf("%s: c: %+v; want order 2", name, r)
		}
		if r := e.check(x.aReport); r.Order != 1 || r.OrderAuthorization != nil {
			t.Errorf("%s: a: %+v; want order 1 without an authorization (used)", name, r)
		}
		_, err := e.upload(x.aFirstAnswer.OrderAuthorization, x.aReport)
		wantCode(t, name+": replayed upload", err, api.CodeAlreadyUsed)
	}
}

// TestOrderExpires: the order indexes and the uses of authorizations
// leave with their days.
func TestOrderExpires(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	if _, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport); err != nil {
		t.Fatal(err)
	}
	v.flushAll()
	v.clock.Advance(time.Duration(v.pol.RetentionDays) * 24 * time.Hour)
	if err := v.e.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := v.e.orders.recip[0].Len(); n != 0 {
		t.Errorf("order-2 index after retention: %d entries", n)
	}
	v.e.orders.mu.Lock()
	uses := len(v.e.orders.used)
	v.e.orders.mu.Unlock()
	if uses != 0 {
		t.Errorf("%d uses kept after retention", uses)
	}
}

// TestOrderAnswerBound: with max_order above 1, the largest answer, which
// carries an authorization, still fits the bound every answer is padded
// to.
func TestOrderAnswerBound(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		v := newEnv(t, maxOrder(3), func(p *policy.Policy) { p.Answers = answers })
		x := newChain(t, v)
		for _, r := range []api.ExposureResponse{x.aFirstAnswer, v.check(x.c.report(x.ca...))} {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if bound := min(v.e.ExposureResponseBound(), v.e.AnswerBound()); len(b)+64 > bound {
				t.Errorf("%s: an answer of %d bytes leaves no room for framing within %d: %s", answers, len(b), bound, b)
			}
		}
	}
}

// FuzzOrderToken: no token, however made, panics the reader, and none but
// the enclave's verifies.
func FuzzOrderToken(f *testing.F) {
	v := newEnv(f, maxOrder(3))
	a := newDevice()
	_, ap := meetFor(newDevice(), a, v.now().Add(-time.Hour), 1)
	rep, err := v.e.parseReport(encode(f, a.report(ap...)), 1000)
	if err != nil {
		f.Fatal(err)
	}
	day := utcDay(v.now())
	tek, _ := exposingKey(rep, day)
	genuine, _ := v.e.orderToken(2, day, tek, v.now())
	f.Add(genuine)
	f.Add(make([]byte, api.AuthorizationSize))
	f.Add(v.authorize())
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, token []byte) {
		g, err := v.e.readOrderToken(token, rep, v.now())
		if g != nil && !bytes.Equal(token, genuine) {
			t.Errorf("a token the enclave did not make verifies: %x (%v)", token, err)
		}
		if bytes.Equal(token, genuine) && (g == nil || err != nil || g.order != 2 || g.day != day) {
			t.Errorf("the genuine token: %+v, %v", g, err)
		}
	})
}
