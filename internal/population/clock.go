package population

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/policy"
)

// The minutes of a day at which the phases of the Bluetooth side happen;
// GPS has its own (gpsUploadMinute, gpsCheckMinute).
const (
	morningMinute = 8 * 60     // Config.Daily runs
	testMinute    = 10 * 60    // tests are taken
	resultMinute  = 23 * 60    // the authority signs the day's results
	importMinute  = 23*60 + 20 // the day's GAEN export is imported
	// checkMinute is when phones make their daily exchange (exchange.go):
	// after the day's results, so that a phone learns a result the day
	// the authority signs it.
	checkMinute = 23*60 + 30
)

// simClock maps the simulation's days and minutes to the backend's time
// and back. With a simulated backend it moves the backend's clock, and the
// client's, as the simulation goes; a live backend keeps real time.
type simClock struct {
	start time.Time // midnight UTC of day 0
	live  bool
	// now is the simulated time (Unix nanoseconds), which the client
	// follows; unused with a live backend.
	now *atomic.Int64
	set func(time.Time) // Config.SetClock
	// flush is Config.Flush: after every move of the clock, the backend
	// writes what the new time says is due.
	flush func(context.Context) error
	// pol says where the backend's retention window lies.
	pol policy.Policy
}

// at returns the simulated time of minute min of day d.
func (c *simClock) at(d, min int) time.Time {
	return c.start.Add(time.Duration(d)*24*time.Hour + time.Duration(min)*time.Minute)
}

// weekday reports whether day d is a Monday to Friday.
func (c *simClock) weekday(d int) bool {
	wd := c.at(d, 0).Weekday()
	return wd != time.Saturday && wd != time.Sunday
}

// advance returns the backend's time for what the simulation does at
// minute min of day d: the simulated time, to which it moves the
// backend's clock, or the real time with a live backend.
func (c *simClock) advance(ctx context.Context, d, min int) (time.Time, error) {
	return c.advanceTo(ctx, c.at(d, min))
}

// advanceTo moves the backend's clock to t, which must not be before the
// current simulated time, and has the backend make the journal flushes
// due by then (Config.Flush), before anything happens at t: a deployed
// backend flushes every second, whatever its requests. With a live
// backend it returns the real time and moves nothing.
func (c *simClock) advanceTo(ctx context.Context, t time.Time) (time.Time, error) {
	if c.live {
		return time.Now(), nil
	}
	c.now.Store(t.UnixNano())
	c.set(t)
	if c.flush != nil {
		if err := c.flush(ctx); err != nil {
			return t, fmt.Errorf("population: %s: the backend's journal flush: %w", t.Format(time.DateTime), err)
		}
	}
	return t, nil
}

// current returns the backend's time now, without moving it: the
// simulated time, or the real time with a live backend.
func (c *simClock) current() time.Time {
	if c.live {
		return time.Now()
	}
	return time.Unix(0, c.now.Load()).UTC()
}

// firstDay returns the first simulation day (at least 0) of the backend's
// retention window at now.
func (c *simClock) firstDay(now time.Time) int {
	return max(0, c.dayOf(c.pol.WindowStart(now)))
}

// uploadFirst returns the first day an upload sent at now may hold; with
// a live backend it allows for the request crossing UTC midnight.
func (c *simClock) uploadFirst(now time.Time) int {
	if c.live {
		now = now.Add(liveSkew)
	}
	return c.firstDay(now)
}

// sameWindow reports whether the backend's retention window was the same
// at a and b: then it was the same all the time between.
func (c *simClock) sameWindow(a, b time.Time) bool {
	return c.pol.WindowStart(a).Equal(c.pol.WindowStart(b))
}

// dayOf returns the simulation day of t (may be negative).
func (c *simClock) dayOf(t time.Time) int {
	return int(math.Floor(t.Sub(c.start).Hours() / 24))
}
