package client_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/policy"
)

// Evidence is only as good as it is fresh: whoever once extracted a
// backend's OHTTP private key (from a platform a TCB recovery has since
// fixed) could otherwise replay its bundle forever. A client refuses a
// bundle past its not_after, one issued in the future beyond a few minutes
// of clock skew, and one valid for longer than the attested policy's
// bundle_hours allow.
func TestNewRefusesStaleBundles(t *testing.T) {
	t.Parallel()
	now := time.Now()
	doc, err := policy.Default().Canonical() // bundle_hours 24
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name               string
		issuedAt, notAfter time.Time
		want               error
	}{
		{"fresh", now.Add(-time.Hour), now.Add(23 * time.Hour), nil},
		{"from a clock a few minutes ahead", now.Add(4 * time.Minute), now.Add(24 * time.Hour), nil},
		{"past not_after", now.Add(-25 * time.Hour), now.Add(-time.Hour), attest.ErrBundleExpired},
		{"replayed a year later", now.AddDate(-1, 0, -1), now.AddDate(-1, 0, 0), attest.ErrBundleExpired},
		{"from the future", now.Add(10 * time.Minute), now.Add(24 * time.Hour), attest.ErrBundleNotYetValid},
		{"valid longer than the policy allows", now.Add(-time.Hour), now.Add(47 * time.Hour), client.ErrBundleLifetime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, http.StatusOK, marshal(t, forgeBundleAt(t, testMeasurement, nil, doc, tc.issuedAt, tc.notAfter, nil)))
			c, err := client.New(t.Context(), client.Config{Server: url, Expectations: expectations()})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if from, until := c.Validity(); from.Unix() != tc.issuedAt.Unix() || until.Unix() != tc.notAfter.Unix() {
					t.Errorf("Validity() = %v, %v; want %v, %v", from, until, tc.issuedAt, tc.notAfter)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: %v, want %v", err, tc.want)
			}
		})
	}
}

// A long-lived client whose bundle expires, against a backend that serves
// nothing newer (its host stopped its maintenance and kept an old bundle
// to replay), refuses to send: it does not keep using the expired key.
func TestClientRefusesToOutliveItsBundle(t *testing.T) {
	t.Parallel()
	clk := newClock()
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	issued := clk.Now()
	url := serve(t, http.StatusOK, marshal(t, forgeBundleAt(t, testMeasurement, nil, doc, issued, issued.Add(24*time.Hour), nil)))
	c, err := client.New(t.Context(), client.Config{Server: url, Expectations: expectations(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(24 * time.Hour)
	if err := c.Decoy(t.Context(), 0); !errors.Is(err, attest.ErrBundleExpired) {
		t.Fatalf("a request once the bundle expired: %v, want %v (and no request sent)", err, attest.ErrBundleExpired)
	}
}
