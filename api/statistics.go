package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// PathStatistics is the public statistics endpoint: a plain GET, outside
// the gateway, answered with [Statistics] as JSON, or with an [Error] of
// CodeNotFound when the attested policy releases none.
const PathStatistics = "/v1/statistics"

// MaxStatisticsSize bounds a statistics answer that ParseStatistics reads:
// a year of days from many releases is far below it.
const MaxStatisticsSize = 4 << 20

// The counts a day's statistics name. Each counts what the backend
// served that UTC day; docs/statistics.md says what one person can add to
// each.
const (
	// CountResultsSubmitted: test results that health authorities
	// submitted and the backend stored.
	CountResultsSubmitted = "results_submitted"
	// CountUploads: uploads of daily keys and sightings the backend took,
	// a positive user's or an exposed phone's of a higher order.
	CountUploads = "uploads"
	// CountChecks: phones' daily exchanges answered (each is an exposure
	// check).
	CountChecks = "checks"
	// CountGPSMatches: GPS trace checks answered "exposed".
	CountGPSMatches = "gps_matches"
	// CountGAENKeysImported: daily keys imported from GAEN key exports.
	CountGAENKeysImported = "gaen_keys_imported"
)

// exposedPrefix starts the names of the exposed-by-order counts.
const exposedPrefix = "exposed_order_"

// MaxStatisticsOrder is the highest order an exposed count can name.
const MaxStatisticsOrder = 3

// CountExposed returns the name of the count of phones told they were
// exposed at order k (1 is a contact of a confirmed case; see n-order
// notifications), each phone once a day by its daily key.
func CountExposed(k int) string { return exposedPrefix + strconv.Itoa(k) }

// StatisticsCountNames returns the name of every count, in the order a
// day lists them.
func StatisticsCountNames() []string {
	names := []string{CountResultsSubmitted, CountUploads, CountChecks}
	for k := 1; k <= MaxStatisticsOrder; k++ {
		names = append(names, CountExposed(k))
	}
	return append(names, CountGPSMatches, CountGAENKeysImported)
}

// StatisticsCountTitle returns a short English title of a count, for
// tables and charts; "" for a name that is not a count's.
func StatisticsCountTitle(name string) string {
	switch name {
	case CountResultsSubmitted:
		return "Test results submitted"
	case CountUploads:
		return "Uploads"
	case CountChecks:
		return "Exposure checks"
	case CountGPSMatches:
		return "GPS trace matches"
	case CountGAENKeysImported:
		return "GAEN keys imported"
	}
	if k, ok := exposedOrder(name); ok {
		return fmt.Sprintf("Phones exposed at order %d", k)
	}
	return ""
}

// exposedOrder returns the order an exposed count's name names.
func exposedOrder(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, exposedPrefix)
	if !ok || len(s) != 1 {
		return 0, false
	}
	k := int(s[0] - '0')
	return k, k >= 1 && k <= MaxStatisticsOrder
}

// Statistics is the public answer of PathStatistics: for every closed
// UTC day the backend released, its counts with differentially private
// noise, and what a reader needs to judge them (the mechanism, ε, each
// count's sensitivity and the noise's standard deviation). No raw count
// is in it: the enclave draws each day's noise once, when the day
// closes, and serves only what it stored then, so asking again, or of
// another replica, gives the same values and averaging learns nothing.
//
// A renderer draws one series per count name over Days; NoiseStdDev gives
// error bars; Partial and Releases say how complete a day is.
type Statistics struct {
	// Days are the released days, oldest first, each date once. Today is
	// never in it, nor a day no running enclave saw close.
	Days []StatisticsDay `json:"days"`
}

// StatisticsDay is one UTC day's released counts: the sum of the noisy
// releases of every enclave run that counted that day (each replica, and
// each restart, counts what it served; see docs/statistics.md).
type StatisticsDay struct {
	// Date is the UTC day (DateLayout).
	Date string `json:"date"`
	// Mechanism is the noise mechanism of the attested policy,
	// "discrete_laplace".
	Mechanism string `json:"mechanism"`
	// Epsilon is ε per count of the day's releases (the largest, if the
	// policy changed within the day).
	Epsilon float64 `json:"epsilon"`
	// Releases is how many enclave runs' releases the day sums.
	Releases int `json:"releases"`
	// Partial is set when a release counted only part of the day (its
	// enclave started that day): the counts are then low.
	Partial bool `json:"partial"`
	// Counts are the day's noisy counts, in StatisticsCountNames order;
	// a count the policy cannot produce (an order above its max_order, GAEN
	// keys without export keys) is left out.
	Counts []NoisyCount `json:"counts"`
}

// NoisyCount is one released count of a day.
type NoisyCount struct {
	// Name is the count's (StatisticsCountNames).
	Name string `json:"name"`
	// Value is the count plus noise, summed over the day's releases and
	// then clamped at 0 (post-processing, which spends no privacy).
	Value int64 `json:"value"`
	// Sensitivity is Δ: the most one unit of protection (a request, or a
	// phone's day, per count) can change one release of the count by; the
	// noise's scale is Δ/ε.
	Sensitivity int `json:"sensitivity"`
	// NoiseStdDev is the standard deviation of the noise in Value before
	// clamping.
	NoiseStdDev float64 `json:"noise_std_dev"`
}

// Value returns the day's value of the named count, and whether the day
// has it.
func (d StatisticsDay) Value(name string) (int64, bool) {
	for _, c := range d.Counts {
		if c.Name == name {
			return c.Value, true
		}
	}
	return 0, false
}

// ParseStatistics reads a statistics answer strictly: unknown fields,
// dates out of order or repeated, unknown or repeated count names and
// impossible figures are refused.
func ParseStatistics(b []byte) (Statistics, error) {
	if len(b) > MaxStatisticsSize {
		return Statistics{}, fmt.Errorf("statistics: answer of %d bytes, limit %d", len(b), MaxStatisticsSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Statistics
	if err := dec.Decode(&s); err != nil {
		return Statistics{}, fmt.Errorf("statistics: %w", err)
	}
	if dec.More() {
		return Statistics{}, errors.New("statistics: trailing data after the answer")
	}
	if err := s.Validate(); err != nil {
		return Statistics{}, err
	}
	return s, nil
}

// Validate reports the first rule the answer breaks.
func (s Statistics) Validate() error {
	var last time.Time
	for i, d := range s.Days {
		t, err := time.Parse(DateLayout, d.Date)
		if err != nil {
			return fmt.Errorf("statistics: day %d: date %q: want YYYY-MM-DD", i, d.Date)
		}
		if i > 0 && !t.After(last) {
			return fmt.Errorf("statistics: day %s after %s: days must ascend", d.Date, last.Format(DateLayout))
		}
		last = t
		if err := d.validate(); err != nil {
			return fmt.Errorf("statistics: day %s: %w", d.Date, err)
		}
	}
	return nil
}

func (d StatisticsDay) validate() error {
	switch {
	case d.Mechanism == "":
		return errors.New("no mechanism")
	case !(d.Epsilon > 0) || math.IsInf(d.Epsilon, 0):
		return fmt.Errorf("epsilon %v: want a positive number", d.Epsilon)
	case d.Releases < 1:
		return fmt.Errorf("%d releases: want at least 1", d.Releases)
	}
	names := StatisticsCountNames()
	next := 0 // counts follow the order of names
	for _, c := range d.Counts {
		i := next
		for i < len(names) && names[i] != c.Name {
			i++
		}
		switch {
		case i == len(names):
			return fmt.Errorf("count %q: unknown, repeated or out of order", c.Name)
		case c.Value < 0:
			return fmt.Errorf("count %s: value %d below 0", c.Name, c.Value)
		case c.Sensitivity < 1:
			return fmt.Errorf("count %s: sensitivity %d: want at least 1", c.Name, c.Sensitivity)
		case !(c.NoiseStdDev >= 0) || math.IsInf(c.NoiseStdDev, 0):
			return fmt.Errorf("count %s: noise standard deviation %v: want a number from 0", c.Name, c.NoiseStdDev)
		}
		next = i + 1
	}
	return nil
}
