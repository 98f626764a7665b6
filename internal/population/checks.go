package population

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
)

// checker runs a day's checks, Bluetooth or GPS, concurrently.
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

// checkExposures has every app user check its report of the retention
// window (daily keys and sightings) for exposure on day d, and compares
// every answer, day by day, with the oracle's.
func (w *world) checkExposures(ctx context.Context, d int) error {
	checkAt := w.clock.advance(d, checkMinute)
	var users []int
	for i := range w.people {
		if w.people[i].app {
			users = append(users, i)
		}
	}
	// got[i] is the backend's answer to device i, and at[i] the time
	// whose retention window the check followed.
	got := make([]api.ExposureResponse, len(w.people))
	at := make([]time.Time, len(w.people))
	err := w.checker.each(ctx, len(users), checkAt, func(ctx context.Context, j int, now time.Time) error {
		i := users[j]
		r, err := w.radio.report(&w.people[i].phone, i, w.clock.firstDay(now), d)
		if err != nil {
			return err
		}
		resp, err := w.backend.CheckExposure(withDevice(ctx, i), r)
		if err != nil {
			return fmt.Errorf("population: day %d: checking exposure: %w", d, err)
		}
		got[i], at[i] = resp, now
		return nil
	})
	if err != nil {
		return err
	}
	for _, i := range users {
		want, cause := w.oracle.expected(i, d, at[i])
		w.record(i, d, got[i], want, cause)
	}
	return nil
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
	if want.Exposed && w.oracle.mustNotify(i) {
		s.ShouldBeNotified++
	}
}

// countRules counts device i among the devices notified by a rule the
// first time the backend tells it "exposed" on a day that rule matched.
func (w *world) countRules(i int, got api.ExposureResponse) {
	by := &w.people[i].phone.notifiedBy
	for _, day := range got.Days {
		if !day.Exposed {
			continue
		}
		if day.Reciprocal && !by.reciprocal {
			by.reciprocal = true
			w.sum.NotifiedReciprocal++
		}
		if day.OneSided && !by.oneSided {
			by.oneSided = true
			w.sum.NotifiedOneSided++
		}
	}
}

// sameAnswer reports whether two exposure answers agree in every figure
// of every day.
func sameAnswer(a, b api.ExposureResponse) bool {
	return a.Exposed == b.Exposed && slices.Equal(a.Days, b.Days)
}
