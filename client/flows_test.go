package client_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

func isCode(err error, code string) bool { return errors.Is(err, &api.Error{Code: code}) }

// notExposed reports whether r is the coarse answer of a phone that was
// not exposed: nothing but "no", and no per-day figures.
func notExposed(r api.ExposureResponse) bool {
	return !r.Exposed && r.LastExposure == "" && !r.Reciprocal && !r.OneSided && r.Days == nil
}

// The life of an infection, as phones and a lab see it: C registers a test,
// the lab declares it positive, C uploads with the authorization it polls,
// and A, whom C met, learns it was exposed while B, who met only A, does
// not. Under the default policy, answers are coarse.
func TestFullFlow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	now := clk.Now()
	pol := c.Policy()
	if pol.Detailed() {
		t.Fatal("the default policy gives detailed answers")
	}

	a, bb, cc := newDevice(t, b.URL), newDevice(t, b.URL), newDevice(t, b.URL)
	metAC := now.Add(-50 * time.Hour).Truncate(time.Hour)
	meet(t, a, cc, metAC, 20)
	meet(t, bb, a, now.Add(-30*time.Hour).Truncate(time.Hour), 20)

	checkA := func() api.ExposureResponse {
		t.Helper()
		r, err := c.CheckExposure(ctx, window(a, pol, now))
		if err != nil {
			t.Fatalf("CheckExposure(A): %v", err)
		}
		return r
	}
	if r := checkA(); !notExposed(r) {
		t.Fatalf("A before any upload: %+v, want a coarse answer, not exposed", r)
	}
	notExposedWire := w.last(t)

	// Pending until the lab speaks; nothing authorizes an upload yet.
	code, err := cc.RegisterTest(now)
	if err != nil {
		t.Fatal(err)
	}
	tst, _ := cc.Test()
	pr, err := c.PollResult(ctx, tst.Secret)
	if err != nil || pr.Result != api.Pending || pr.UploadAuthorization != nil {
		t.Fatalf("poll before the result: %+v, %v; want pending without authorization", pr, err)
	}

	// Only the listed authority's fresh signature counts, once.
	mallory, _ := authority.GenerateKey("mallory")
	forged, _ := mallory.SignResult(code, api.Positive, now, time.Time{}, now)
	if err := c.SubmitResult(ctx, forged); !isCode(err, api.CodeUnknownAuthority) {
		t.Fatalf("result signed by an unlisted authority: %v, want %s", err, api.CodeUnknownAuthority)
	}
	impostor, _ := mallory.SignResult(code, api.Positive, now, time.Time{}, now)
	impostor.Authority = b.Authority.Name
	if err := c.SubmitResult(ctx, impostor); !isCode(err, api.CodeBadSignature) {
		t.Fatalf("result claiming the lab's name: %v, want %s", err, api.CodeBadSignature)
	}
	res, err := b.Authority.SignResult(code, api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SubmitResult(ctx, res); err != nil {
		t.Fatalf("SubmitResult: %v", err)
	}
	if err := c.SubmitResult(ctx, res); !isCode(err, api.CodeReplayed) {
		t.Fatalf("the same signed result again: %v, want %s", err, api.CodeReplayed)
	}
	var apiErr *api.Error
	if err := c.SubmitResult(ctx, res); !errors.As(err, &apiErr) || apiErr.Message == "" {
		t.Fatalf("a refusal must be an *api.Error that says why: %#v", err)
	}

	pr, err = c.PollResult(ctx, tst.Secret)
	if err != nil || pr.Result != api.Positive || len(pr.UploadAuthorization) != api.AuthorizationSize || pr.Uploaded || pr.UploadPending {
		t.Fatalf("poll after the positive result: %+v, %v", pr, err)
	}
	if exp := time.Unix(pr.ExpiresAt, 0); exp.Before(now.Add(pol.UploadAuthorizationTTL())) {
		t.Errorf("authorization expires at %s; want it valid for at least %s from %s", exp, pol.UploadAuthorizationTTL(), now)
	}
	// A poll with any other secret learns nothing of this test.
	if pr, err := c.PollResult(ctx, bytes.Repeat([]byte{1}, api.TestSecretSize)); err != nil || pr.Result != api.Pending || pr.UploadAuthorization != nil {
		t.Fatalf("poll with another secret: %+v, %v; want pending", pr, err)
	}

	uploaded := window(cc, pol, now)
	up, err := c.Upload(ctx, pr.UploadAuthorization, uploaded)
	if err != nil || up.Sightings != len(uploaded.Sightings) || up.Keys != len(uploaded.Keys) || up.Sightings == 0 || up.Keys == 0 {
		t.Fatalf("Upload: %+v, %v; want %d sightings and %d keys taken", up, err, len(uploaded.Sightings), len(uploaded.Keys))
	}
	// Taken, but written on the backend's clock: durable by its next
	// flush, not yet.
	if flushBy := now.Add(time.Duration(pol.StoreFlushSeconds) * time.Second); up.Durable || up.DurableBy < now.Unix() || up.DurableBy > flushBy.Unix() {
		t.Errorf("Upload: durable %t by %s; want not yet, by the next flush at %s at the latest", up.Durable, time.Unix(up.DurableBy, 0).UTC(), flushBy)
	}
	// A refused upload is an *api.Error that says why.
	_, err = c.Upload(ctx, pr.UploadAuthorization, uploaded)
	if !errors.As(err, &apiErr) || apiErr.Code != api.CodeAlreadyUsed || apiErr.Message == "" {
		t.Fatalf("replayed upload authorization: %#v, want an *api.Error %s", err, api.CodeAlreadyUsed)
	}
	if _, err := c.Upload(ctx, make([]byte, len(pr.UploadAuthorization)), window(bb, pol, now)); !isCode(err, api.CodeNotAuthorized) {
		t.Fatalf("made-up upload authorization: %v, want %s", err, api.CodeNotAuthorized)
	}
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || pr.Result != api.Positive || pr.Uploaded || !pr.UploadPending || pr.UploadAuthorization != nil {
		t.Fatalf("poll after the upload, before the flush: %+v, %v; want positive, upload pending, no authorization", pr, err)
	}

	// The upload matches at once, durable or not.
	r := checkA()
	exposed := w.last(t)
	// The default policy matches reciprocally only: C's upload holds its
	// sightings of A, and A's check proves A's half with its keys. The
	// coarse answer says only that, and the day.
	if !r.Exposed || r.LastExposure != metAC.Format(api.DateLayout) || !r.Reciprocal || r.OneSided || r.Days != nil {
		t.Fatalf("A after C's upload: %+v; want exposed reciprocally on %s, no per-day figures", r, metAC.Format(api.DateLayout))
	}
	if r, err := c.CheckExposure(ctx, window(bb, pol, now)); err != nil || !notExposed(r) {
		t.Fatalf("B: %+v, %v; want not exposed", r, err)
	}
	// Exposed or not, the answer has one size on the wire.
	if exposed.RespSize != notExposedWire.RespSize || w.last(t).RespSize != notExposedWire.RespSize {
		t.Errorf("exposure answers of %d (exposed) and %d, %d bytes (not exposed) differ", exposed.RespSize, notExposedWire.RespSize, w.last(t).RespSize)
	}

	// Once the journal wrote it, the poll says uploaded.
	flushUntil(t, b, clk, up.DurableBy)
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || pr.Result != api.Positive || !pr.Uploaded || pr.UploadPending || pr.UploadAuthorization != nil {
		t.Fatalf("poll after the flush: %+v, %v; want positive, uploaded, no authorization", pr, err)
	}

	// A negative result gives no authorization.
	d := newDevice(t, b.URL)
	dcode, _ := d.RegisterTest(now)
	neg, _ := b.Authority.SignResult(dcode, api.Negative, now, time.Time{}, now)
	if err := c.SubmitResult(ctx, neg); err != nil {
		t.Fatal(err)
	}
	dt, _ := d.Test()
	if pr, err := c.PollResult(ctx, dt.Secret); err != nil || pr.Result != api.Negative || pr.UploadAuthorization != nil {
		t.Fatalf("poll after a negative result: %+v, %v", pr, err)
	}

	// Every request after the bundle was one of the same Oblivious HTTP
	// requests to the gateway.
	for _, e := range w.posts() {
		if e.Path != api.PathGateway || e.ContentType != "message/ohttp-req" || e.Status != http.StatusOK {
			t.Errorf("request %+v: want a message/ohttp-req to %s answered 200", e, api.PathGateway)
		}
	}
}

// An authorization is good for a limited time only; the next poll after
// it expired unused hands out another, which works.
func TestUploadAuthorizationExpires(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	c := newClient(t, b.URL, b, nil, clk.Now)
	d, e := newDevice(t, b.URL), newDevice(t, b.URL)
	meet(t, d, e, clk.Now().Add(-3*time.Hour), 20)
	secret := positive(t, c, b.Authority, d, clk.Now())
	pr, err := c.PollResult(ctx, secret)
	if err != nil || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("poll: %+v, %v", pr, err)
	}
	clk.Add(time.Unix(pr.ExpiresAt, 0).Sub(clk.Now()) + time.Minute)
	if _, err := c.Upload(ctx, pr.UploadAuthorization, window(d, c.Policy(), clk.Now())); !isCode(err, api.CodeExpired) {
		t.Fatalf("upload after the authorization expired: %v, want %s", err, api.CodeExpired)
	}
	again, err := c.PollResult(ctx, secret)
	if err != nil || again.Result != api.Positive || len(again.UploadAuthorization) != api.AuthorizationSize || bytes.Equal(again.UploadAuthorization, pr.UploadAuthorization) {
		t.Fatalf("poll after the authorization expired: %+v, %v; want a new authorization", again, err)
	}
	if exp := time.Unix(again.ExpiresAt, 0); exp.Before(clk.Now().Add(c.Policy().UploadAuthorizationTTL())) {
		t.Errorf("the new authorization expires at %s, less than %s after %s", exp, c.Policy().UploadAuthorizationTTL(), clk.Now())
	}
	if up, err := c.Upload(ctx, again.UploadAuthorization, window(d, c.Policy(), clk.Now())); err != nil || up.Keys == 0 {
		t.Fatalf("upload with the new authorization: %+v, %v", up, err)
	}
}

// A report the backend would refuse as malformed is refused on the phone,
// with contactlog's error, before anything is sent; so is an upload
// authorization of the wrong size.
func TestMalformedReportNotSent(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	w := &wire{}
	c := newClient(t, b.URL, b, w, nil)
	day := enid.IntervalOf(time.Now()).RollingStart()
	key := contactlog.DailyKey{TEK: enid.TEK{1}, Start: day, Period: enid.RollingPeriod}
	seen := func(i enid.Interval, minutes uint8) contactlog.Sighting {
		return contactlog.Sighting{Heard: enid.RPI{2}, Interval: i, Minutes: minutes, Attenuation: 50}
	}
	manyKeys := make([]contactlog.DailyKey, contactlog.MaxKeys+1)
	for i := range manyKeys {
		manyKeys[i] = contactlog.DailyKey{TEK: enid.TEK{byte(i)}, Start: enid.Interval(i), Period: 1}
	}
	for _, tc := range []struct {
		name string
		r    contactlog.Report
		want error
	}{
		{"a sighting no key covers", contactlog.Report{Keys: []contactlog.DailyKey{key}, Sightings: []contactlog.Sighting{seen(day+3, 5), seen(day+enid.RollingPeriod, 5)}}, contactlog.ErrUncovered},
		{"sightings and no key", contactlog.Report{Sightings: []contactlog.Sighting{seen(day+3, 5)}}, contactlog.ErrUncovered},
		{"a sighting of no minutes", contactlog.Report{Keys: []contactlog.DailyKey{key}, Sightings: []contactlog.Sighting{seen(day+3, 0)}}, contactlog.ErrInvalid},
		{"a sighting too long", contactlog.Report{Keys: []contactlog.DailyKey{key}, Sightings: []contactlog.Sighting{seen(day+3, contactlog.MaxMinutes+1)}}, contactlog.ErrInvalid},
		{"a key of no intervals", contactlog.Report{Keys: []contactlog.DailyKey{{Start: day}}}, contactlog.ErrInvalid},
		{"overlapping keys", contactlog.Report{Keys: []contactlog.DailyKey{key, {TEK: enid.TEK{3}, Start: day + 10, Period: 1}}}, contactlog.ErrOverlap},
		{"the same key twice", contactlog.Report{Keys: []contactlog.DailyKey{key, key}}, contactlog.ErrOverlap},
		{"too many keys", contactlog.Report{Keys: manyKeys}, contactlog.ErrTooMany},
	} {
		if _, err := c.Upload(t.Context(), make([]byte, api.AuthorizationSize), tc.r); !errors.Is(err, tc.want) {
			t.Errorf("Upload of %s: %v, want %v", tc.name, err, tc.want)
		}
		if _, err := c.CheckExposure(t.Context(), tc.r); !errors.Is(err, tc.want) {
			t.Errorf("CheckExposure of %s: %v, want %v", tc.name, err, tc.want)
		}
	}
	good := contactlog.Report{Keys: []contactlog.DailyKey{key}, Sightings: []contactlog.Sighting{seen(day+3, 5)}}
	for _, n := range []int{0, 4, api.AuthorizationSize - 1, api.AuthorizationSize + 1} {
		if _, err := c.Upload(t.Context(), make([]byte, n), good); err == nil || !strings.Contains(err.Error(), "authorization") {
			t.Errorf("Upload with a %d-byte authorization: %v, want a refusal of the authorization", n, err)
		}
	}
	// An exchange refuses, before sending, what the backend would refuse
	// or could not make sense of.
	secret := make([]byte, api.TestSecretSize)
	for _, tc := range []struct {
		name, want string
		d          client.Daily
	}{
		{"an upload with neither an authorization nor a secret", "authorization", client.Daily{Report: good, Upload: true}},
		{"a secret of the wrong size", "secret", client.Daily{Report: good, Secret: secret[:16]}},
		{"an authorization of the wrong size", "authorization", client.Daily{Report: good, Upload: true, Authorization: make([]byte, api.AuthorizationSize-1)}},
	} {
		if _, err := c.Exchange(t.Context(), tc.d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Exchange with %s: %v, want a refusal of the %s", tc.name, err, tc.want)
		}
	}
	if _, err := c.Exchange(t.Context(), client.Daily{Report: contactlog.Report{Sightings: []contactlog.Sighting{seen(day+3, 5)}}, Secret: secret}); !errors.Is(err, contactlog.ErrUncovered) {
		t.Errorf("Exchange of a report with no key: %v, want %v", err, contactlog.ErrUncovered)
	}
	if ps := w.posts(); len(ps) != 0 {
		t.Errorf("%d requests sent for malformed reports", len(ps))
	}
}

// A request too large for the largest size class is refused before it is
// sent: unpadded, its length would stand out.
func TestTooLargeNotSent(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	w := &wire{}
	c := newClient(t, b.URL, b, w, nil)
	day := enid.IntervalOf(time.Now()).RollingStart()
	huge := contactlog.Report{
		Keys: []contactlog.DailyKey{
			{TEK: enid.TEK{1}, Start: day - enid.RollingPeriod, Period: enid.RollingPeriod},
			{TEK: enid.TEK{2}, Start: day, Period: enid.RollingPeriod},
		},
		Sightings: make([]contactlog.Sighting, 100_000), // 1.1 MB
	}
	for i := range huge.Sightings {
		huge.Sightings[i] = contactlog.Sighting{Heard: enid.RPI{byte(i), byte(i >> 8)}, Interval: day - enid.RollingPeriod + enid.Interval(i%(2*enid.RollingPeriod)), Minutes: 1}
	}
	if _, err := c.CheckExposure(t.Context(), huge); !errors.Is(err, bhttp.ErrTooLarge) {
		t.Errorf("CheckExposure of %d sightings: %v, want bhttp.ErrTooLarge", len(huge.Sightings), err)
	}
	if _, err := c.Upload(t.Context(), make([]byte, api.AuthorizationSize), huge); !errors.Is(err, bhttp.ErrTooLarge) {
		t.Errorf("Upload of %d sightings: %v, want bhttp.ErrTooLarge", len(huge.Sightings), err)
	}
	if ps := w.posts(); len(ps) != 0 {
		t.Errorf("%d oversized requests sent", len(ps))
	}
}

// walk returns n fixes, one a minute from start, moving east from (lat,
// lon) by step degrees a fix.
func walk(start time.Time, n int, lat, lon, step float64) gps.Trace {
	tr := make(gps.Trace, n)
	for i := range tr {
		tr[i] = gps.Point{Time: start.Add(time.Duration(i) * time.Minute).Unix(), Lat: lat, Lon: math.Round((lon+float64(i)*step)*1e7) / 1e7}
	}
	return tr
}

func TestGPS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	pol := policy.Default()
	pol.GPS.MaxTracePoints = 100
	// Detailed answers list the episodes.
	pol.Answers = policy.AnswersDetailed
	b := startBackend(t, localbackend.Config{Now: clk.Now, Policy: &pol})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	now := clk.Now()

	start := now.Add(-26 * time.Hour).Truncate(time.Minute)
	patient := walk(start, 60, 46.5191, 6.5668, 0.00001)
	signed, err := b.Authority.SignTrace(patient, now)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.SubmitTrace(ctx, signed); err != nil || n != len(patient) {
		t.Fatalf("SubmitTrace: %d, %v; want %d points", n, err, len(patient))
	}
	if _, err := c.SubmitTrace(ctx, signed); !isCode(err, api.CodeReplayed) {
		t.Fatalf("the same signed trace again: %v, want %s", err, api.CodeReplayed)
	}

	// Alice walks 4 m north of the patient for half an hour; Bob takes the
	// same path a day later.
	alice := walk(start.Add(10*time.Minute), 30, 46.519136, 6.5669, 0.00001)
	ra, err := c.CheckTrace(ctx, alice)
	if err != nil || !ra.Exposed || len(ra.Episodes) != 1 || ra.Episodes[0].Minutes < 29 || ra.Episodes[0].ClosestMeters > 5 {
		t.Fatalf("Alice: %+v, %v; want one exposed episode of about 30 minutes within 5 m", ra, err)
	}
	exposedSize := w.last(t).RespSize
	rb, err := c.CheckTrace(ctx, walk(start.Add(24*time.Hour+10*time.Minute), 30, 46.519136, 6.5669, 0.00001))
	if err != nil || rb.Exposed || len(rb.Episodes) != 0 {
		t.Fatalf("Bob: %+v, %v; want not exposed", rb, err)
	}
	if got := w.last(t).RespSize; got != exposedSize {
		t.Errorf("trace answers differ on the wire: %d bytes exposed, %d not", exposedSize, got)
	}

	// Fixes older than the window are dropped by the client: a trace whose
	// recent part fits the policy's limit passes although the whole does
	// not, and one with no recent fix is not sent at all.
	old := walk(pol.WindowStart(now).Add(-2*time.Hour), 50, 46.5191, 6.5668, 0)
	recent := walk(start.Add(10*time.Minute), 80, 46.519136, 6.5669, 0.00001)
	if _, err := c.CheckTrace(ctx, walk(start, 120, 46.5191, 6.5668, 0)); !isCode(err, api.CodeTooLarge) {
		t.Fatalf("a recent trace over the limit: %v, want %s", err, api.CodeTooLarge)
	}
	mixed := append(append(gps.Trace{}, old...), recent...)
	if r, err := c.CheckTrace(ctx, mixed); err != nil || !r.Exposed {
		t.Fatalf("%d old and %d recent fixes: %+v, %v; want the recent ones checked", len(old), len(recent), r, err)
	}
	posts := len(w.posts())
	if _, err := c.CheckTrace(ctx, old); !errors.Is(err, client.ErrNoRecentFixes) {
		t.Fatalf("only old fixes: %v, want ErrNoRecentFixes", err)
	}
	if _, err := c.CheckTrace(ctx, nil); !errors.Is(err, client.ErrNoRecentFixes) {
		t.Fatalf("an empty trace: %v, want ErrNoRecentFixes", err)
	}
	if got := len(w.posts()); got != posts {
		t.Errorf("a trace with no recent fix was sent")
	}

	// A trace the SDK cannot encode is refused locally.
	var pe *gps.PointError
	if _, err := c.CheckTrace(ctx, gps.Trace{{Time: now.Unix(), Lat: 91, Lon: 0}}); !errors.As(err, &pe) || len(w.posts()) != posts {
		t.Errorf("an impossible fix: %v, %d requests sent; want a *gps.PointError and none", err, len(w.posts())-posts)
	}
	// The backend's refusal of a trace it cannot use reaches the caller.
	if _, err := c.CheckTrace(ctx, gps.Trace{{Time: now.Add(time.Hour).Unix(), Lat: 46.5, Lon: 6.5}}); !isCode(err, api.CodeOutOfWindow) {
		t.Errorf("a fix in the future: %v, want %s", err, api.CodeOutOfWindow)
	}
	if _, err := c.SubmitTrace(ctx, api.SignedTrace{Authority: "nobody", Trace: signed.Trace}); !isCode(err, api.CodeUnknownAuthority) {
		t.Errorf("a trace from an unlisted authority: %v, want %s", err, api.CodeUnknownAuthority)
	}
}

// An observer of the wire cannot tell what a phone's daily exchange
// carries: a check, a poll, a poll with an upload (accepted or refused) and
// a decoy of the same report length have the same URL, content type and
// sizes both ways, in every size class.
func TestExchangesLookAlike(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	now := clk.Now()
	var classes []int
	for _, encounters := range []int{0, 1, 80} {
		d, other := newDevice(t, b.URL), newDevice(t, b.URL)
		// Enough encounters, for the last, that the report is not in the
		// smallest size class.
		for i := range encounters {
			meet(t, d, other, now.Add(-time.Duration(i+1)*3*time.Hour), 10)
		}
		secret := positive(t, c, b.Authority, d, now)
		r := window(d, c.Policy(), now)
		body, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		send := func(name string, daily client.Daily) (api.ExchangeResponse, exchange) {
			t.Helper()
			resp, err := c.Exchange(ctx, daily)
			if err != nil {
				t.Fatalf("%d encounters, %s: %v", encounters, name, err)
			}
			return resp, w.last(t)
		}
		check, checkWire := send("check", client.Daily{Report: r})
		if check.Result != nil || check.Upload != nil || check.UploadError != nil {
			t.Errorf("%d encounters: a check answered %+v, want only the exposure", encounters, check)
		}
		poll, pollWire := send("poll", client.Daily{Report: r, Secret: secret})
		if poll.Result == nil || poll.Result.Result != api.Positive || poll.Upload != nil {
			t.Errorf("%d encounters: a poll answered %+v, want a positive result", encounters, poll)
		}
		up, upWire := send("poll and upload", client.Daily{Report: r, Secret: secret, Upload: true})
		if encounters > 0 && (up.Upload == nil || up.UploadError != nil || up.Result == nil || !up.Result.UploadPending) {
			t.Errorf("%d encounters: an upload answered %+v, want it taken and pending", encounters, up)
		}
		// A phone that broadcast nothing has nothing to upload.
		if encounters == 0 && (up.Upload != nil || up.UploadError == nil) {
			t.Errorf("%d encounters: an upload answered %+v, want it refused", encounters, up)
		}
		clk.Add(time.Second) // another day's exchange, not a replay
		again, againWire := send("upload again", client.Daily{Report: r, Secret: secret, Upload: true})
		if encounters > 0 && (again.UploadError == nil || again.UploadError.Code != api.CodeAlreadyUsed) {
			t.Errorf("%d encounters: a second upload answered %+v, want it refused as already used", encounters, again)
		}
		if err := c.Decoy(ctx, len(body)); err != nil {
			t.Fatalf("Decoy(%d): %v", len(body), err)
		}
		decoyWire := w.last(t)
		for name, e := range map[string]exchange{"poll": pollWire, "poll and upload": upWire, "refused upload": againWire, "decoy": decoyWire} {
			if e != checkWire {
				t.Errorf("a report of %d bytes (%d sightings): the %s %+v differs on the wire from the check %+v", len(body), len(r.Sightings), name, e, checkWire)
			}
		}
		classes = append(classes, checkWire.ReqSize)
	}
	if classes[0] == classes[len(classes)-1] {
		t.Errorf("exchanges of reports of 0 and 80 encounters are both %d bytes: the test does not span size classes", classes[0])
	}

	// The whole documented range of decoys is usable; beyond it, nothing
	// is sent.
	if err := c.Decoy(ctx, bhttp.MaxSize/2); err != nil {
		t.Errorf("Decoy(MaxSize/2): %v", err)
	}
	posts := len(w.posts())
	for _, size := range []int{-1, bhttp.MaxSize/2 + 1} {
		if err := c.Decoy(ctx, size); err == nil {
			t.Errorf("Decoy(%d) succeeded", size)
		}
	}
	if got := len(w.posts()); got != posts {
		t.Errorf("out-of-range decoys sent %d requests", got-posts)
	}
}

// A decoy of a report's length looks like the exchange of that report
// for every length, those whose exchange just crosses into the next size
// class included: a phone's decoy must not be told from its exchange.
func TestDecoyOfAnyReportLength(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	// Yesterday's key, so that every sighting under it is in the past.
	day := enid.IntervalOf(clk.Now()).RollingStart() - enid.RollingPeriod
	key := contactlog.DailyKey{TEK: enid.TEK{1}, Start: day, Period: enid.RollingPeriod}
	// One key and 70 to 90 sightings: reports of 795 to 1,015 bytes, whose
	// exchanges cross from the 1 KiB class to the next.
	var crossed bool
	for n := 70; n <= 90; n++ {
		r := contactlog.Report{Keys: []contactlog.DailyKey{key}}
		for i := range n {
			r.Sightings = append(r.Sightings, contactlog.Sighting{Heard: enid.RPI{byte(i), 1}, Interval: day + enid.Interval(i), Minutes: 5, Attenuation: 50})
		}
		body, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CheckExposure(ctx, r); err != nil {
			t.Fatal(err)
		}
		check := w.last(t)
		if err := c.Decoy(ctx, len(body)); err != nil {
			t.Fatal(err)
		}
		if decoy := w.last(t); decoy != check {
			t.Errorf("a report of %d bytes: the decoy %+v differs on the wire from the check %+v", len(body), decoy, check)
		}
		crossed = crossed || check.ReqSize != w.posts()[0].ReqSize
	}
	if !crossed {
		t.Error("every check was of one size class: the test does not cross a class boundary")
	}
}

// gaenServer is a foreign GAEN key server: its signing key, and the
// policy entry that makes a backend trust it.
type gaenServer struct {
	signer gaen.SigningKey
	entry  policy.ExportKey
}

func newGAENServer(t testing.TB, name string) gaenServer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return gaenServer{gaen.SigningKey{KeyID: "999", KeyVersion: "v1", Key: priv}, policy.ExportKey{Name: name, PublicKey: der}}
}

func (g gaenServer) export(t testing.TB, now time.Time, keys ...gaen.Key) []byte {
	t.Helper()
	b, err := gaen.Write(&gaen.Export{Region: "XX", Start: now.Add(-24 * time.Hour), End: now, Keys: keys}, g.signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A GAEN key export signed by a key server that the attested policy lists
// is imported, and a phone that heard one of its users learns that it was
// exposed, one-sided, without downloading anybody's keys.
func TestImportGAEN(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	server := newGAENServer(t, "xx-keys")
	pol := policy.Default()
	pol.GAENExportKeys = []policy.ExportKey{server.entry}
	// Detailed answers give the minutes of every day.
	pol.Answers = policy.AnswersDetailed
	b := startBackend(t, localbackend.Config{Now: clk.Now, Policy: &pol})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	now := clk.Now()
	if got := c.Policy().GAENExportKeys; len(got) != 1 || got[0].Name != "xx-keys" {
		t.Fatalf("attested export keys %+v, want the key server's", got)
	}

	// A foreign user's key of yesterday, which phone d heard for two
	// intervals; and keys the backend must skip.
	heardAt := now.Add(-20 * time.Hour).Truncate(time.Hour)
	foreign := gaen.Key{TEK: enid.TEK{0xf0, 1}, RollingStart: enid.IntervalOf(heardAt).RollingStart(), RollingPeriod: enid.RollingPeriod, ReportType: gaen.ConfirmedTest}
	fk, err := enid.NewKey(foreign.TEK, foreign.RollingStart, foreign.RollingPeriod)
	if err != nil {
		t.Fatal(err)
	}
	tooOld := gaen.Key{TEK: enid.TEK{0xf0, 2}, RollingStart: enid.IntervalOf(now.Add(-20 * 24 * time.Hour)).RollingStart(), RollingPeriod: enid.RollingPeriod}
	future := gaen.Key{TEK: enid.TEK{0xf0, 3}, RollingStart: enid.IntervalOf(now.Add(48 * time.Hour)).RollingStart(), RollingPeriod: enid.RollingPeriod}
	invalid := gaen.Key{TEK: enid.TEK{0xf0, 4}, RollingStart: foreign.RollingStart, RollingPeriod: enid.RollingPeriod + 1}
	export := server.export(t, now, foreign, tooOld, future, invalid)

	d, e := newDevice(t, b.URL), newDevice(t, b.URL)
	for k := range 2 {
		at := heardAt.Add(time.Duration(k) * enid.IntervalLength)
		if err := d.Hear(ctx, fk.RPI(enid.IntervalOf(at)), at, 10, 50); err != nil {
			t.Fatal(err)
		}
	}
	meet(t, d, e, heardAt.Add(time.Hour), 10) // a contact who tested negative

	check := func(dev *device.Device) api.ExposureResponse {
		t.Helper()
		r, err := c.CheckExposure(ctx, window(dev, pol, now))
		if err != nil {
			t.Fatalf("CheckExposure: %v", err)
		}
		return r
	}
	if r := check(d); r.Exposed {
		t.Fatalf("d before the import: %+v, want not exposed", r)
	}
	notExposed := w.last(t)

	imp, err := c.ImportGAEN(ctx, export)
	if want := (api.ImportResponse{SignedBy: "xx-keys", Region: "XX", Imported: 1, Skipped: 3}); err != nil || imp != want {
		t.Fatalf("ImportGAEN: %+v, %v; want %+v", imp, err, want)
	}
	r := check(d)
	if !r.Exposed {
		t.Fatalf("d after the import: %+v, want exposed", r)
	}
	for _, day := range r.Days {
		want := 0
		if day.Date == heardAt.Format(api.DateLayout) {
			want = 20
		}
		// Imported keys match one-sided only: nothing proves that the
		// foreign phone heard d.
		if day.Minutes != want || day.Exposed != (want > 0) || day.OneSided != (want > 0) || day.Reciprocal {
			t.Errorf("d on %s: %+v; want %d minutes, matched one-sided", day.Date, day, want)
		}
	}
	if got := w.last(t).RespSize; got != notExposed.RespSize {
		t.Errorf("exposure answers of %d (exposed) and %d bytes (not) differ", got, notExposed.RespSize)
	}
	if r := check(e); r.Exposed {
		t.Errorf("e, who never heard the foreign user: %+v, want not exposed", r)
	}

	// The same export again, as a client polling the key server fetches
	// it, changes nothing.
	if again, err := c.ImportGAEN(ctx, export); err != nil || !again.Duplicate || again.Imported != 0 {
		t.Fatalf("the same export again: %+v, %v; want a duplicate, nothing imported", again, err)
	}
	minutes := 0
	for _, day := range check(d).Days {
		minutes += day.Minutes
	}
	if minutes != 20 {
		t.Errorf("after a duplicate import d has %d exposure minutes, want the same 20", minutes)
	}

	// Only a listed key server's signature counts; what is not an export
	// is refused as such.
	other := newGAENServer(t, "yy-keys")
	if _, err := c.ImportGAEN(ctx, other.export(t, now, gaen.Key{TEK: enid.TEK{0xee}, RollingStart: foreign.RollingStart, RollingPeriod: enid.RollingPeriod})); !isCode(err, api.CodeBadSignature) {
		t.Errorf("an export of an unlisted key server: %v, want %s", err, api.CodeBadSignature)
	}
	for name, body := range map[string][]byte{"empty": nil, "not a zip": []byte("hello"), "truncated": export[:len(export)/2]} {
		if _, err := c.ImportGAEN(ctx, body); !isCode(err, api.CodeMalformed) {
			t.Errorf("%s: %v, want %s", name, err, api.CodeMalformed)
		}
	}

	// A backend whose policy lists no key server imports nothing.
	plain := startBackend(t, localbackend.Config{Now: clk.Now})
	if _, err := newClient(t, plain.URL, plain, nil, clk.Now).ImportGAEN(ctx, export); !isCode(err, api.CodeNotAuthorized) {
		t.Errorf("import into a backend that trusts no key server: %v, want %s", err, api.CodeNotAuthorized)
	}
}
