package enclave

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// TestOwnRPIs: a check derives the device's own identifiers as an
// upload does, whatever the order of its sightings (as a parsed report
// groups them, or not), and refuses a sighting that no key covers.
func TestOwnRPIs(t *testing.T) {
	d, other := newDevice(), newDevice()
	today := enid.IntervalOf(time.Now()).RollingStart()
	rng := rand.New(rand.NewPCG(1, 2))
	var ss []contactlog.Sighting
	for range 300 {
		at := today - enid.Interval(rng.IntN(14*enid.RollingPeriod))
		ss = append(ss, d.hears(other, at, at, 5, 50))
	}
	r := d.report(ss...)
	if err := r.Check(); err != nil { // sorts the keys, as parsing does
		t.Fatal(err)
	}
	grouped := slices.Clone(ss)
	slices.SortStableFunc(grouped, func(a, b contactlog.Sighting) int { return r.Covering(a.Interval) - r.Covering(b.Interval) })
	for name, order := range map[string][]contactlog.Sighting{"grouped by key": grouped, "in any order": ss} {
		rep := contactlog.Report{Keys: r.Keys, Sightings: order}
		want, err := ownRPIsOneByOne(rep)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ownRPIs(rep)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: ownRPIs differs from ownRPIsOneByOne (err %v)", name, err)
		}
		for i, s := range order {
			if got[i] != d.rpi(s.Interval) {
				t.Fatalf("%s: sighting %d: not the device's identifier at its interval", name, i)
			}
		}
	}
	uncovered := append(slices.Clone(grouped), contactlog.Sighting{Interval: today + 2*enid.RollingPeriod})
	if _, err := ownRPIs(contactlog.Report{Keys: r.Keys, Sightings: uncovered}); err == nil {
		t.Error("a sighting no key covers was given an identifier")
	}
}

// TestSetMatchQuery: a check's query for a sighting is the mirror of the
// key an upload of the same encounter stores, as matchindex.MatchQuery
// makes it.
func TestSetMatchQuery(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		var own, heard enid.RPI
		for i := range own {
			own[i], heard[i] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		iv := rng.Uint32()
		var got matchindex.Query
		for i := range got.Key {
			got.Key[i] = 0xff // left over from a previous use
		}
		setMatchQuery(&got, &own, &heard, iv)
		if want := matchindex.MatchQuery(reciprocalKey(own, heard), iv); got != want {
			t.Fatalf("setMatchQuery(%x, %x) = %x, want %x", own, heard, got, want)
		}
	}
}

// ownRPIsOneByOne is ownRPIs the plain way, a binary search per sighting:
// the reference the faster search is checked against. It returns, for each sighting of r, the identifier the device was
// broadcasting: its daily key's RPI at the sighting's interval. Only the
// keys that cover a sighting are expanded, and only at the sighted
// intervals. r must be well formed (contactlog.ParseReport checked it).
func ownRPIsOneByOne(r contactlog.Report) ([]enid.RPI, error) {
	keys := make([]*enid.Key, len(r.Keys))
	defer clear(keys)
	own := make([]enid.RPI, len(r.Sightings))
	for i, s := range r.Sightings {
		k := r.Covering(s.Interval)
		if k < 0 {
			clear(own)
			return nil, fmt.Errorf("sighting %d is covered by no daily key", i)
		}
		if keys[k] == nil {
			var err error
			if keys[k], err = r.Keys[k].Key(); err != nil {
				clear(own)
				return nil, fmt.Errorf("daily key %d: %w", k, err)
			}
		}
		own[i] = keys[k].RPI(s.Interval)
	}
	return own, nil
}
