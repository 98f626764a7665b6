// Package calendar numbers the calendar days in UTC from the Unix epoch.
// A day is the backend's unit of sealing and of retention: each day's
// records are sealed under that day's data key, the match indexes drop
// whole days, and the store deletes them. Every package that deals in days
// uses this one type, so that a day means the same thing everywhere.
package calendar

import (
	"math"
	"time"
)

// Day is a calendar day in UTC, numbered from the Unix epoch: day 0 is
// 1970-01-01, day 18362 is 2020-04-10.
type Day uint32

// secondsPerDay is the length of a UTC day in Unix time, which has no leap
// seconds.
const secondsPerDay = 86400

// DayOf returns the UTC day that contains t, whatever t's location. Times
// before the epoch are day 0; the backend refuses such times before it asks.
func DayOf(t time.Time) Day { return DayOfUnix(t.Unix()) }

// DayOfUnix returns the UTC day that contains the Unix time sec. Times
// before the epoch are day 0 and times past the last Day are the last Day,
// so that no time wraps around to an unrelated day.
func DayOfUnix(sec int64) Day {
	switch {
	case sec < 0:
		return 0
	case sec/secondsPerDay > math.MaxUint32:
		return math.MaxUint32
	}
	return Day(sec / secondsPerDay)
}

// Time returns the start of the day, midnight UTC.
func (d Day) Time() time.Time { return time.Unix(int64(d)*secondsPerDay, 0).UTC() }

// Unix returns the start of the day in Unix time.
func (d Day) Unix() int64 { return int64(d) * secondsPerDay }

// String returns the day as a date, e.g. "2020-04-10".
func (d Day) String() string { return d.Time().Format(time.DateOnly) }
