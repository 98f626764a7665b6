package loadbench

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/enclave"
)

// uploadDays is how many daily keys an upload carries: today's and the 13
// days' before, whose sightings it uploads.
const uploadDays = 14

// metPhone is a phone that met an uploader: its keys and its sightings of
// the uploader, which its check carries.
type metPhone struct {
	phone     *phone
	sightings []contactlog.Sighting
}

// filler fills an enclave with uploads, as positive users make them:
// a lab's positive result, the phone's poll for its authorization, and
// the upload in a daily exchange (Enclave.Exchange), the enclave's path.
type filler struct {
	enc       *enclave.Enclave
	lab       *authority.Key
	sightings int // per upload
	checkKeys int // daily keys of a met phone
	seed      uint64
}

// fill uploads pairs sightings in uploads of f.sightings (the last one
// smaller), by workers goroutines, and returns met phones that met the
// uploaders: met of them, spread over the uploads.
func (f *filler) fill(ctx context.Context, pairs, met int) (uploads int, phones []metPhone, err error) {
	uploads = (pairs + f.sightings - 1) / f.sightings
	if met > 0 && uploads == 0 {
		return 0, nil, fmt.Errorf("loadbench: %d met phones need uploads", met)
	}
	today := enid.IntervalOf(f.enc.Now()).RollingStart()
	// Met phone j met the uploader j mod uploads.
	metOf := make([][]int, uploads)
	for j := range met {
		metOf[j%max(uploads, 1)] = append(metOf[j%max(uploads, 1)], j)
	}
	phones = make([]metPhone, met)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range 2 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			rng := mrand.New(mrand.NewChaCha8(seedOf(f.seed, uint64(w)+1)))
			for u := int(next.Add(1) - 1); u < uploads && ctx.Err() == nil; u = int(next.Add(1) - 1) {
				n := min(f.sightings, pairs-u*f.sightings)
				if err := f.upload(ctx, rng, today, n, metOf[u], phones); err != nil {
					mu.Lock()
					ferr = err
					mu.Unlock()
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	if ferr != nil {
		return 0, nil, ferr
	}
	return uploads, phones, ctx.Err()
}

// upload makes one positive phone's upload of n sightings, among them its
// encounters with the met phones of indexes mine, whose keys and
// sightings it sets in phones.
func (f *filler) upload(ctx context.Context, rng *mrand.Rand, today enid.Interval, n int, mine []int, phones []metPhone) error {
	u, err := newPhone(rng, today, uploadDays)
	if err != nil {
		return fmt.Errorf("loadbench: %w", err)
	}
	r := contactlog.Report{Keys: slices.Clone(u.keys), Sightings: make([]contactlog.Sighting, 0, n)}
	for _, j := range mine {
		c, err := newPhone(rng, today, f.checkKeys)
		if err != nil {
			return fmt.Errorf("loadbench: %w", err)
		}
		ofC, ofU := meet(rng, today, u, c)
		phones[j] = metPhone{phone: c, sightings: ofU}
		r.Sightings = append(r.Sightings, ofC...)
	}
	first := today - enid.Interval((uploadDays-1)*enid.RollingPeriod)
	for len(r.Sightings) < n {
		s := contactlog.Sighting{
			Interval:    first + enid.Interval(rng.IntN((uploadDays-1)*enid.RollingPeriod)),
			Minutes:     uint8(1 + rng.IntN(10)),
			Attenuation: uint8(40 + rng.IntN(40)),
		}
		for j := range contactlog.RPIPrefixSize {
			s.Heard[j] = byte(rng.Uint32())
		}
		r.Sightings = append(r.Sightings, s)
	}
	body, err := r.AppendBinary(nil)
	if err != nil {
		return fmt.Errorf("loadbench: encoding an upload: %w", err)
	}
	token, err := f.authorize(ctx)
	if err != nil {
		return err
	}
	resp, err := f.enc.Exchange(ctx, api.ExchangeRequest{Flags: api.ExchangeUpload, Authorization: token, Report: body})
	switch {
	case err != nil:
		return fmt.Errorf("loadbench: upload: %w", err)
	case resp.UploadError != nil:
		return fmt.Errorf("loadbench: upload refused: %v", resp.UploadError)
	}
	return nil
}

// authorize has the lab declare a new test positive and returns the
// upload authorization that polling its result gives.
func (f *filler) authorize(ctx context.Context) ([]byte, error) {
	now := f.enc.Now()
	secret := make([]byte, api.TestSecretSize)
	rand.Read(secret)
	res, err := f.lab.SignResult(api.TestCode(secret), api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	if _, err := f.enc.SubmitResult(ctx, res); err != nil {
		return nil, fmt.Errorf("loadbench: submitting a result: %w", err)
	}
	pr, err := f.enc.PollResult(ctx, api.PollResultRequest{Secret: secret})
	if err != nil || len(pr.UploadAuthorization) == 0 {
		return nil, fmt.Errorf("loadbench: polling a positive result: %+v, %v", pr, err)
	}
	return pr.UploadAuthorization, nil
}
