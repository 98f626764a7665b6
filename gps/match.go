package gps

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Params are the thresholds of the matching rule; see the package
// documentation for what they mean and why the defaults are what they are.
type Params struct {
	// DistanceMeters is the largest great-circle distance, in metres, at
	// which two fixes count as together: in (0, MaxDistance].
	DistanceMeters float64
	// TimeTolerance is the largest time difference at which two fixes
	// count as simultaneous: in [0, MaxTimeTolerance]. Times are whole
	// seconds, so a fractional second is as good as its floor.
	TimeTolerance time.Duration
	// MinMinutes is how many minutes of episodes, summed over episodes
	// that start within 24 hours of each other, make an exposure.
	MinMinutes float64
	// MaxGap is the longest time between two consecutive matched device
	// points of one episode, and the most time one matched point adds to
	// its episode: in (0, 24h].
	MaxGap time.Duration
}

// Bounds of Params.
const (
	MaxDistance      = 1000.0
	MaxTimeTolerance = time.Hour
)

// DefaultParams returns 10 m, ±5 minutes, 15 minutes, 10-minute gaps.
func DefaultParams() Params {
	return Params{
		DistanceMeters: 10,
		TimeTolerance:  5 * time.Minute,
		MinMinutes:     15,
		MaxGap:         10 * time.Minute,
	}
}

// ErrParams is wrapped by the errors of [Params.Validate].
var ErrParams = errors.New("gps: invalid matching parameters")

// Validate reports whether p is within its bounds.
func (p Params) Validate() error {
	switch {
	case !(p.DistanceMeters > 0 && p.DistanceMeters <= MaxDistance):
		return fmt.Errorf("%w: distance %v m outside (0, %v]", ErrParams, p.DistanceMeters, MaxDistance)
	case p.TimeTolerance < 0 || p.TimeTolerance > MaxTimeTolerance:
		return fmt.Errorf("%w: time tolerance %v outside [0, %v]", ErrParams, p.TimeTolerance, MaxTimeTolerance)
	case !(p.MinMinutes >= 0 && p.MinMinutes <= 24*60):
		return fmt.Errorf("%w: minimum minutes %v outside [0, 1440]", ErrParams, p.MinMinutes)
	case p.MaxGap < time.Second || p.MaxGap > 24*time.Hour:
		return fmt.Errorf("%w: maximum gap %v outside [1s, 24h]", ErrParams, p.MaxGap)
	}
	return nil
}

// ToleranceSeconds returns TimeTolerance in whole seconds (rounded down):
// two fixes match in time when their Unix times differ by at most this.
func (p Params) ToleranceSeconds() int64 { return int64(p.TimeTolerance / time.Second) }

// Match is what matching found for one device point.
type Match struct {
	// Matched reports whether some infected point is within the time
	// tolerance and the distance threshold.
	Matched bool
	// Distance is the smallest distance, in metres, to such an infected
	// point; 0 when Matched is false.
	Distance float64
}

// Episode is a stretch of time during which the device stayed near
// infected people.
type Episode struct {
	// Start and End are the times (Unix seconds) of the episode's first
	// and last matched device points.
	Start, End int64
	// Closest is the smallest distance, in metres, between one of the
	// episode's device points and a matching infected point.
	Closest float64
	// Minutes is the episode's duration: End − Start, plus the time from
	// End to the device's next fix capped at MaxGap (0 if the trace ends
	// at End), because a fix stands for the position until the next one.
	Minutes float64
	// Points is the number of matched device points in the episode.
	Points int
}

// BruteForceMatches compares every device point with every infected point
// under the rule of the package documentation. It takes time proportional
// to len(device) times the number of infected points and is the reference
// any faster matcher must reproduce exactly. Parameters must be valid.
func BruteForceMatches(device Trace, infected []Trace, p Params) []Match {
	tol := p.ToleranceSeconds()
	out := make([]Match, len(device))
	for i, d := range device {
		dp := d.Position()
		best := math.Inf(1)
		for _, tr := range infected {
			for _, q := range tr {
				if dt := q.Time - d.Time; dt < -tol || dt > tol {
					continue
				}
				if dist := dp.Distance(q.Position()); dist <= p.DistanceMeters && dist < best {
					best = dist
				}
			}
		}
		if best <= p.DistanceMeters {
			out[i] = Match{Matched: true, Distance: best}
		}
	}
	return out
}

// Episodes groups the matched points of device into episodes. matches[i]
// is the result for device[i], as [BruteForceMatches] or the backend's
// index computes it; extra entries on either side are ignored.
func Episodes(device Trace, matches []Match, p Params) []Episode {
	n := min(len(device), len(matches))
	gap := int64(p.MaxGap / time.Second)
	var eps []Episode
	var cur *Episode
	for i := range n {
		if !matches[i].Matched {
			cur = nil
			continue
		}
		t := device[i].Time
		if cur != nil && t-cur.End <= gap {
			cur.End = t
			cur.Closest = min(cur.Closest, matches[i].Distance)
			cur.Points++
		} else {
			eps = append(eps, Episode{Start: t, End: t, Closest: matches[i].Distance, Points: 1})
			cur = &eps[len(eps)-1]
		}
		// The duration credit of the episode's last point, recomputed as
		// the episode grows; only the final one counts.
		var credit int64
		if i+1 < len(device) {
			credit = min(device[i+1].Time-t, gap)
		}
		cur.Minutes = float64(cur.End-cur.Start+credit) / 60
	}
	return eps
}

// RunningClosest returns matches with the distance of each matched point
// lowered to the closest distance of its episode so far, that is, up to
// and including it (episodes as [Episodes] forms them). It is what the
// backend's index returns, and gives the same episodes as matches.
func RunningClosest(device Trace, matches []Match, p Params) []Match {
	n := min(len(device), len(matches))
	gap := int64(p.MaxGap / time.Second)
	out := make([]Match, n)
	for i := range n {
		if !matches[i].Matched {
			continue
		}
		out[i] = matches[i]
		if i > 0 && out[i-1].Matched && device[i].Time-device[i-1].Time <= gap {
			out[i].Distance = min(out[i].Distance, out[i-1].Distance)
		}
	}
	return out
}

// BruteForce returns the episodes of device against the infected traces:
// Episodes(device, BruteForceMatches(device, infected, p), p).
func BruteForce(device Trace, infected []Trace, p Params) []Episode {
	return Episodes(device, BruteForceMatches(device, infected, p), p)
}

// Exposed reports whether episodes (in time order, as [Episodes] returns
// them) amount to an exposure: the Minutes of the episodes that start
// within some 24-hour span sum to at least p.MinMinutes. With MinMinutes 0
// any episode is an exposure.
func Exposed(episodes []Episode, p Params) bool {
	_, ok := LastExposure(episodes, p)
	return ok
}

// LastExposure returns the last episode at which the episodes of the 24
// hours up to its start reach p.MinMinutes, and whether there is one: the
// most recent exposure, as coarse answers report it.
func LastExposure(episodes []Episode, p Params) (Episode, bool) {
	const day = 24 * 60 * 60
	// Sum whole seconds, so that adding and removing episodes is exact.
	secs := func(e Episode) int64 { return int64(math.Round(e.Minutes * 60)) }
	need := p.MinMinutes * 60
	var (
		sum   int64
		last  Episode
		found bool
	)
	j := 0
	for _, e := range episodes {
		sum += secs(e)
		for episodes[j].Start <= e.Start-day {
			sum -= secs(episodes[j])
			j++
		}
		if float64(sum) >= need {
			last, found = e, true
		}
	}
	return last, found
}
