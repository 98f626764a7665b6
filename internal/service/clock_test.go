package service_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/policy"
)

// The gateway's replay guard dates requests by the enclave's clock, not
// the host's: a host that puts its clock back, while the backend runs or
// for a restart, does not reopen the window of requests it could replay.
// The client here dates its requests by the host's clock, as a relay
// replaying old requests would: each such request is refused as stale
// (the client then takes the gateway's time from the refusal and sends
// once more, dated by the enclave's clock).
func TestGatewayKeepsTrustedTime(t *testing.T) {
	ctx := context.Background()
	// Bundles valid for a week, so that the client's key outlives the
	// two days the clock moves, and its requests reach the replay guard.
	p := policy.Default()
	p.BundleHours = 168
	w := newWorldWithPolicy(t, &p)
	start := w.now
	clientNow := start
	var posts int
	newClient := func() *client.Client {
		t.Helper()
		c, err := client.New(ctx, client.Config{Server: w.b.URL, Expectations: w.b.Expectations(),
			Now: func() time.Time { return clientNow }, HTTPClient: &http.Client{Transport: postCounter{&posts}}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// decoy sends one decoy and returns how many of its requests the
	// gateway refused as stale: a decoy is one request, and the client
	// sends it once more only after a stale refusal.
	decoy := func(c *client.Client) int {
		t.Helper()
		before := posts
		if err := c.Decoy(ctx, 0); err != nil {
			t.Fatal(err)
		}
		return posts - before - 1
	}
	c := newClient()
	if n := decoy(c); n != 0 {
		t.Fatalf("%d requests refused as stale with both clocks at the same time", n)
	}
	// Two days on; maintenance seals the time.
	w.now = start.Add(48 * time.Hour)
	if err := w.b.Service.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	w.now, clientNow = start, start
	if n := decoy(c); n != 1 {
		t.Errorf("a request dated at the host's clock, put back two days while the backend runs: %d refused as stale, want 1", n)
	}

	w.restart()
	clientNow = start.Add(48 * time.Hour) // to fetch and check the bundle
	c = newClient()
	clientNow = start
	if n := decoy(c); n != 1 {
		t.Errorf("a request dated at the host's clock, put back two days for a restart: %d refused as stale, want 1", n)
	}
	if n := decoy(c); n != 0 {
		t.Errorf("a request dated by the gateway's time, once the client took it: %d refused as stale", n)
	}
}

// postCounter counts the requests posted to the gateway.
type postCounter struct{ n *int }

func (p postCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost {
		*p.n++
	}
	return http.DefaultTransport.RoundTrip(r)
}
