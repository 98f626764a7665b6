package device

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
)

// TestOrderAuthorization: a device keeps the order authorization of the
// last exposure answer that carried one, as for the next order, and
// forgets it when an answer carries none; a malformed one is refused.
func TestOrderAuthorization(t *testing.T) {
	d, err := Create(t.Context(), filepath.Join(t.TempDir(), "d"), Config{Server: "http://unused.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.OrderAuthorization(); !errors.Is(err, ErrNoOrderAuthorization) {
		t.Fatalf("a new device: %v, want ErrNoOrderAuthorization", err)
	}
	token := bytes.Repeat([]byte{7}, api.AuthorizationSize)
	expires := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	resp := api.ExposureResponse{Exposed: true, Order: 1, OrderAuthorization: token, OrderAuthorizationExpiresAt: expires.Unix(), UploadFrom: "2026-02-27"}
	if err := d.RecordExposure(resp); err != nil {
		t.Fatal(err)
	}
	// Kept across a reopening, as the device's state.
	d, err = Open(t.Context(), d.Dir())
	if err != nil {
		t.Fatal(err)
	}
	o, err := d.OrderAuthorization()
	if err != nil || !bytes.Equal(o.Token, token) || o.Order != 2 || !o.ExpiresAt.Equal(expires) || o.UploadFrom != "2026-02-27" {
		t.Fatalf("kept %+v, %v; want the token for order 2 from 2026-02-27", o, err)
	}
	if err := d.RecordExposure(api.ExposureResponse{Exposed: true, Order: 1, OrderAuthorization: token[:5]}); err == nil {
		t.Error("a 5-byte authorization was kept")
	}
	if err := d.RecordExposure(api.ExposureResponse{Exposed: true, Order: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.OrderAuthorization(); !errors.Is(err, ErrNoOrderAuthorization) {
		t.Errorf("after an answer without one: %v, want ErrNoOrderAuthorization", err)
	}
	if err := d.RecordExposure(api.ExposureResponse{}); err != nil {
		t.Errorf("forgetting none: %v", err)
	}
}
