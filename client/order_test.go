package client_test

import (
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// n-order notifications through the SDK: A, exposed by C's upload, keeps
// the order authorization of its answer and uploads under it with
// Client.Upload; B, whom A met after, learns it was exposed at order 2,
// and on the wire every answer has one size.
func TestOrderFlow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	pol := policy.Default()
	pol.Orders = policy.DefaultOrders(2, pol.Risk.MinimumWeightedMinutes)
	b := startBackend(t, localbackend.Config{Now: clk.Now, Policy: &pol})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	now := clk.Now()
	if c.Policy().MaxOrder() != 2 {
		t.Fatalf("the attested policy's max order is %d, want 2", c.Policy().MaxOrder())
	}
	a, bb, cc := newDevice(t, b.URL), newDevice(t, b.URL), newDevice(t, b.URL)
	meet(t, a, cc, now.Add(-50*time.Hour).Truncate(time.Hour), 20)
	meet(t, bb, a, now.Add(-30*time.Hour).Truncate(time.Hour), 40)

	r, err := c.CheckExposure(ctx, window(bb, c.Policy(), now))
	if err != nil || r.Exposed || r.Order != 0 {
		t.Fatalf("B before any upload: %+v, %v", r, err)
	}
	notExposedWire := w.last(t)

	secret := positive(t, c, b.Authority, cc, now)
	pr, err := c.PollResult(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Upload(ctx, pr.UploadAuthorization, window(cc, c.Policy(), now)); err != nil {
		t.Fatal(err)
	}
	r, err = c.CheckExposure(ctx, window(a, c.Policy(), now))
	if err != nil || r.Order != 1 || len(r.OrderAuthorization) != api.AuthorizationSize {
		t.Fatalf("A after C's upload: %+v, %v; want order 1 with an order authorization", r, err)
	}
	if got := w.last(t); got.RespSize != notExposedWire.RespSize {
		t.Errorf("answers of %d (with an authorization) and %d bytes (not exposed) differ", got.RespSize, notExposedWire.RespSize)
	}
	if err := a.RecordExposure(r); err != nil {
		t.Fatal(err)
	}
	o, err := a.OrderAuthorization()
	if err != nil || o.Order != 2 {
		t.Fatalf("A keeps %+v, %v", o, err)
	}
	up, err := c.Upload(ctx, o.Token, window(a, c.Policy(), now))
	if err != nil || up.Sightings == 0 {
		t.Fatalf("A's order-2 upload: %+v, %v", up, err)
	}
	if _, err := c.Upload(ctx, o.Token, window(a, c.Policy(), now)); !isCode(err, api.CodeAlreadyUsed) {
		t.Errorf("A's second order-2 upload: %v, want %s", err, api.CodeAlreadyUsed)
	}
	r, err = c.CheckExposure(ctx, window(bb, c.Policy(), now))
	if err != nil || !r.Exposed || r.Order != 2 || r.OrderAuthorization != nil {
		t.Fatalf("B after A's upload: %+v, %v; want order 2, no authorization (max order 2)", r, err)
	}
	if got := w.last(t); got.RespSize != notExposedWire.RespSize {
		t.Errorf("answers of %d (exposed at order 2) and %d bytes (not exposed) differ", got.RespSize, notExposedWire.RespSize)
	}
}
