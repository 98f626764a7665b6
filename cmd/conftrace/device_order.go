package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
)

// noteOrderAuthorization tells the user, on stderr, that an exposure
// answer lets the device warn its own contacts.
func noteOrderAuthorization(cio cmdIO, resp api.ExposureResponse) {
	if resp.OrderAuthorization == nil {
		return
	}
	fmt.Fprintf(cio.stderr, "you may warn your own contacts since %s as exposed at order %d: run device upload, with your consent, by %s\n",
		resp.UploadFrom, resp.Order+1, time.Unix(resp.OrderAuthorizationExpiresAt, 0).UTC().Format(time.RFC3339))
}

// uploadOrder uploads the device's report under the order authorization
// it saved from an exposure check: as a source of the next order, in the
// same daily exchange as any other (the same report as its check, which
// the backend cuts to the days from the exposing day on). Without one it
// returns errNoAuthorization.
func uploadOrder(ctx context.Context, cio cmdIO, d *device.Device) error {
	o, err := d.OrderAuthorization()
	switch {
	case errors.Is(err, device.ErrNoOrderAuthorization):
		return errNoAuthorization
	case err != nil:
		return err
	}
	c, err := deviceClient(ctx, cio, d)
	if err != nil {
		return err
	}
	now := time.Now()
	if len(d.Keys(enid.IntervalOf(c.Policy().WindowStart(now)), enid.IntervalOf(now)+1)) == 0 {
		return fmt.Errorf("nothing to upload: the device broadcast nothing in the last %d days", c.Policy().RetentionDays)
	}
	ex, err := dailyExchange(ctx, d, c, exchangeParts{order: o.Token})
	if err != nil {
		return refused("the upload", err)
	}
	switch {
	case ex.UploadError != nil:
		return refused("the upload", ex.UploadError)
	case ex.Upload == nil:
		return errors.New("the backend's answer says neither accepted nor refused")
	}
	resp := *ex.Upload
	fmt.Fprintf(cio.stdout, "accepted %s, %s as a source of order %d\n", plural(resp.Sightings, "sighting"), plural(resp.Keys, "daily key"), o.Order)
	if !resp.Durable {
		fmt.Fprintf(cio.stderr, "the upload becomes durable by %s\n", time.Unix(resp.DurableBy, 0).UTC().Format(time.RFC3339))
	}
	return nil
}
