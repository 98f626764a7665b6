package enclave

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
)

// Defaults of CheckLimiterConfig.
const (
	// DefaultChecksPerKeyDay allows a check every half hour: far more than
	// a phone's daily exchange needs, far fewer than probing which of its
	// encounters matched would.
	DefaultChecksPerKeyDay = 48
	// DefaultCheckLimiterKeys bounds the keys counted at once to about
	// 45 MiB of enclave memory (a key costs up to 44 bytes).
	DefaultCheckLimiterKeys = 1 << 20
)

// CheckLimiterConfig configures a CheckLimiter; zero fields mean the
// defaults.
type CheckLimiterConfig struct {
	// PerDay is how many checks one daily key may take part in per UTC
	// day; at most 65535.
	PerDay int
	// MaxKeys bounds the keys counted at once.
	MaxKeys int
}

// A CheckLimiter limits the exposure checks that each daily key (TEK) takes
// part in per UTC day, so that a device cannot probe the match index with
// its keys more than the policy allows.
//
// Counts live in memory only and are never written to the store: the host
// must not learn that a check happened, let alone with which keys. They
// restart from zero when the enclave restarts, and each replica counts the
// checks it serves.
//
// Memory is bounded: counts expire with their day, and at most MaxKeys
// keys are counted at once. When a new key comes and MaxKeys are counted,
// the key first counted that day is forgotten, so its count starts again
// from zero. Under more distinct keys than MaxKeys a day the limit thus
// weakens but never refuses wrongly, and to have its own key forgotten a
// device must first push MaxKeys other keys through.
//
// The day is the UTC day of the time each check passes in, from the
// enclave's clock, which the host can influence. A clock that steps back
// does not bring an earlier day's counts back: checks still count toward
// the latest day seen.
//
// Keys are counted by a 64-bit hash under a seed made fresh for each
// limiter, which halves their memory; two keys share a count only if
// their hashes collide, which an outsider cannot arrange and chance
// makes negligible. A CheckLimiter is safe for concurrent use.
type CheckLimiter struct {
	perDay  uint16
	maxKeys int
	seed    maphash.Seed

	mu     sync.Mutex
	day    calendar.Day
	counts map[uint64]uint16
	order  []uint64 // hashes in the order first counted that day
	oldest int      // index in order of the oldest hash, once it is full
}

// NewCheckLimiter returns a CheckLimiter for c.
func NewCheckLimiter(c CheckLimiterConfig) *CheckLimiter {
	if c.PerDay <= 0 {
		c.PerDay = DefaultChecksPerKeyDay
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultCheckLimiterKeys
	}
	return &CheckLimiter{
		perDay:  uint16(min(c.PerDay, math.MaxUint16)),
		maxKeys: c.MaxKeys,
		seed:    maphash.MakeSeed(),
		counts:  map[uint64]uint16{},
	}
}

// Limit returns how many checks a daily key may take part in a day.
func (l *CheckLimiter) Limit() int { return int(l.perDay) }

// Allow reports whether a check carrying keys may run at now, and if so
// counts it once against each distinct key. If any key has already taken
// part in PerDay checks that day, the check is refused and nothing is
// counted, so refused checks cost no one their allowance. A check without
// keys is allowed.
func (l *CheckLimiter) Allow(now time.Time, keys ...enid.TEK) bool {
	var buf [32]uint64
	hs := buf[:0]
	for _, k := range keys {
		h := maphash.Comparable(l.seed, k)
		if !slices.Contains(hs, h) {
			hs = append(hs, h)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := calendar.DayOf(now); d > l.day {
		// A new day: drop the last one's counts and the memory they held.
		l.day, l.counts, l.order, l.oldest = d, map[uint64]uint16{}, nil, 0
	}
	for _, h := range hs {
		if l.counts[h] >= l.perDay {
			return false
		}
	}
	for _, h := range hs {
		if n, ok := l.counts[h]; ok {
			l.counts[h] = n + 1
			continue
		}
		if len(l.order) < l.maxKeys {
			l.order = append(l.order, h)
		} else {
			delete(l.counts, l.order[l.oldest])
			l.order[l.oldest] = h
			l.oldest = (l.oldest + 1) % l.maxKeys
		}
		l.counts[h] = 1
	}
	return true
}
