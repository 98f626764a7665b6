package device

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/conftrace/conftrace/api"
)

// orderFile holds the device's order authorization, when it has one.
const orderFile = "order.json"

// OrderAuthorization is what a device keeps of the authorization an
// exposure answer handed out (n-order notifications): with it, and its
// user's consent, the device uploads its own report as a source of Order,
// so that its contacts learn they were exposed at that order. No health
// authority is involved; the backend hands out one per exposure.
type OrderAuthorization struct {
	// Token is the authorization, sent as an exchange's upload
	// authorization.
	Token []byte `json:"token"`
	// Order is the order the upload will be a source of: one more than
	// the order the device was exposed at.
	Order int `json:"order"`
	// ExpiresAt is when the backend stops accepting Token; the next
	// exposure check hands out a new one while the exposure lasts.
	ExpiresAt time.Time `json:"expires_at"`
	// UploadFrom is the exposing day (YYYY-MM-DD): the backend takes the
	// keys and sightings of that day and later only.
	UploadFrom string `json:"upload_from"`
}

// RecordExposure keeps the order authorization of an exposure answer, or,
// when the answer carries none, forgets the one kept: the backend hands
// one out in every answer while it can be used, so its absence means it
// was used, or the exposure left the window, or there is none.
func (d *Device) RecordExposure(resp api.ExposureResponse) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	path := filepath.Join(d.dir, orderFile)
	if resp.OrderAuthorization == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("device: %w", err)
		}
		return nil
	}
	if len(resp.OrderAuthorization) != api.AuthorizationSize || resp.Order < 1 {
		return fmt.Errorf("device: an order authorization of %d bytes at order %d: want %d bytes, order 1 or more", len(resp.OrderAuthorization), resp.Order, api.AuthorizationSize)
	}
	return writeJSON(path, OrderAuthorization{Token: resp.OrderAuthorization, Order: resp.Order + 1,
		ExpiresAt: time.Unix(resp.OrderAuthorizationExpiresAt, 0).UTC(), UploadFrom: resp.UploadFrom})
}

// ErrNoOrderAuthorization is returned by [Device.OrderAuthorization] when
// the device holds none.
var ErrNoOrderAuthorization = errors.New("device: no order authorization (an exposure check hands one out to a phone exposed below the policy's max_order)")

// OrderAuthorization returns the order authorization the device keeps.
func (d *Device) OrderAuthorization() (OrderAuthorization, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var o OrderAuthorization
	err := readJSON(filepath.Join(d.dir, orderFile), &o)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return o, ErrNoOrderAuthorization
	case err != nil:
		return o, err
	case len(o.Token) != api.AuthorizationSize:
		return o, fmt.Errorf("device: %s: a token of %d bytes, want %d", orderFile, len(o.Token), api.AuthorizationSize)
	}
	return o, nil
}
