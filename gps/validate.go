package gps

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Limits bound what a trace may contain. The zero value of each field
// means its default, so Limits{} is the usual choice.
type Limits struct {
	// MaxPoints is the most points a trace may have. Default 120,960:
	// 14 days at one fix every 10 seconds.
	MaxPoints int
	// MaxBytes is the most bytes ParseCSV and ParseGPX read. Default
	// 64 MiB, room for MaxPoints in verbose GPX.
	MaxBytes int64
	// MaxSpeed, in metres per second, bounds the speed between
	// consecutive fixes. Default 1,000 km/h: airliners cruise at up to
	// about 950 km/h, and nothing a person travels in on the ground is
	// faster, so anything beyond is a broken or forged trace.
	MaxSpeed float64
	// MaxAccuracy, in metres, is the worst accuracy a fix may report.
	// Default 500 m: beyond, the fix is a cell-tower or IP guess that
	// cannot place anyone within metres of anyone.
	MaxAccuracy float64
	// Now returns the current time, for refusing fixes from the future.
	// Default time.Now.
	Now func() time.Time
	// MaxSkew is how far in the future of Now a fix may be, for clock
	// differences. Default 5 minutes.
	MaxSkew time.Duration
}

// JumpSlack is the distance, in metres, that consecutive fixes of different
// seconds may be apart beyond what MaxSpeed allows: GPS fixes jump by tens
// of metres between buildings even when the phone stands still.
const JumpSlack = 100.0

// SameTimeSlack is the distance, in metres, that fixes with the same
// timestamp may be apart: a receiver's noise, as when a trace's timestamps
// are rounded.
const SameTimeSlack = 25.0

// Defaults of [Limits].
const (
	DefaultMaxPoints   = 14 * 24 * 60 * 60 / 10
	DefaultMaxBytes    = 64 << 20
	DefaultMaxSpeed    = 1000 / 3.6
	DefaultMaxAccuracy = 500.0
	DefaultMaxSkew     = 5 * time.Minute
)

func (l Limits) withDefaults() Limits {
	if l.MaxPoints <= 0 {
		l.MaxPoints = DefaultMaxPoints
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if !(l.MaxSpeed > 0) {
		l.MaxSpeed = DefaultMaxSpeed
	}
	if !(l.MaxAccuracy > 0) {
		l.MaxAccuracy = DefaultMaxAccuracy
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.MaxSkew <= 0 {
		l.MaxSkew = DefaultMaxSkew
	}
	return l
}

// Errors that [Trace.Validate] and the parsers report, wrapped in a
// [*PointError] when they concern one point.
var (
	ErrLatitude      = errors.New("gps: latitude outside [-90, 90]")
	ErrLongitude     = errors.New("gps: longitude outside [-180, 180]")
	ErrAccuracy      = errors.New("gps: accuracy negative or too large")
	ErrTime          = errors.New("gps: invalid time")
	ErrOrder         = errors.New("gps: timestamp earlier than the previous point's")
	ErrFuture        = errors.New("gps: timestamp in the future")
	ErrSpeed         = errors.New("gps: impossible speed from the previous point")
	ErrTooManyPoints = errors.New("gps: too many points")
	ErrTooLarge      = errors.New("gps: input too large")
	ErrSyntax        = errors.New("gps: syntax error")
)

// PointError is an error about one point of a trace.
type PointError struct {
	// Index is the point's position in the trace, from 0.
	Index int
	// Line is the input line the point came from, from 1; 0 when the
	// trace was not parsed from text.
	Line int
	// Err is the sentinel error saying what is wrong, with details.
	Err error
}

func (e *PointError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("point %d (line %d): %v", e.Index, e.Line, e.Err)
	}
	return fmt.Sprintf("point %d: %v", e.Index, e.Err)
}

func (e *PointError) Unwrap() error { return e.Err }

// minTime is the earliest time a fix may have: 2000-01-01. GPS traces of
// contact tracing are recent; anything older is a unit mistake.
const minTime = 946_684_800

// checkPoint checks what does not depend on other points or on limits
// besides accuracy.
func checkPoint(p Point, maxAccuracy float64) error {
	switch {
	case !(p.Lat >= -90 && p.Lat <= 90):
		return fmt.Errorf("%w: %v", ErrLatitude, p.Lat)
	case !(p.Lon >= -180 && p.Lon <= 180):
		return fmt.Errorf("%w: %v", ErrLongitude, p.Lon)
	case !(p.Accuracy >= 0 && p.Accuracy <= maxAccuracy):
		return fmt.Errorf("%w: %v m (at most %v m)", ErrAccuracy, p.Accuracy, maxAccuracy)
	case p.Time < minTime || p.Time > math.MaxInt64/2:
		return fmt.Errorf("%w: %d is before 2000 or absurdly late", ErrTime, p.Time)
	}
	return nil
}

// Validate checks t against l: coordinates in range and finite, accuracy
// within [0, MaxAccuracy], times from 2000 on, not decreasing and not
// beyond Now + MaxSkew, speeds between consecutive fixes within MaxSpeed
// (plus [JumpSlack]), and at most MaxPoints points. The error names the
// first offending point ([*PointError]) and wraps one of the Err values.
func (t Trace) Validate(l Limits) error {
	return t.validate(l.withDefaults(), nil)
}

// validate is Validate with defaults applied; lines, if not nil, gives
// each point's input line.
func (t Trace) validate(l Limits, lines []int) error {
	if len(t) > l.MaxPoints {
		return fmt.Errorf("%w: %d, at most %d", ErrTooManyPoints, len(t), l.MaxPoints)
	}
	latest := l.Now().Add(l.MaxSkew).Unix()
	for i, p := range t {
		err := checkPoint(p, l.MaxAccuracy)
		if err == nil && p.Time > latest {
			err = fmt.Errorf("%w: %s", ErrFuture, p.At().Format(time.RFC3339))
		}
		if err == nil && i > 0 {
			err = checkStep(t[i-1], p, l.MaxSpeed)
		}
		if err != nil {
			pe := &PointError{Index: i, Err: err}
			if i < len(lines) {
				pe.Line = lines[i]
			}
			return pe
		}
	}
	return nil
}

// checkStep checks the move from a to b.
func checkStep(a, b Point, maxSpeed float64) error {
	dt := b.Time - a.Time
	if dt < 0 {
		return fmt.Errorf("%w: %s after %s", ErrOrder, b.At().Format(time.RFC3339), a.At().Format(time.RFC3339))
	}
	d := Distance(a, b)
	// Fixes of one second may differ by a receiver's noise, no more:
	// allowing them further apart would let a forged trace sweep a
	// neighbourhood at a single instant, asking where infected people were.
	if dt == 0 && d > SameTimeSlack {
		return fmt.Errorf("%w: two fixes at %s, %.0f m apart", ErrSpeed, a.At().Format(time.RFC3339), d)
	}
	if d > maxSpeed*float64(dt)+JumpSlack {
		return fmt.Errorf("%w: %.0f m in %d s", ErrSpeed, d, dt)
	}
	return nil
}
