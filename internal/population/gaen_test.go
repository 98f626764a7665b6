package population

import (
	"reflect"
	"testing"

	"github.com/conftrace/conftrace/policy"
)

// TestGAENOnlyPhones runs a population in which half of the people
// without the app run a foreign GAEN app, against a backend that matches
// its own uploads reciprocally only: the GAEN-only people's exported keys
// must notify app users one-sided, and every answer stay exact.
func TestGAENOnlyPhones(t *testing.T) {
	t.Parallel()
	s := run(t, Config{People: 120, Days: 10, Seed: 2, GAENShare: 0.5})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if s.GAENOnlyPeople == 0 || s.GAENCases == 0 || s.GAENExports == 0 || s.GAENKeysImported == 0 {
		t.Fatalf("%d GAEN-only people, %d cases, %d exports, %d keys imported: the run did not exercise GAEN imports",
			s.GAENOnlyPeople, s.GAENCases, s.GAENExports, s.GAENKeysImported)
	}
	if s.NotifiedOneSided == 0 || s.NotifiedReciprocal == 0 || s.Notified != s.ShouldBeNotified {
		t.Fatalf("notified %d (%d reciprocal, %d one-sided), should be notified %d: want both rules to notify", s.Notified, s.NotifiedReciprocal, s.NotifiedOneSided, s.ShouldBeNotified)
	}
	if s.Notified > s.NotifiedReciprocal+s.NotifiedOneSided {
		t.Fatalf("%d notified, but only %d reciprocal and %d one-sided", s.Notified, s.NotifiedReciprocal, s.NotifiedOneSided)
	}
	if s.GAENKeysPublished <= s.GAENKeysImported {
		t.Fatalf("%d keys published: the GAEN-style baseline must count the uploads' keys beside the %d imported", s.GAENKeysPublished, s.GAENKeysImported)
	}
}

// TestGAENShareKeepsTheRest checks that GAEN-only phones draw from a
// generator of their own: until their first notification feeds back into
// who gets tested, a run with them has the same people, infections and
// tests as one without, and a run with a share but no GAEN case at all is
// the same as one without, apart from the GAEN figures.
func TestGAENShareKeepsTheRest(t *testing.T) {
	t.Parallel()
	without := run(t, Config{People: 60, Days: 4, Seed: 11})
	with := run(t, Config{People: 60, Days: 4, Seed: 11, GAENShare: 0.5})
	if with.GAENOnlyPeople == 0 || with.NotifiedOneSided != 0 {
		t.Fatalf("%d GAEN-only people, %d notified one-sided: pick a seed with GAEN-only people and no one-sided notification in 4 days", with.GAENOnlyPeople, with.NotifiedOneSided)
	}
	a, b := *without, *with
	a.Timing, b.Timing = Timing{}, Timing{}
	b.GAENOnlyPeople, b.GAENCases, b.GAENExports, b.GAENKeysImported = 0, 0, 0, 0
	b.GAENKeysPublished, b.GAENBytesPerDeviceDay = a.GAENKeysPublished, a.GAENBytesPerDeviceDay
	b.TrueContacts, b.TrueContactsWithApp, b.NotifiedTrueContacts = a.TrueContacts, a.TrueContactsWithApp, a.NotifiedTrueContacts
	b.EpiRecall, b.EpiRecallAppUsers, b.EpiPrecision = a.EpiRecall, a.EpiRecallAppUsers, a.EpiPrecision
	// The checks carry the sightings of GAEN-only phones, so they are
	// longer.
	b.BytesPerDeviceDay = a.BytesPerDeviceDay
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("GAEN-only phones changed the rest of the run:\n%+v\n%+v", a, b)
	}
}

// TestOneSidedUploads runs against a backend whose policy also matches
// uploaded keys one-sided: app users who heard an uploading case without
// being heard back are notified too, and the oracle, which applies the
// policy's rules, stays exact.
func TestOneSidedUploads(t *testing.T) {
	t.Parallel()
	pol := testPolicy()
	pol.Matching = []string{policy.MatchReciprocal, policy.MatchOneSided}
	s := runPolicy(t, Config{People: 100, Days: 8, Seed: 1}, pol)
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if s.GAENOnlyPeople != 0 || s.NotifiedOneSided == 0 || s.NotifiedReciprocal == 0 || s.Notified != s.ShouldBeNotified {
		t.Fatalf("notified %d (%d reciprocal, %d one-sided), should be notified %d, %d GAEN-only people: want both rules to notify from uploads alone",
			s.Notified, s.NotifiedReciprocal, s.NotifiedOneSided, s.ShouldBeNotified, s.GAENOnlyPeople)
	}
}
