package client_test

import (
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
)

// A phone's life in daily exchanges, each of which checks its exposure:
// it polls its test's result with its secret, uploads with the secret and
// the upload flag once its user consented (no authorization to keep), and
// learns from a later exchange that the upload is durable. A refused
// upload is said in the answer; the check and the poll are still answered.
func TestDailyExchange(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	now := clk.Now()
	pol := c.Policy()
	a, cc := newDevice(t, b.URL), newDevice(t, b.URL)
	met := now.Add(-5 * time.Hour).Truncate(time.Hour)
	meet(t, a, cc, met, 20)
	code, err := cc.RegisterTest(now)
	if err != nil {
		t.Fatal(err)
	}
	tst, _ := cc.Test()
	exchange := func(name string, d client.Daily) api.ExchangeResponse {
		t.Helper()
		// A day apart, as phones make them (the gateway refuses a request
		// it has seen).
		clk.Add(time.Second)
		r, err := c.Exchange(ctx, d)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.Secret != nil && r.Result == nil {
			t.Fatalf("%s: %+v answers no poll", name, r)
		}
		return r
	}

	r := exchange("poll before the result", client.Daily{Report: window(cc, pol, now), Secret: tst.Secret})
	if r.Result.Result != api.Pending || r.Result.UploadAuthorization != nil || r.Upload != nil || r.UploadError != nil || !notExposed(r.Exposure) {
		t.Fatalf("poll before the result: %+v %+v; want pending, checked, not exposed", r, r.Result)
	}
	r = exchange("upload before the result", client.Daily{Report: window(cc, pol, now), Secret: tst.Secret, Upload: true})
	if r.UploadError == nil || r.UploadError.Code != api.CodeNotAuthorized || r.Upload != nil || r.Result.Result != api.Pending {
		t.Fatalf("upload before the result: %+v %+v; want it refused in the answer as not authorized, the poll answered", r, r.Result)
	}

	res, err := b.Authority.SignResult(code, api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SubmitResult(ctx, res); err != nil {
		t.Fatal(err)
	}
	report := window(cc, pol, now)
	r = exchange("upload under the polled result", client.Daily{Report: report, Secret: tst.Secret, Upload: true})
	if r.UploadError != nil || r.Upload == nil || r.Upload.Sightings != len(report.Sightings) || r.Upload.Keys != len(report.Keys) || r.Upload.Sightings == 0 {
		t.Fatalf("upload under the polled result: %+v, error %v; want %d sightings and %d keys taken", r.Upload, r.UploadError, len(report.Sightings), len(report.Keys))
	}
	if r.Upload.Durable || r.Upload.DurableBy < clk.Now().Unix() {
		t.Errorf("upload: durable %t by %d; want durable later, by the journal's next flush", r.Upload.Durable, r.Upload.DurableBy)
	}
	// The poll in the same exchange sees the upload made, not yet durable.
	if p := r.Result; p.Result != api.Positive || !p.UploadPending || p.Uploaded || p.UploadAuthorization != nil {
		t.Errorf("the poll of the uploading exchange: %+v; want positive, upload pending, no authorization", p)
	}
	durableBy := r.Upload.DurableBy

	// A, whom C met, is exposed at once; its exchange carries no poll.
	ra := exchange("A's check", client.Daily{Report: window(a, pol, now)})
	if !ra.Exposure.Exposed || ra.Exposure.LastExposure != met.Format(api.DateLayout) || ra.Result != nil || ra.Upload != nil {
		t.Fatalf("A after C's upload: %+v; want exposed on %s, nothing else", ra, met.Format(api.DateLayout))
	}

	r = exchange("upload again", client.Daily{Report: report, Secret: tst.Secret, Upload: true})
	if r.UploadError == nil || r.UploadError.Code != api.CodeAlreadyUsed || r.Upload != nil || !r.Result.UploadPending {
		t.Fatalf("the same upload again: %+v %+v; want it refused in the answer as already used", r, r.Result)
	}

	flushUntil(t, b, clk, durableBy)
	r = exchange("poll after the flush", client.Daily{Report: window(cc, pol, now), Secret: tst.Secret})
	if p := r.Result; p.Result != api.Positive || !p.Uploaded || p.UploadPending || p.UploadAuthorization != nil {
		t.Fatalf("poll after the flush: %+v; want positive and uploaded", p)
	}
	// Every exchange was answered, none refused at the gateway.
	for _, e := range w.posts() {
		if e.Status != 200 {
			t.Errorf("exchange %+v not answered", e)
		}
	}
}
