package restartbench

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/benchreport"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store/sqlite"
	"github.com/conftrace/conftrace/policy"
)

// The fill's flush rule: the national policy's sizes (see the README), but
// a flush period of one second of the enclave's clock, which the fill
// moves by a period every flushEvery of real time, and a hold of one
// flush, so that the size follows the backlog. The filler rows the
// flushes write when few rows wait are then a few percent of the store.
const (
	flushRows    = 32
	flushMaxRows = 32 << 11
	flushEvery   = 250 * time.Millisecond
)

// maxUploadSightings bounds Config.Sightings: what one request carries.
const maxUploadSightings = policy.MaxSightingsPerRequest

// start is the enclave's time when the fill begins: early in a day, so
// that the fill's flushes, a second of the enclave's clock each, stay on
// that day.
var start = time.Date(2026, 3, 10, 0, 1, 0, 0, time.UTC)

// filled is a store the fill made, and what reopens it.
type filled struct {
	dir     string
	key     [seal.KeySize]byte
	policy  policy.Policy
	at      time.Time // the enclave's time at the end of the fill
	uploads int
	elapsed time.Duration
}

// simClock is the enclave's clock during the fill.
type simClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *simClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// filler is a fill in progress.
type filler struct {
	cfg     Config
	lab     *authority.Key
	clock   *simClock
	enc     *enclave.Enclave
	next    atomic.Int64
	uploads int

	mu      sync.Mutex
	secrets [][]byte // of the phones that uploaded
}

// fill opens the enclave over a new store in dir, sealed under key, and
// uploads cfg.Pairs sightings through it until every upload is durable.
func fill(ctx context.Context, cfg Config, dir string, key [seal.KeySize]byte) (*filled, error) {
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		return nil, fmt.Errorf("restartbench: %w", err)
	}
	pol := policy.Default()
	pol.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	pol.StoreFlushSeconds, pol.StoreFlushRows, pol.StoreFlushMaxRows, pol.StoreFlushHold = 1, flushRows, flushMaxRows, 1
	pol.Limits.MaxUploadSightings = max(pol.Limits.MaxUploadSightings, cfg.Sightings)
	if err := pol.Validate(); err != nil {
		return nil, fmt.Errorf("restartbench: %w", err)
	}
	st, err := sqlite.Open(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("restartbench: %w", err)
	}
	defer st.Close()
	f := &filler{cfg: cfg, lab: lab, clock: &simClock{t: start}, uploads: (cfg.Pairs + cfg.Sightings - 1) / cfg.Sightings}
	f.enc, err = enclave.Open(ctx, enclave.Config{Policy: pol, Store: st, SealingKey: key, HostClock: f.clock.now, Logger: logger(cfg)})
	if err != nil {
		return nil, fmt.Errorf("restartbench: %w", err)
	}
	began := time.Now()
	if err := f.run(ctx); err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("restartbench: closing the store: %w", err)
	}
	return &filled{dir: dir, key: key, policy: pol, at: f.clock.now(), uploads: f.uploads, elapsed: time.Since(began)}, nil
}

// run has cfg.Clients goroutines upload while another flushes every
// flushEvery, then flushes until every upload is durable.
func (f *filler) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range f.cfg.Clients {
		wg.Go(func() {
			for i := int(f.next.Add(1) - 1); i < f.uploads && ctx.Err() == nil; i = int(f.next.Add(1) - 1) {
				if err := f.upload(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	sent := make(chan struct{})
	go func() {
		wg.Wait()
		close(sent)
	}()
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
		case <-sent:
			done = true
		case <-ctx.Done():
			<-sent
			return context.Cause(ctx)
		}
		if err := f.flush(ctx); err != nil {
			cancel(err)
			<-sent
			return err
		}
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return f.flushUntilDurable(ctx)
}

// flush makes the flush of the next period of the enclave's clock.
func (f *filler) flush(ctx context.Context) error {
	f.clock.advance(time.Second)
	if err := f.enc.FlushDue(ctx); err != nil {
		return fmt.Errorf("restartbench: flush: %w", err)
	}
	return nil
}

// flushUntilDurable flushes, back to back, until every upload is durable.
func (f *filler) flushUntilDurable(ctx context.Context) error {
	waiting := f.secrets
	for len(waiting) > 0 {
		if err := f.flush(ctx); err != nil {
			return err
		}
		var still [][]byte
		for _, s := range waiting {
			pr, err := f.enc.PollResult(ctx, api.PollResultRequest{Secret: slices.Clone(s)})
			if err != nil {
				return fmt.Errorf("restartbench: poll: %w", err)
			}
			if !pr.Uploaded {
				still = append(still, s)
			}
		}
		waiting = still
	}
	return nil
}

// upload makes phone i's upload: its lab's positive result, its poll for
// the authorization, and the upload of its report.
func (f *filler) upload(ctx context.Context, i int) error {
	now := f.clock.now()
	secret := make([]byte, api.TestSecretSize)
	rand.Read(secret)
	res, err := f.lab.SignResult(api.TestCode(secret), api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		return fmt.Errorf("restartbench: %w", err)
	}
	if _, err := f.enc.SubmitResult(ctx, res); err != nil {
		return fmt.Errorf("restartbench: submitting a result: %w", err)
	}
	pr, err := f.enc.PollResult(ctx, api.PollResultRequest{Secret: slices.Clone(secret)})
	if err != nil || len(pr.UploadAuthorization) == 0 {
		return fmt.Errorf("restartbench: polling a positive result: %+v, %v", pr, err)
	}
	n := min(f.cfg.Sightings, f.cfg.Pairs-i*f.cfg.Sightings)
	report, err := benchreport.Random(mrand.New(mrand.NewChaCha8(benchreport.Seed(f.cfg.Seed, uint64(i)))), start, n)
	if err != nil {
		return err
	}
	if _, err := f.enc.Upload(ctx, api.UploadRequest{Authorization: pr.UploadAuthorization, Report: report}); err != nil {
		return fmt.Errorf("restartbench: upload %d: %w", i, err)
	}
	f.mu.Lock()
	f.secrets = append(f.secrets, secret)
	f.mu.Unlock()
	return nil
}
