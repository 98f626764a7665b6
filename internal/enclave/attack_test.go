package enclave

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// The attacks that protocol v2 stops. In v1 a device sent bare (own RPI,
// heard RPI) pairs and nothing proved the own half, so whoever had sniffed
// two devices' RPIs over Bluetooth could claim either side of their
// encounter. In v2 the enclave derives every own RPI from the sender's
// daily keys.

// metAt has a and b meet in n consecutive intervals from at, 10 minutes
// each at 50 dB (enough, from two intervals on, to be exposed), and
// returns a's sightings of b and b's of a.
func metAt(a, b *device, at time.Time, n int) (ab, ba []contactlog.Sighting) {
	for i := range n {
		x, y := meet(a, b, at.Add(time.Duration(i)*enid.IntervalLength), 10, 50)
		ab, ba = append(ab, x), append(ba, y)
	}
	return ab, ba
}

// TestAttackFraming: A and B met; a positive user M, nearby, sniffed
// both. In v1 M could upload B's side of the encounter, the pair (own =
// B's RPI, heard = A's RPI), and A's check found it: A was told it was
// exposed, and B framed as the source, without B ever testing positive.
// In v2 M can upload its sightings of A's and B's RPIs only under its own
// keys, so the enclave indexes them under M's own RPIs, which neither A
// nor B heard: neither is exposed. Only B's own upload exposes A.
func TestAttackFraming(t *testing.T) {
	v := newEnv(t, detailed)
	at := v.now().Add(-5 * time.Hour)
	a, b, m := newDevice(), newDevice(), newDevice()
	sa, sb := metAt(a, b, at, 2)
	var sniffed []contactlog.Sighting
	for _, s := range sa {
		sniffed = append(sniffed, m.hears(a, s.Interval, s.Interval, 10, 50), m.hears(b, s.Interval, s.Interval, 10, 50))
	}
	checkA, checkB := a.report(sa...), b.report(sb...)

	// M's upload is accepted (they are its sightings) and matches no one.
	v.mustUpload(m.report(sniffed...))
	for name, r := range map[string]api.ExposureResponse{"A": v.check(checkA), "B": v.check(checkB)} {
		if r.Exposed {
			t.Errorf("%s's check after the attacker's upload: exposed", name)
		}
		wantQuiet(t, r)
	}

	// The attack did aim at the right pair: had the enclave indexed what
	// v1 stored for M's forged upload, (B's RPI, A's RPI), A's very check
	// would have reported an exposure.
	v1 := newEnv(t, detailed)
	var forged []matchindex.Entry
	for _, s := range sa {
		forged = append(forged, matchindex.Entry{
			Key:     reciprocalKey(b.rpi(s.Interval), a.rpi(s.Interval)),
			Contact: matchindex.Contact{Interval: uint32(s.Interval), Minutes: 10, Attenuation: 50, Day: utcDay(at)},
		})
	}
	if err := v1.e.index.Add(forged); err != nil {
		t.Fatal(err)
	}
	if r := v1.check(checkA); !r.Exposed {
		t.Fatalf("control: A's check against v1's forged pairs is not exposed: %+v", dayOf(t, r, at))
	}

	// B really met A: B's upload exposes A, by the reciprocal rule.
	v.mustUpload(b.report(sb...))
	if r := v.check(checkA); !r.Exposed || !dayOf(t, r, at).Reciprocal || dayOf(t, r, at).Minutes != 20 {
		t.Errorf("A after B's genuine upload: %+v; want exposed, 20 reciprocal minutes", dayOf(t, r, at))
	}
	if r := v.check(checkB); r.Exposed {
		t.Error("B's own upload exposes B")
	}
}

// TestAttackProbing: a sniffer S heard B during B's encounter with A. In
// v1 S could check the pair (own = A's RPI, heard = B's RPI) and learn
// from the answer whether B had uploaded, that is, whether B tested
// positive. In v2 S's check derives its own RPIs from S's keys, and B
// never heard those: S learns nothing, its answer the same before and
// after B's upload, while A, who really met B, is exposed by it.
//
// The known limit: a policy whose matching includes one_sided matches
// whoever heard an uploader's RPI, as GAEN phones do, so there a sniffer
// who heard B does learn that B uploaded. The policy is attested, and
// policy.MatchOneSided says so; the subtest pins that this is what
// happens rather than hides it.
func TestAttackProbing(t *testing.T) {
	setup := func(v *env) (a, b, s *device, sa, sb []contactlog.Sighting, probe contactlog.Report, at time.Time) {
		at = v.now().Add(-5 * time.Hour)
		a, b, s = newDevice(), newDevice(), newDevice()
		sa, sb = metAt(a, b, at, 2)
		var heard []contactlog.Sighting
		for _, x := range sa {
			heard = append(heard, s.hears(b, x.Interval, x.Interval, 10, 50), s.hears(a, x.Interval, x.Interval, 10, 50))
		}
		return a, b, s, sa, sb, s.report(heard...), at
	}

	t.Run("reciprocal", func(t *testing.T) {
		v := newEnv(t, detailed)
		a, b, _, sa, sb, probe, at := setup(v)
		before := v.check(probe)
		v.mustUpload(b.report(sb...))
		after := v.check(probe)
		if before.Exposed || after.Exposed || !equalExposure(before, after) {
			t.Errorf("the sniffer's answers differ or expose it: before %+v, after %+v", before, after)
		}
		wantQuiet(t, after)
		bb, _ := json.Marshal(before)
		ba, _ := json.Marshal(after)
		if len(bb) != len(ba) {
			t.Errorf("the sniffer's answers have %d and %d bytes", len(bb), len(ba))
		}
		if r := v.check(a.report(sa...)); !r.Exposed || !dayOf(t, r, at).Reciprocal {
			t.Errorf("A after B's upload: %+v; want exposed by the reciprocal rule", dayOf(t, r, at))
		}

		// The probe did aim at the right pair: v1's claim, A's RPI as the
		// sniffer's own, is what B's upload holds.
		tol := uint32(v.pol.Risk.IntervalTolerance)
		for _, x := range sa {
			if got := matchindex.Match(v.e.index, nil, reciprocalKey(a.rpi(x.Interval), b.rpi(x.Interval)), uint32(x.Interval), tol); len(got) != 1 {
				t.Fatalf("control: v1's claimed pair finds %d of B's sightings, want 1", len(got))
			}
		}
	})

	// Under the default, coarse answers the sniffer's answers are the
	// same bytes.
	t.Run("coarse", func(t *testing.T) {
		v := newEnv(t)
		_, b, _, _, sb, probe, _ := setup(v)
		before, _ := json.Marshal(v.check(probe))
		v.mustUpload(b.report(sb...))
		after, _ := json.Marshal(v.check(probe))
		if string(before) != string(after) {
			t.Errorf("the sniffer's answers differ: before %s, after %s", before, after)
		}
	})

	t.Run("one_sided", func(t *testing.T) {
		v := newEnv(t, bothRules, detailed)
		_, b, _, _, sb, probe, at := setup(v)
		if r := v.check(probe); r.Exposed {
			t.Fatal("the sniffer is exposed before B uploads")
		}
		v.mustUpload(b.report(sb...))
		r := v.check(probe)
		if d := dayOf(t, r, at); !r.Exposed || !d.OneSided || d.Reciprocal || d.Minutes != 20 {
			t.Errorf("the sniffer under one-sided matching: %+v; want exposed by its 20 minutes of hearing B, one-sided only", d)
		}
	})
}
