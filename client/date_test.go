package client_test

import (
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/localbackend"
)

// A phone whose clock runs minutes ahead of the gateway's (or a gateway
// whose trusted time an authority's statement moved ahead) has its first
// request refused as stale; it takes the gateway's time from the refusal
// and sends once more, and later requests go through at once.
func TestClockOffCorrectedOnce(t *testing.T) {
	backendClock := newClock()
	b := startBackend(t, localbackend.Config{Now: backendClock.Now})
	phoneClock := &clock{now: backendClock.Now().Add(4 * time.Minute)}
	w := &wire{}
	c := newClient(t, b.URL, b, w, phoneClock.Now)

	if err := c.Decoy(t.Context(), 100); err != nil {
		t.Fatalf("a request 4 minutes ahead of the gateway: %v, want it answered after one correction", err)
	}
	if n := len(w.posts()); n != 2 {
		t.Errorf("%d requests on the wire for the first, want 2: the refused one and its resend", n)
	}
	if err := c.Decoy(t.Context(), 100); err != nil {
		t.Fatal(err)
	}
	if n := len(w.posts()); n != 3 {
		t.Errorf("%d requests on the wire after the second, want 3: the clock stays corrected", n)
	}

	// The gateway's clock jumps while the phone's stands: corrected again.
	backendClock.Add(3 * time.Minute)
	if err := c.Decoy(t.Context(), 100); err != nil {
		t.Fatalf("after the gateway's clock moved: %v", err)
	}

}
