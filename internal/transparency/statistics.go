package transparency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
)

// StatisticsFunc returns the backend's released statistics (what
// api.PathStatistics serves); an api.Error of CodeNotFound says the policy
// releases none.
type StatisticsFunc func(ctx context.Context) (api.Statistics, error)

// statisticsTTL is how long the page keeps the statistics it read: a day's
// counts are released once, when the day closes, and reading them scans
// the store, which a page view should not cause each time.
const statisticsTTL = 5 * time.Minute

// statisticsTimeout bounds one read of the statistics.
const statisticsTimeout = 10 * time.Second

// Chart is one public statistic: a value for each day, and a note on how
// to read the values.
type Chart struct {
	Title  string
	Days   []string
	Values []float64
	Note   string
}

// ChartsOf returns a chart for every count that s releases on some day,
// in api.StatisticsCountNames order, over the days that have it. A day
// counted only in part is marked with an asterisk, which the note
// explains.
func ChartsOf(s api.Statistics) []Chart {
	var charts []Chart
	for _, name := range api.StatisticsCountNames() {
		c := Chart{Title: api.StatisticsCountTitle(name)}
		var partial bool
		var eps, sd float64
		for _, d := range s.Days {
			for _, n := range d.Counts {
				if n.Name != name {
					continue
				}
				day := d.Date
				if d.Partial {
					day, partial = day+"*", true
				}
				c.Days = append(c.Days, day)
				c.Values = append(c.Values, float64(n.Value))
				eps, sd = max(eps, d.Epsilon), max(sd, n.NoiseStdDev)
			}
		}
		if len(c.Days) == 0 {
			continue
		}
		c.Note = fmt.Sprintf("Counts with differentially private noise (ε = %s a day); the noise's standard deviation is up to %s.",
			strconv.FormatFloat(eps, 'f', -1, 64), strconv.FormatFloat(sd, 'f', 1, 64))
		if partial {
			c.Note += " * The backend counted only part of that day (it started that day)."
		}
		charts = append(charts, c)
	}
	return charts
}

// statistics keeps the charts of the last read of a StatisticsFunc for
// statisticsTTL.
type statistics struct {
	fetch StatisticsFunc
	log   *slog.Logger
	now   func() time.Time

	mu sync.Mutex
	at time.Time
	// version counts the reads, so that a page rendered with older
	// charts is rendered again.
	version uint64
	charts  []chartView
	// failed is set when the last read failed for another reason than
	// the policy releasing none.
	failed bool
}

// get returns the charts, reading them again when they are older than
// statisticsTTL.
func (s *statistics) get(ctx context.Context) ([]chartView, bool, uint64) {
	if s == nil || s.fetch == nil {
		return nil, false, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.version > 0 && now.Sub(s.at) < statisticsTTL && !now.Before(s.at) {
		return s.charts, s.failed, s.version
	}
	s.at, s.version, s.charts, s.failed = now, s.version+1, nil, false
	// The read serves every page view of the next minutes: the request
	// that happens to make it must not cut it short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statisticsTimeout)
	defer cancel()
	st, err := s.fetch(ctx)
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && ae.Code == api.CodeNotFound:
	case err != nil:
		// Why stays in the log: the page is public.
		s.log.Error("transparency page: reading the statistics", "err", err)
		s.failed = true
	default:
		for _, c := range ChartsOf(st) {
			s.charts = append(s.charts, newChartView(c))
		}
	}
	return s.charts, s.failed, s.version
}
