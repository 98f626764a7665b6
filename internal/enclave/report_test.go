package enclave

import (
	"math"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// refusalLimits makes the policy's sighting limits small enough for the
// refusal tests to reach.
func refusalLimits(p *policy.Policy) {
	p.Limits.MaxUploadSightings = 4
	p.Limits.MaxCheckSightings = 4
}

// refusal is a report that uploads, checks or both refuse.
type refusal struct {
	name string
	body []byte
	// upload and check are the codes an upload and a check are refused
	// with; "" means the report is accepted.
	upload, check string
}

// reportRefusals returns one report for each way a report can be wrong,
// each with the refusal it earns in an upload and in a check, under a
// policy edited by refusalLimits. Every report is otherwise well formed,
// so that it tests its one fault.
func reportRefusals(t *testing.T, v *env) []refusal {
	t.Helper()
	now := v.now()
	cur := enid.IntervalOf(now)
	latest := cur + 1 // one interval of clock skew
	first := enid.IntervalOf(v.pol.WindowStart(now))
	today := dayKey(cur)
	at := func(i enid.Interval, minutes uint8) contactlog.Sighting {
		return contactlog.Sighting{Heard: newRPI(), Interval: i, Minutes: minutes, Attenuation: 50}
	}
	ok := at(cur-6, 5)
	keys := func(ks ...contactlog.DailyKey) []contactlog.DailyKey { return ks }
	ss := func(s ...contactlog.Sighting) []contactlog.Sighting { return s }
	good := rawReport(keys(today), ss(ok))
	withVersion := func(version byte) []byte {
		b := slices.Clone(good)
		b[0] = version
		return b
	}
	period := func(p uint8) contactlog.DailyKey {
		k := today
		k.Period = p
		return k
	}
	// tooManyKeys returns one more single-interval key than the policy
	// allows, none overlapping, the last one today's first.
	tooManyKeys := func() []contactlog.DailyKey {
		var ks []contactlog.DailyKey
		for i := range v.pol.MaxKeys() + 1 {
			ks = append(ks, contactlog.DailyKey{TEK: enid.NewTEK(), Start: today.Start - enid.Interval(i), Period: 1})
		}
		return ks
	}
	// The key before today's ends where the window begins; the one
	// spanning the window's start covers a sighting just before it.
	old := contactlog.DailyKey{TEK: enid.NewTEK(), Start: first - enid.RollingPeriod, Period: enid.RollingPeriod}
	straddling := contactlog.DailyKey{TEK: enid.NewTEK(), Start: first - 72, Period: enid.RollingPeriod}
	return []refusal{
		{"no bytes", nil, api.CodeMalformed, api.CodeMalformed},
		{"protocol v1's version", withVersion(1), api.CodeMalformed, api.CodeMalformed},
		{"protocol v2's version", withVersion(2), api.CodeMalformed, api.CodeMalformed},
		{"an unknown version", withVersion(contactlog.ReportVersion + 1), api.CodeMalformed, api.CodeMalformed},
		{"truncated in a key", good[:10], api.CodeMalformed, api.CodeMalformed},
		{"truncated in a sighting", good[:len(good)-1], api.CodeMalformed, api.CodeMalformed},
		{"trailing bytes", append(slices.Clone(good), 0), api.CodeMalformed, api.CodeMalformed},
		{"no key and no sighting", rawReport(nil, nil), api.CodeMalformed, ""},
		{"a sighting and no key", rawReport(nil, ss(ok)), api.CodeMalformed, api.CodeMalformed},
		{"a sighting before its device's key", rawReport(keys(today), ss(ok, at(today.Start-1, 5))), api.CodeMalformed, api.CodeMalformed},
		{"a sighting after its device's key", rawReport(keys(period(1)), ss(at(today.Start+1, 5))), api.CodeMalformed, api.CodeMalformed},
		{"overlapping keys", rawReport(keys(today, contactlog.DailyKey{TEK: enid.NewTEK(), Start: today.Start + 72, Period: 144}), ss(ok)), api.CodeMalformed, api.CodeMalformed},
		{"the same key twice", rawReport(keys(today, today), ss(ok)), api.CodeMalformed, api.CodeMalformed},
		{"two keys of one start", rawReport(keys(today, contactlog.DailyKey{TEK: enid.NewTEK(), Start: today.Start, Period: 1}), ss(ok)), api.CodeMalformed, api.CodeMalformed},
		{"rolling period 0", rawReport(keys(period(0)), nil), api.CodeMalformed, api.CodeMalformed},
		{"rolling period 145", rawReport(keys(period(145)), ss(ok)), api.CodeMalformed, api.CodeMalformed},
		{"a key past the last interval", rawReport(keys(today, contactlog.DailyKey{TEK: enid.NewTEK(), Start: math.MaxUint32 - 10, Period: 144}), ss(ok)), api.CodeMalformed, api.CodeMalformed},
		{"zero minutes", rawReport(keys(today), ss(ok, at(cur, 0))), api.CodeMalformed, api.CodeMalformed},
		{"minutes beyond the format", rawReport(keys(today), ss(ok, at(cur, contactlog.MaxMinutes+1))), api.CodeMalformed, api.CodeMalformed},
		{"minutes beyond the policy", rawReport(keys(today), ss(ok, at(cur, uint8(v.pol.Limits.MaxSightingMinutes)+1))), api.CodeMalformed, api.CodeMalformed},
		{"more sightings than the policy allows", rawReport(keys(today), ss(ok, ok, ok, ok, ok)), api.CodeTooLarge, api.CodeTooLarge},
		{"a sighting count beyond the policy, no sightings", append(rawReport(keys(today), nil)[:2+contactlog.DailyKeySize], 0xff, 0xff), api.CodeTooLarge, api.CodeTooLarge},
		{"more keys than the policy allows", rawReport(tooManyKeys(), nil), api.CodeTooLarge, api.CodeTooLarge},
		{"a key starting in the future", rawReport(keys(period(uint8(latest-today.Start)), contactlog.DailyKey{TEK: enid.NewTEK(), Start: latest + 1, Period: 1}), ss(ok)), api.CodeOutOfWindow, api.CodeOutOfWindow},
		{"a sighting in the future", rawReport(keys(today), ss(ok, at(latest+1, 5))), api.CodeOutOfWindow, api.CodeOutOfWindow},
		{"a key that ended before the window", rawReport(keys(old, today), ss(ok)), api.CodeOutOfWindow, ""},
		{"a sighting before the window", rawReport(keys(straddling, today), ss(ok, at(first-1, 5))), api.CodeOutOfWindow, ""},
	}
}

// Matches compare the first contactlog.RPIPrefixSize bytes of RPIs, on
// both sides: RPIs that differ only past them key alike, and a difference
// within them keys apart. So a check, which carries prefixes of the RPIs
// its phone heard, finds an upload's sighting of that phone, whose own
// RPI the enclave derives whole; and no fewer bytes decide a match.
func TestMatchKeysComparePrefixes(t *testing.T) {
	own, heard := newRPI(), newRPI()
	for i := range len(own) {
		o, h := own, heard
		o[i] ^= 1
		h[i] ^= 1
		same := i >= contactlog.RPIPrefixSize
		if got := reciprocalKey(o, heard) == reciprocalKey(own, heard); got != same {
			t.Errorf("own RPIs differing in byte %d key alike: %v, want %v", i, got, same)
		}
		if got := reciprocalKey(own, h) == reciprocalKey(own, heard); got != same {
			t.Errorf("heard RPIs differing in byte %d key alike: %v, want %v", i, got, same)
		}
		if got := oneSidedKey(h) == oneSidedKey(heard); got != same {
			t.Errorf("one-sided: RPIs differing in byte %d key alike: %v, want %v", i, got, same)
		}
	}
	if reciprocalKey(own, heard) != reciprocalKey(contactlog.RPIPrefix(own), contactlog.RPIPrefix(heard)) {
		t.Error("a whole RPI and its prefix key apart")
	}
}
