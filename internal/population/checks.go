package population

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
)

// checker runs a day's exchanges, or GPS checks, concurrently.
type checker struct {
	workers int // Config.Workers
	clock   *simClock
	// retries counts checks asked again because the backend's day
	// changed while they were under way (live backends only).
	retries atomic.Int64
}

// each runs check(ctx, j, now) for every j in [0, n) on c.workers
// goroutines and returns the first error, after which it stops. now is
// checkAt, or with a live backend the real time of the check; a live check
// during which the backend's day changed is run again, since which window
// the backend answered for is then unknown.
func (c *checker) each(ctx context.Context, n int, checkAt time.Time, check func(ctx context.Context, j int, now time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		err     error
	)
	for range c.workers {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= n || ctx.Err() != nil {
					return
				}
				if e := c.one(ctx, j, checkAt, check); e != nil {
					errOnce.Do(func() { err = e; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return err
}

// one runs check j, again as long as a live backend's day changes during
// it.
func (c *checker) one(ctx context.Context, j int, checkAt time.Time, check func(ctx context.Context, j int, now time.Time) error) error {
	for {
		now := checkAt
		if c.clock.live {
			now = time.Now()
		}
		if err := check(ctx, j, now); err != nil {
			return err
		}
		if c.clock.live && !c.clock.sameWindow(now, time.Now()) {
			c.retries.Add(1)
			continue
		}
		return nil
	}
}

// record counts device i's check of day d: the backend answered got, the
// protocol requires want, and cause is the case that exposed it, or -1.
func (w *world) record(i, d int, got, want api.ExposureResponse, cause int) {
	s := w.sum
	s.Checks++
	s.Requests++
	switch {
	case want.Exposed && !got.Exposed:
		s.MissedNotifications++
	case got.Exposed && !want.Exposed:
		s.FalseNotifications++
	}
	if !sameAnswer(got, want) {
		s.MismatchedAnswers++
	}
	ph := &w.people[i].phone
	if got.Exposed && ph.firstNotified < 0 {
		ph.firstNotified = d
		s.Daily[d].NewlyNotified++
		s.Notified++
		if cause >= 0 {
			s.addDelay(d - w.oracle.testDay(cause))
		}
	}
	w.countRules(i, got)
	w.countOrder(i, got)
	if want.Exposed && w.oracle.mustNotify(i) {
		s.ShouldBeNotified++
	}
}

// countRules counts device i among the devices notified by a rule the
// first time the backend tells it "exposed" with that rule among those
// that matched on its exposed days, which every answer, coarse or
// detailed, says.
func (w *world) countRules(i int, got api.ExposureResponse) {
	by := &w.people[i].phone.notifiedBy
	if got.Exposed && got.Reciprocal && !by.reciprocal {
		by.reciprocal = true
		w.sum.NotifiedReciprocal++
	}
	if got.Exposed && got.OneSided && !by.oneSided {
		by.oneSided = true
		w.sum.NotifiedOneSided++
	}
}

// sameAnswer reports whether two exposure answers agree in everything
// they carry: the verdict, the last exposed day and the rules, in
// detailed answers every figure of every day, and the order with its
// authorization (sameOrder).
func sameAnswer(a, b api.ExposureResponse) bool {
	return a.Exposed == b.Exposed && a.LastExposure == b.LastExposure && a.Reciprocal == b.Reciprocal &&
		a.OneSided == b.OneSided && slices.Equal(a.Days, b.Days) && sameOrder(a, b)
}
