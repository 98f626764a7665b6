package enclave

// Public statistics (docs/statistics.md). When the policy turns them on,
// the enclave counts in memory, per UTC day, what it served: results
// submitted, uploads, checks, phones told they were exposed (by order),
// GPS matches and imported GAEN keys. Nothing of these counts is written,
// logged or exported as it stands: when a day closes, the flush clock
// draws each count's noise once (statsnoise.go), seals the noisy counts
// and stores them (statsrelease.go), and forgets the day. The public
// endpoint serves only what is stored, so repeated queries, restarts and
// other replicas see the same noisy values.
//
// What one unit of protection adds to one release of a count (its
// sensitivity Δ, scaled into the noise):
//
//   - results, uploads, checks, GPS matches: 1 per request (an authority's
//     result, an exchange that uploads or checks, a trace check);
//   - exposed at order k: 1 per daily key per day, whatever the order and
//     however often the phone checks: the first exposed answer of the day
//     to a report whose newest daily key is that key counts, later ones do
//     not;
//   - imported GAEN keys: the policy's MaxKeys, the most daily keys one
//     person's report holds (one or two a day of the window).
//
// Counts of the day a run stops are lost with its memory: a run releases
// only the days it saw close. Each run (each replica, each restart) counts
// what it served and releases its own row, which the answer sums.

import (
	"hash/maphash"
	"io"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/policy"
)

// The counts, in api.StatisticsCountNames order.
const (
	statResults = 0
	statUploads = 1
	statChecks  = 2
	// statExposed is order 1's count; order k's is statExposed+k-1.
	statExposed = 3
	statGPS     = statExposed + api.MaxStatisticsOrder
	statGAEN    = statGPS + 1
	statCounts  = statGAEN + 1
)

// maxExposedPerDay bounds the daily keys remembered as counted exposed
// in a day (16 MiB or so at most). Once full, further phones of the day
// are not counted as exposed: each count then still moves by at most 1
// per phone, since a phone can at most take the place of another.
const maxExposedPerDay = 1 << 19

// dayCounts are a day's raw counts.
type dayCounts [statCounts]int64

// statistics is what the enclave counts for public statistics. A nil
// *statistics (the policy releases none) counts nothing. It is safe for
// concurrent use.
type statistics struct {
	rule policy.Statistics
	// sens is each count's sensitivity; 0 for a count the policy cannot
	// produce, which is not released.
	sens [statCounts]int
	now  func() time.Time
	// start is when this run began counting: its first day is partial.
	start time.Time
	seed  maphash.Seed

	mu     sync.Mutex
	random randomInts
	// next is the oldest day not released yet.
	next calendar.Day
	days map[calendar.Day]*dayCounts
	// exposed holds, per day, hashes of the daily keys counted exposed.
	exposed map[calendar.Day]map[uint64]struct{}
	// pending are releases drawn and sealed but not stored yet: stored
	// as they are at the next try, never drawn again.
	pending []statsRelease
	// failing is set while storing releases fails, so that it is logged
	// once.
	failing bool
}

// newStatistics returns the counters of policy p, which begin at now(),
// drawing noise from random; nil if p releases no statistics.
func newStatistics(p policy.Policy, now func() time.Time, random io.Reader) *statistics {
	if !p.Statistics.Enabled() {
		return nil
	}
	s := &statistics{rule: p.Statistics, now: now, seed: maphash.MakeSeed(), random: randomInts{r: random},
		days: map[calendar.Day]*dayCounts{}, exposed: map[calendar.Day]map[uint64]struct{}{}}
	s.start = now()
	s.next = calendar.DayOf(s.start)
	s.sens[statResults], s.sens[statUploads], s.sens[statChecks], s.sens[statGPS] = 1, 1, 1, 1
	for k := 1; k <= min(p.MaxOrder(), api.MaxStatisticsOrder); k++ {
		s.sens[statExposed+k-1] = 1
	}
	if len(p.GAENExportKeys) > 0 {
		s.sens[statGAEN] = p.MaxKeys()
	}
	return s
}

// dayLocked returns today's counts, or nil if today is released already
// (a clock read before a release, counted after it). The caller holds
// s.mu.
func (s *statistics) dayLocked() (calendar.Day, *dayCounts) {
	d := calendar.DayOf(s.now())
	if d < s.next {
		return d, nil
	}
	c := s.days[d]
	if c == nil {
		c = &dayCounts{}
		s.days[d] = c
	}
	return d, c
}

// add adds n to today's count i.
func (s *statistics) add(i int, n int64) {
	if s == nil || n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, c := s.dayLocked(); c != nil {
		c[i] += n
	}
}

// exchanged counts an exchange answered with resp to a report of keys: a
// check, an upload if it took one, and the phone's exposure if it is the
// first exposed answer today to its newest daily key.
func (s *statistics) exchanged(keys []contactlog.DailyKey, resp api.ExchangeResponse) {
	if s == nil {
		return
	}
	order := 0
	if resp.Exposure.Exposed {
		order = max(resp.Exposure.Order, 1)
	}
	var h uint64
	if order > 0 && len(keys) > 0 {
		newest := keys[0]
		for _, k := range keys[1:] {
			if k.Start > newest.Start {
				newest = k
			}
		}
		h = maphash.Comparable(s.seed, newest.TEK)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, c := s.dayLocked()
	if c == nil {
		return
	}
	c[statChecks]++
	if resp.Upload != nil {
		c[statUploads]++
	}
	if order < 1 || order > api.MaxStatisticsOrder || len(keys) == 0 {
		return
	}
	seen := s.exposed[d]
	if seen == nil {
		seen = map[uint64]struct{}{}
		s.exposed[d] = seen
	}
	if _, ok := seen[h]; ok || len(seen) >= maxExposedPerDay {
		return
	}
	seen[h] = struct{}{}
	c[statExposed+order-1]++
}

// takeClosedLocked returns the counts of the oldest closed day not
// released yet, forgetting them, and the second of that day from which
// they were counted; ok is false when no day before today is left. The
// caller holds s.mu.
func (s *statistics) takeClosedLocked(today calendar.Day) (d calendar.Day, c dayCounts, from int64, ok bool) {
	if today > statisticsDays && s.next < today-statisticsDays {
		// A clock that jumped: days past the horizon are not served.
		for old := range s.days {
			if old < today-statisticsDays {
				delete(s.days, old)
				delete(s.exposed, old)
			}
		}
		s.next = today - statisticsDays
	}
	if s.next >= today {
		return 0, c, 0, false
	}
	d = s.next
	if p := s.days[d]; p != nil {
		c = *p
		clear(p[:])
	}
	delete(s.days, d)
	delete(s.exposed, d)
	if calendar.DayOf(s.start) == d {
		from = s.start.Unix() - d.Unix()
	}
	s.next++
	return d, c, from, true
}
