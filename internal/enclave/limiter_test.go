package enclave

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/enid"
)

var limiterNoon = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func tek(i int) enid.TEK { return enid.TEK{byte(i), byte(i >> 8), 0xa5} }

// allowN calls Allow n times and returns how many checks it allowed.
func allowN(l *CheckLimiter, n int, now time.Time, keys ...enid.TEK) int {
	ok := 0
	for range n {
		if l.Allow(now, keys...) {
			ok++
		}
	}
	return ok
}

func TestCheckLimiterPerKeyDay(t *testing.T) {
	l := NewCheckLimiter(CheckLimiterConfig{PerDay: 3})
	if got := allowN(l, 5, limiterNoon, tek(1)); got != 3 {
		t.Errorf("one key, 5 checks: %d allowed, want 3", got)
	}
	// Keys count separately, and a key repeated in a check counts once.
	if got := allowN(l, 5, limiterNoon, tek(2), tek(2), tek(3)); got != 3 {
		t.Errorf("fresh keys, one repeated: %d allowed, want 3", got)
	}
	// A check with one exhausted key is refused and costs the others
	// nothing.
	if allowN(l, 10, limiterNoon, tek(1), tek(4)) != 0 {
		t.Error("a check with an exhausted key was allowed")
	}
	if got := allowN(l, 5, limiterNoon, tek(4)); got != 3 {
		t.Errorf("a key whose checks were refused: %d allowed, want its 3", got)
	}
	if !l.Allow(limiterNoon) {
		t.Error("a check without keys was refused")
	}
}

// Counts last one UTC day, whatever the location of the clock's time; a
// clock that steps back keeps counting toward the latest day.
func TestCheckLimiterDays(t *testing.T) {
	l := NewCheckLimiter(CheckLimiterConfig{PerDay: 2})
	late := time.Date(2026, 3, 10, 23, 59, 0, 0, time.UTC)
	east := time.FixedZone("UTC+10", 10*3600)
	if got := allowN(l, 3, late.In(east), tek(1)); got != 2 {
		t.Fatalf("%d allowed, want 2", got)
	}
	next := late.Add(2 * time.Minute)
	if got := allowN(l, 3, next, tek(1)); got != 2 {
		t.Errorf("on the next UTC day: %d allowed, want 2 again", got)
	}
	if len(l.counts) != 1 {
		t.Errorf("%d keys counted after the day changed, want 1", len(l.counts))
	}
	if l.Allow(late, tek(1)) {
		t.Error("a clock stepped back to the previous day brought its allowance back")
	}
}

// At MaxKeys, a new key makes the limiter forget the key first counted
// that day, and memory stays within MaxKeys keys.
func TestCheckLimiterMaxKeys(t *testing.T) {
	const maxKeys = 4
	l := NewCheckLimiter(CheckLimiterConfig{PerDay: 1, MaxKeys: maxKeys})
	for i := range maxKeys {
		if !l.Allow(limiterNoon, tek(i)) {
			t.Fatalf("first check of key %d refused", i)
		}
	}
	if !l.Allow(limiterNoon, tek(100)) {
		t.Fatal("a new key beyond MaxKeys was refused")
	}
	if !l.Allow(limiterNoon, tek(0)) {
		t.Error("the key counted first was not forgotten to make room")
	}
	// Counting key 0 again made room by forgetting key 1; the rest stay.
	for i := 2; i < maxKeys; i++ {
		if l.Allow(limiterNoon, tek(i)) {
			t.Errorf("key %d, not the oldest, was forgotten", i)
		}
	}
	for i := range 10 * maxKeys {
		l.Allow(limiterNoon, tek(1000+i))
		if len(l.counts) > maxKeys || len(l.order) > maxKeys {
			t.Fatalf("%d counts and %d in order, want at most %d", len(l.counts), len(l.order), maxKeys)
		}
	}
	// One check carrying more keys than MaxKeys is counted and bounded.
	var many []enid.TEK
	for i := range 3 * maxKeys {
		many = append(many, tek(5000+i))
	}
	if !l.Allow(limiterNoon, many...) || len(l.counts) != maxKeys {
		t.Errorf("a check of %d keys: %d counted, want %d", len(many), len(l.counts), maxKeys)
	}
}

func TestCheckLimiterDefaults(t *testing.T) {
	l := NewCheckLimiter(CheckLimiterConfig{})
	if l.perDay != DefaultChecksPerKeyDay || l.maxKeys != DefaultCheckLimiterKeys {
		t.Errorf("defaults: %d a day, %d keys; want %d, %d", l.perDay, l.maxKeys, DefaultChecksPerKeyDay, DefaultCheckLimiterKeys)
	}
	if got := allowN(l, DefaultChecksPerKeyDay+1, limiterNoon, tek(1)); got != DefaultChecksPerKeyDay {
		t.Errorf("%d allowed, want %d", got, DefaultChecksPerKeyDay)
	}
	if l := NewCheckLimiter(CheckLimiterConfig{PerDay: 1 << 20}); l.perDay != 65535 {
		t.Errorf("PerDay 1<<20 kept as %d, want 65535", l.perDay)
	}
}

// Concurrent checks of one key get exactly PerDay allowances between them.
func TestCheckLimiterConcurrent(t *testing.T) {
	l := NewCheckLimiter(CheckLimiterConfig{PerDay: 48, MaxKeys: 64})
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if l.Allow(limiterNoon, tek(1), tek(2+g*100+i)) {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 48 {
		t.Errorf("%d checks allowed, want 48", n)
	}
}
