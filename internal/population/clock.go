package population

import (
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
	pollMinute    = 23*60 + 10 // phones poll results and upload
	importMinute  = 23*60 + 20 // the day's GAEN export is imported
	checkMinute   = 23*60 + 30 // phones check for exposure
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
func (c *simClock) advance(d, min int) time.Time {
	if c.live {
		return time.Now()
	}
	t := c.at(d, min)
	c.now.Store(t.UnixNano())
	c.set(t)
	return t
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
