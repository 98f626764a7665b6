package contactlog

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/enid"
)

// day0 is the rolling start of a day (2020-04-01), so that keys made from
// it look like the daily keys of a phone.
const day0 enid.Interval = 2642976

// key returns a daily key whose TEK is filled with b.
func key(b byte, start enid.Interval, period uint8) DailyKey {
	k := DailyKey{Start: start, Period: period}
	for i := range k.TEK {
		k.TEK[i] = b
	}
	return k
}

// at returns a valid sighting at interval i whose Heard is filled with b.
func at(b byte, i enid.Interval) Sighting {
	s := Sighting{Interval: i, Minutes: 10, Attenuation: 50}
	for j := range s.Heard {
		s.Heard[j] = b
	}
	return s
}

// randomReport returns a well-formed report of nk consecutive daily keys,
// in order, and ns sightings in their validity, the same for the same seed.
func randomReport(seed uint64, nk, ns int) Report {
	r := rand.New(rand.NewPCG(seed, 2))
	var rep Report
	for i := range nk {
		k := DailyKey{Start: day0 + enid.Interval(i*enid.RollingPeriod), Period: enid.RollingPeriod}
		for j := range k.TEK {
			k.TEK[j] = byte(r.Uint32())
		}
		rep.Keys = append(rep.Keys, k)
	}
	for _, s := range randomSightings(seed, ns) {
		s.Interval = day0 + enid.Interval(r.IntN(nk*enid.RollingPeriod))
		rep.Sightings = append(rep.Sightings, s)
	}
	return rep
}

// group is a key and the sightings a raw report sends under it.
type group struct {
	key DailyKey
	ss  []Sighting
}

// rawReport encodes groups in the report layout without checking
// anything, to make the inputs ParseReport must refuse: each sighting's
// offset is its interval less its group's key's start, cut to a byte.
func rawReport(version byte, groups ...group) []byte {
	b := []byte{version, byte(len(groups))}
	for _, g := range groups {
		b = append(b, g.key.TEK[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(g.key.Start))
		b = append(b, g.key.Period)
		b = binary.BigEndian.AppendUint16(b, uint16(len(g.ss)))
	}
	for _, g := range groups {
		for _, s := range g.ss {
			b = append(b, s.Heard[:RPIPrefixSize]...)
			b = append(b, byte(s.Interval-g.key.Start), s.Minutes, s.Attenuation)
		}
	}
	return b
}

// groupsOf puts each sighting under the first of keys, in their order,
// valid in its interval; ok is false if a sighting has none.
func groupsOf(keys []DailyKey, ss []Sighting) (gs []group, ok bool) {
	for _, k := range keys {
		gs = append(gs, group{key: k})
	}
	for _, s := range ss {
		k := slices.IndexFunc(keys, func(k DailyKey) bool { return k.Contains(s.Interval) })
		if k < 0 {
			return nil, false
		}
		gs[k].ss = append(gs[k].ss, s)
	}
	return gs, true
}

// rawOf is rawReport of r's keys, in their order, with their sightings;
// r's sightings must all be covered.
func rawOf(t testing.TB, r Report) []byte {
	t.Helper()
	gs, ok := groupsOf(r.Keys, r.Sightings)
	if !ok {
		t.Fatal("rawOf: a sighting is covered by no key")
	}
	return rawReport(ReportVersion, gs...)
}

// sent returns what ParseReport gives back of r's encoding: the keys
// sorted, each key's sightings after the previous key's, in their order in
// r, with only their heard RPI's prefix.
func sent(r Report) Report {
	out := Report{Keys: slices.Clone(r.Keys)}
	slices.SortStableFunc(out.Keys, func(a, b DailyKey) int { return cmp.Compare(a.Start, b.Start) })
	gs, _ := groupsOf(out.Keys, r.Sightings)
	for _, g := range gs {
		for _, s := range g.ss {
			s.Heard = RPIPrefix(s.Heard)
			out.Sightings = append(out.Sightings, s)
		}
	}
	return out
}

// noLimits accepts any report that fits in memory.
var noLimits = Limits{MaxKeys: MaxKeys, MaxSightings: math.MaxInt}

// The report of the hand-written vector: two adjacent keys, the second
// released early in its day, and a sighting in the first interval after the
// first key's start and one in the last interval of the second key.
var (
	vectorReport = Report{
		Keys: []DailyKey{key(0x11, day0, 144), key(0x22, day0+144, 72)},
		Sightings: []Sighting{
			{Heard: enid.RPI(bytes.Repeat([]byte{0xaa}, 16)), Interval: day0 + 1, Minutes: 5, Attenuation: 65},
			{Heard: enid.RPI(bytes.Repeat([]byte{0xbb}, 16)), Interval: day0 + 144 + 71, Minutes: 60, Attenuation: 73},
		},
	}
	vectorHex = "03" + // version
		"02" + // key count
		"11111111111111111111111111111111" + "00285420" + "90" + "0001" + // TEK, start 2642976, period 144, one sighting
		"22222222222222222222222222222222" + "002854b0" + "48" + "0001" + // TEK, start 2643120, period 72, one sighting
		"aaaaaaaaaaaaaaaa" + "01" + "05" + "41" + // heard RPI prefix, interval 2642977, 5 minutes, 65 dB
		"bbbbbbbbbbbbbbbb" + "47" + "3c" + "49" // heard RPI prefix, interval 2643191, 60 minutes, 73 dB
)

func cloneReport(r Report) Report {
	return Report{Keys: slices.Clone(r.Keys), Sightings: slices.Clone(r.Sightings)}
}

func equalReports(a, b Report) bool {
	return slices.Equal(a.Keys, b.Keys) && slices.Equal(a.Sightings, b.Sightings)
}

func TestReportEncoding(t *testing.T) {
	want := unhex(t, vectorHex)
	if ReportVersion != 3 || DailyKeySize != 21 || ReportSightingSize != 11 || RPIPrefixSize != 8 || MaxKeys != 255 || MaxKeySightings != 65535 {
		t.Fatalf("ReportVersion %d, DailyKeySize %d, ReportSightingSize %d, RPIPrefixSize %d, MaxKeys %d, MaxKeySightings %d: the documented format says 3, 21, 11, 8, 255, 65535",
			ReportVersion, DailyKeySize, ReportSightingSize, RPIPrefixSize, MaxKeys, MaxKeySightings)
	}
	b, err := vectorReport.AppendBinary(nil)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("AppendBinary = %x, %v\nwant %x", b, err, want)
	}
	if raw := rawOf(t, vectorReport); !bytes.Equal(raw, want) {
		t.Fatalf("the test's own encoder disagrees with the vector: %x", raw)
	}
	// A device may hold its keys and sightings in any order; the encoding
	// does not.
	rev := cloneReport(vectorReport)
	slices.Reverse(rev.Keys)
	slices.Reverse(rev.Sightings)
	if b, err := rev.AppendBinary(nil); err != nil || !bytes.Equal(b, want) {
		t.Errorf("AppendBinary with the keys and sightings reversed = %x, %v; want the vector", b, err)
	}
	got, err := ParseReport(want, Limits{MaxKeys: 2, MaxSightings: 2})
	if err != nil || !equalReports(got, sent(vectorReport)) {
		t.Errorf("ParseReport(vector) = %+v, %v; want %+v", got, err, sent(vectorReport))
	}
	for _, s := range got.Sightings {
		if s.Heard != RPIPrefix(s.Heard) {
			t.Errorf("a parsed sighting heard %x: more than the prefix", s.Heard)
		}
	}
}

func TestRPIPrefix(t *testing.T) {
	rpi := enid.RPI{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if got, want := RPIPrefix(rpi), (enid.RPI{1, 2, 3, 4, 5, 6, 7, 8}); got != want {
		t.Errorf("RPIPrefix(%x) = %x, want %x", rpi, got, want)
	}
	if rpi[15] != 16 {
		t.Error("RPIPrefix changed its argument")
	}
}

// A device's log hands out sightings in order of interval; a report
// keeps that order, since the keys' groups follow the keys' order.
func TestReportKeepsIntervalOrder(t *testing.T) {
	r := randomReport(4, 14, 500)
	slices.SortStableFunc(r.Sightings, func(a, b Sighting) int { return cmp.Compare(a.Interval, b.Interval) })
	b, err := cloneReport(r).AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseReport(b, noLimits)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range r.Sightings {
		if want := (Sighting{Heard: RPIPrefix(s.Heard), Interval: s.Interval, Minutes: s.Minutes, Attenuation: s.Attenuation}); got.Sightings[i] != want {
			t.Fatalf("sighting %d came back as %+v, want %+v", i, got.Sightings[i], want)
		}
	}
}

func TestReportRoundTrip(t *testing.T) {
	last := enid.Interval(math.MaxUint32 - 144)
	var periodOnes Report
	for i := range MaxKeys {
		periodOnes.Keys = append(periodOnes.Keys, key(byte(i), day0+enid.Interval(i), 1))
	}
	periodOnes.Sightings = []Sighting{at(1, day0), at(2, day0+MaxKeys-1)}
	full := Report{Keys: []DailyKey{key(1, day0, 144)}}
	for i := range MaxKeySightings {
		full.Sightings = append(full.Sightings, at(byte(i), day0+enid.Interval(i%144)))
	}
	tests := []struct {
		name string
		r    Report
	}{
		{"nothing", Report{}},
		{"keys only", Report{Keys: vectorReport.Keys}},
		{"vector", vectorReport},
		{"sightings either side of adjacent keys", Report{
			Keys:      []DailyKey{key(1, day0, 144), key(2, day0+144, 144)},
			Sightings: []Sighting{at(1, day0+143), at(2, day0+144), at(3, day0)},
		}},
		{"gap between keys", Report{
			Keys:      []DailyKey{key(1, day0, 10), key(2, day0+144, 144)},
			Sightings: []Sighting{at(1, day0+9), at(2, day0+144)},
		}},
		{"shortest and longest sightings", Report{
			Keys:      []DailyKey{key(1, day0, 144)},
			Sightings: []Sighting{{Interval: day0, Minutes: 1}, {Interval: day0, Minutes: MaxMinutes}},
		}},
		{"first interval", Report{Keys: []DailyKey{key(1, 0, 1)}, Sightings: []Sighting{at(1, 0)}}},
		{"last day", Report{Keys: []DailyKey{key(1, last, 144)}, Sightings: []Sighting{at(1, math.MaxUint32-1)}}},
		{"MaxKeys keys of one interval", periodOnes},
		{"MaxKeySightings under one key", full},
		{"two weeks", randomReport(3, 14, 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0xde, 0xad}
			b, err := cloneReport(tt.r).AppendBinary(prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:2], prefix) {
				t.Fatal("AppendBinary overwrote the prefix")
			}
			b = b[2:]
			want := sent(tt.r)
			if raw := rawOf(t, want); !bytes.Equal(b, raw) {
				t.Fatalf("AppendBinary = %x, want %x", b, raw)
			}
			if n := 2 + len(tt.r.Keys)*(DailyKeySize+2) + len(tt.r.Sightings)*ReportSightingSize; len(b) != n {
				t.Errorf("AppendBinary wrote %d bytes, want %d", len(b), n)
			}
			// Limits equal to the counts are enough.
			got, err := ParseReport(b, Limits{MaxKeys: len(tt.r.Keys), MaxSightings: len(tt.r.Sightings)})
			if err != nil {
				t.Fatal(err)
			}
			if !equalReports(got, want) {
				t.Errorf("round trip gave %d keys and %d sightings, want %d and %d", len(got.Keys), len(got.Sightings), len(want.Keys), len(want.Sightings))
			}
			if err := tt.r.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
	if b, err := (Report{}).AppendBinary(nil); err != nil || !bytes.Equal(b, []byte{3, 0}) {
		t.Errorf("the empty report encodes to %x, %v; want 0300", b, err)
	}
}

func TestParseReportTruncated(t *testing.T) {
	for _, r := range []Report{{}, {Keys: vectorReport.Keys}, vectorReport} {
		b, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			got, err := ParseReport(b[:n], noLimits)
			checkOnly(t, err, ErrTruncated)
			if got.Keys != nil || got.Sightings != nil {
				t.Fatalf("cut at %d of %d: returned a report with an error", n, len(b))
			}
		}
	}
}

func TestParseReportErrors(t *testing.T) {
	good := unhex(t, vectorHex)
	with := func(f func(b []byte)) []byte {
		b := slices.Clone(good)
		f(b)
		return b
	}
	// Protocol v2's encoding of the vector: whole heard RPIs and intervals,
	// one sighting count.
	v2 := unhex(t, "0202"+
		"11111111111111111111111111111111"+"00285420"+"90"+
		"22222222222222222222222222222222"+"002854b0"+"48"+
		"00000002"+
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"+"00285421"+"05"+"41"+
		"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"+"002854f7"+"3c"+"49")
	// A version 1 batch of one (own RPI, heard RPI) pair, as the first
	// format wrote it: version, count (4), 39-byte tuple.
	v1 := append([]byte{1, 0, 0, 0, 1}, make([]byte, 39)...)
	v1[5+36+1] = 10 // a duration of 10 minutes
	oneKey := rawReport(ReportVersion, group{key: key(1, day0, 144)})
	manyUnderOne := append(slices.Clone(oneKey[:len(oneKey)-2]), 0xff, 0xff)
	// The second key, valid for 72 intervals, holds the last sighting,
	// whose offset is the third byte from the end.
	offset := func(o byte) []byte { return with(func(b []byte) { b[len(b)-3] = o }) }
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"trailing byte", append(slices.Clone(good), 0), noLimits, ErrTrailing},
		{"uncounted sighting", append(slices.Clone(good), good[len(good)-ReportSightingSize:]...), noLimits, ErrTrailing},
		{"version 0", with(func(b []byte) { b[0] = 0 }), noLimits, ErrVersion},
		{"version 1", with(func(b []byte) { b[0] = 1 }), noLimits, ErrVersion},
		{"version 2", with(func(b []byte) { b[0] = 2 }), noLimits, ErrVersion},
		{"version 4", with(func(b []byte) { b[0] = 4 }), noLimits, ErrVersion},
		{"version 255", with(func(b []byte) { b[0] = 255 }), noLimits, ErrVersion},
		{"a version 1 batch", v1, noLimits, ErrVersion},
		{"a version 2 report", v2, noLimits, ErrVersion},
		{"keys over the limit", good, Limits{MaxKeys: 1, MaxSightings: 2}, ErrTooMany},
		{"no keys allowed", good, Limits{MaxKeys: 0, MaxSightings: 2}, ErrTooMany},
		{"negative key limit", good, Limits{MaxKeys: -1, MaxSightings: 2}, ErrTooMany},
		{"sightings over the limit", good, Limits{MaxKeys: 2, MaxSightings: 1}, ErrTooMany},
		{"no sightings allowed", good, Limits{MaxKeys: 2, MaxSightings: 0}, ErrTooMany},
		{"negative sighting limit", good, Limits{MaxKeys: 2, MaxSightings: -1}, ErrTooMany},
		{"zero limits", good, Limits{}, ErrTooMany},
		{"huge sighting count over the limit", manyUnderOne, Limits{MaxKeys: 1, MaxSightings: 1000}, ErrTooMany},
		{"huge sighting count, little data", append(manyUnderOne, 1, 2, 3), noLimits, ErrTruncated},
		{"255 keys, no data", []byte{3, 255}, noLimits, ErrTruncated},
		{"offset at the key's period", offset(72), noLimits, ErrInvalid},
		{"offset 255", offset(255), noLimits, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReport(tt.data, tt.lim)
			checkOnly(t, err, tt.want)
			if got.Keys != nil || got.Sightings != nil {
				t.Error("returned a report with an error")
			}
		})
	}
	if _, err := ParseReport(offset(71), noLimits); err != nil {
		t.Errorf("the last interval of a key of 72: %v", err)
	}
}

// TestMalformedReports checks that the sender and the receiver agree:
// every report that ParseReport refuses, Check and AppendBinary refuse
// with the same error. A sighting no key covers cannot be put on the wire
// (the closest, an offset past its key, is ErrInvalid above), so for those
// only the sender's side is checked.
func TestMalformedReports(t *testing.T) {
	k := key(1, day0, 144)
	later := key(3, day0+2*144, 144)
	minutes := func(m uint8) []Sighting { return []Sighting{at(1, day0), {Interval: day0 + 1, Minutes: m}} }
	tests := []struct {
		name string
		r    Report
		want error
	}{
		{"zero minutes", Report{Keys: []DailyKey{k}, Sightings: minutes(0)}, ErrInvalid},
		{"one minute too many", Report{Keys: []DailyKey{k}, Sightings: minutes(MaxMinutes + 1)}, ErrInvalid},
		{"255 minutes", Report{Keys: []DailyKey{k}, Sightings: minutes(255)}, ErrInvalid},
		{"period 0", Report{Keys: []DailyKey{k, key(2, day0+144, 0)}}, ErrInvalid},
		{"period 145", Report{Keys: []DailyKey{key(2, day0, 145)}}, ErrInvalid},
		{"period 255", Report{Keys: []DailyKey{key(2, day0, 255)}}, ErrInvalid},
		{"validity past the last interval", Report{Keys: []DailyKey{key(2, math.MaxUint32-10, 11)}}, ErrInvalid},
		{"a day from the last interval", Report{Keys: []DailyKey{key(2, math.MaxUint32-143, 144)}}, ErrInvalid},
		{"last interval as start", Report{Keys: []DailyKey{key(2, math.MaxUint32, 1)}}, ErrInvalid},
		{"duplicate key", Report{Keys: []DailyKey{k, k}}, ErrOverlap},
		{"same start, other TEK", Report{Keys: []DailyKey{k, key(2, day0, 144)}}, ErrOverlap},
		{"same start, shorter", Report{Keys: []DailyKey{k, key(2, day0, 1)}}, ErrOverlap},
		{"overlap by one interval", Report{Keys: []DailyKey{k, key(2, day0+143, 144)}}, ErrOverlap},
		{"overlap by one interval, out of order", Report{Keys: []DailyKey{key(2, day0+143, 144), k}}, ErrOverlap},
		{"key inside another, out of order", Report{Keys: []DailyKey{key(2, day0+10, 5), k}}, ErrOverlap},
		{"overlap of keys apart on the wire", Report{Keys: []DailyKey{k, later, key(2, day0+100, 10)}}, ErrOverlap},
		{"overlapping keys and a sighting in both", Report{Keys: []DailyKey{k, key(2, day0+143, 144)}, Sightings: []Sighting{at(1, day0+143)}}, ErrOverlap},
		{"sighting at End", Report{Keys: []DailyKey{k}, Sightings: []Sighting{at(1, day0), at(2, k.End())}}, ErrUncovered},
		{"sighting before Start", Report{Keys: []DailyKey{k}, Sightings: []Sighting{at(2, day0-1)}}, ErrUncovered},
		{"sighting in a gap", Report{Keys: []DailyKey{later, k}, Sightings: []Sighting{at(2, day0+144)}}, ErrUncovered},
		{"sighting without keys", Report{Sightings: []Sighting{at(2, day0)}}, ErrUncovered},
		{"sighting in the last interval", Report{Keys: []DailyKey{key(2, math.MaxUint32-144, 144)}, Sightings: []Sighting{at(2, math.MaxUint32)}}, ErrUncovered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if gs, ok := groupsOf(tt.r.Keys, tt.r.Sightings); ok {
				got, err := ParseReport(rawReport(ReportVersion, gs...), noLimits)
				checkOnly(t, err, tt.want)
				if got.Keys != nil || got.Sightings != nil {
					t.Error("ParseReport returned a report with an error")
				}
			} else if tt.want != ErrUncovered {
				t.Fatal("the test cannot encode its report")
			}
			checkOnly(t, cloneReport(tt.r).Check(), tt.want)
			prefix := []byte("keep")
			b, err := cloneReport(tt.r).AppendBinary(prefix)
			checkOnly(t, err, tt.want)
			if !bytes.Equal(b, prefix) {
				t.Errorf("AppendBinary returned %q with an error, want the input %q", b, prefix)
			}
		})
	}
	// More keys, or more sightings under one key, than the counts can
	// hold: only the sender can get there.
	var many Report
	for i := range MaxKeys + 1 {
		many.Keys = append(many.Keys, key(byte(i), day0+enid.Interval(i), 1))
	}
	crowded := Report{Keys: []DailyKey{k}, Sightings: make([]Sighting, MaxKeySightings+1)}
	for i := range crowded.Sightings {
		crowded.Sightings[i] = at(byte(i), day0+enid.Interval(i%144))
	}
	for _, r := range []Report{many, crowded} {
		checkOnly(t, cloneReport(r).Check(), ErrTooMany)
		b, err := r.AppendBinary(nil)
		checkOnly(t, err, ErrTooMany)
		if b != nil {
			t.Errorf("AppendBinary of %d keys and %d sightings returned %x with an error", len(r.Keys), len(r.Sightings), b)
		}
	}
}

// TestParseReportSortsKeys checks that keys out of order on the wire are
// accepted and come back sorted, each with its own sightings, as the doc
// promises.
func TestParseReportSortsKeys(t *testing.T) {
	keys := []DailyKey{key(3, day0+2*144, 144), key(1, day0, 144), key(2, day0+144, 144)}
	g3, g1 := []Sighting{at(1, day0+300), at(3, day0+288)}, []Sighting{at(2, day0)}
	got, err := ParseReport(rawReport(ReportVersion, group{keys[0], g3}, group{keys[1], g1}, group{key: keys[2]}), noLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := sent(Report{Keys: []DailyKey{keys[1], keys[2], keys[0]}, Sightings: append(slices.Clone(g1), g3...)})
	if !equalReports(got, want) {
		t.Errorf("ParseReport = %+v, want %+v", got, want)
	}
	if got.Covering(day0+300) != 2 {
		t.Errorf("Covering(%d) = %d after ParseReport, want 2", day0+300, got.Covering(day0+300))
	}
}

func TestCheckSortsKeys(t *testing.T) {
	keys := []DailyKey{key(3, day0+300, 1), key(2, day0+144, 144), key(1, day0, 10)}
	r := Report{Keys: keys, Sightings: []Sighting{at(1, day0+300), at(2, day0+5)}}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	// Sorted in place, so that the caller's Covering works afterwards.
	if !slices.IsSortedFunc(keys, func(a, b DailyKey) int { return cmp.Compare(a.Start, b.Start) }) {
		t.Errorf("after Check the keys start at %d, %d, %d; want them sorted", keys[0].Start, keys[1].Start, keys[2].Start)
	}
	if r.Covering(day0+300) != 2 || r.Covering(day0+5) != 0 {
		t.Error("Covering does not find the sorted keys")
	}
}

func TestCovering(t *testing.T) {
	r := Report{Keys: []DailyKey{key(1, 100, 44), key(2, 144, 144), key(3, 300, 1), key(4, math.MaxUint32-144, 144)}}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		i    enid.Interval
		want int
	}{
		{0, -1}, {99, -1}, {100, 0}, {143, 0}, {144, 1}, {287, 1}, {288, -1},
		{299, -1}, {300, 2}, {301, -1},
		{math.MaxUint32 - 145, -1}, {math.MaxUint32 - 144, 3}, {math.MaxUint32 - 1, 3}, {math.MaxUint32, -1},
	}
	for _, tt := range tests {
		if got := r.Covering(tt.i); got != tt.want {
			t.Errorf("Covering(%d) = %d, want %d", tt.i, got, tt.want)
		}
	}
	// Every interval around the keys agrees with a linear search.
	for i := enid.Interval(0); i < 400; i++ {
		want := slices.IndexFunc(r.Keys, func(k DailyKey) bool { return k.Contains(i) })
		if got := r.Covering(i); got != want {
			t.Fatalf("Covering(%d) = %d, want %d", i, got, want)
		}
	}
	if got := (Report{}).Covering(100); got != -1 {
		t.Errorf("Covering without keys = %d, want -1", got)
	}
	// coveringNear agrees with Covering from every hint, in range or not.
	for i := enid.Interval(0); i < 400; i++ {
		for hint := -1; hint <= len(r.Keys)+1; hint++ {
			if got, want := r.coveringNear(hint, i), r.Covering(i); got != want {
				t.Fatalf("coveringNear(%d, %d) = %d, want %d", hint, i, got, want)
			}
		}
	}
}

func TestDailyKey(t *testing.T) {
	k := key(7, 100, 44)
	if k.End() != 144 {
		t.Errorf("End() = %d, want 144", k.End())
	}
	for i, want := range map[enid.Interval]bool{99: false, 100: true, 143: true, 144: false} {
		if k.Contains(i) != want {
			t.Errorf("Contains(%d) = %v, want %v", i, !want, want)
		}
	}
	ek, err := k.Key()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := enid.NewKey(k.TEK, k.Start, int(k.Period))
	if err != nil {
		t.Fatal(err)
	}
	if ek.TEK() != k.TEK || ek.Start() != k.Start || ek.Period() != int(k.Period) || ek.RPI(120) != ref.RPI(120) {
		t.Error("Key() does not derive the key's RPIs")
	}
	if _, err := key(7, 100, 0).Key(); !errors.Is(err, enid.ErrRollingPeriod) {
		t.Errorf("Key() of period 0: %v, want enid.ErrRollingPeriod", err)
	}
}

func TestReportClear(t *testing.T) {
	r, err := ParseReport(unhex(t, vectorHex), noLimits)
	if err != nil {
		t.Fatal(err)
	}
	keys, ss := r.Keys, r.Sightings
	r.Clear()
	if len(keys) != 2 || len(ss) != 2 {
		t.Fatal("Clear changed the lengths")
	}
	for _, k := range keys {
		if k != (DailyKey{}) {
			t.Errorf("after Clear a key is %+v", k)
		}
	}
	for _, s := range ss {
		if s != (Sighting{}) {
			t.Errorf("after Clear a sighting is %+v", s)
		}
	}
	Report{}.Clear() // nothing to clear is fine
}

// TestParseReportCopies checks that a report does not share memory with
// the request it came from, which the caller may reuse or wipe.
func TestParseReportCopies(t *testing.T) {
	data := unhex(t, vectorHex)
	r, err := ParseReport(data, noLimits)
	if err != nil {
		t.Fatal(err)
	}
	clear(data)
	if !equalReports(r, sent(vectorReport)) {
		t.Error("wiping the input changed the parsed report")
	}
}

// TestParseReportLimitsBeforeAllocation checks that a report over the
// limits is refused before its keys or sightings are allocated, so that
// the limits bound what a sender can make the receiver allocate.
func TestParseReportLimitsBeforeAllocation(t *testing.T) {
	var keys Report
	for i := range MaxKeys {
		keys.Keys = append(keys.Keys, key(byte(i), day0+enid.Interval(i), 1))
	}
	manyKeys, err := keys.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	const ns = 20000
	var under Report
	under.Keys = []DailyKey{key(1, day0, 144)}
	for i := range ns {
		under.Sightings = append(under.Sightings, at(byte(i), day0+enid.Interval(i%144)))
	}
	manySightings := rawOf(t, under)
	tests := []struct {
		name string
		data []byte
		lim  Limits
		max  uint64 // bytes per call, far below what decoding would take
	}{
		{"keys", manyKeys, Limits{MaxKeys: MaxKeys - 1, MaxSightings: 1}, MaxKeys * DailyKeySize / 4},
		{"sightings", manySightings, Limits{MaxKeys: 1, MaxSightings: ns - 1}, ns * ReportSightingSize / 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const runs = 50
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if _, err := ParseReport(tt.data, tt.lim); !errors.Is(err, ErrTooMany) {
					t.Fatalf("ParseReport: %v, want ErrTooMany", err)
				}
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > tt.max {
				t.Errorf("refusing a report over the limits allocated %d bytes a call, want at most %d", per, tt.max)
			}
		})
	}
}

// canonical returns the report encoding data with its keys sorted by
// start, each with its group of sightings, which is what re-encoding a
// parsed report gives.
func canonical(data []byte) []byte {
	const entry = DailyKeySize + 2
	nk := int(data[1])
	type rec struct{ key, group []byte }
	var recs []rec
	at := 2 + nk*entry
	for i := range nk {
		e := data[2+i*entry : 2+(i+1)*entry]
		n := int(binary.BigEndian.Uint16(e[DailyKeySize:])) * ReportSightingSize
		recs = append(recs, rec{e, data[at : at+n]})
		at += n
	}
	slices.SortStableFunc(recs, func(a, b rec) int {
		return cmp.Compare(binary.BigEndian.Uint32(a.key[16:20]), binary.BigEndian.Uint32(b.key[16:20]))
	})
	out := slices.Clone(data[:2])
	for _, r := range recs {
		out = append(out, r.key...)
	}
	for _, r := range recs {
		out = append(out, r.group...)
	}
	return out
}

func FuzzParseReport(f *testing.F) {
	vector, _ := vectorReport.AppendBinary(nil)
	empty, _ := Report{}.AppendBinary(nil)
	gs, _ := groupsOf(vectorReport.Keys, vectorReport.Sightings)
	f.Add(vector, 2, 2)
	f.Add(vector, MaxKeys, 1000)
	f.Add(vector, 2, -1)
	f.Add(vector[:len(vector)-1], 2, 2)
	f.Add(empty, 0, 0)
	f.Add(rawReport(ReportVersion, gs[1], gs[0]), 2, 2)
	f.Add(rawReport(ReportVersion, group{key(1, day0, 144), []Sighting{at(1, day0+144)}}), 1, 1)
	f.Add(append(append([]byte{3, 1}, make([]byte, 20)...), 144, 0xff, 0xff), 1, math.MaxInt)
	f.Add(append([]byte{1, 0, 0, 0, 1}, make([]byte, 39)...), 2, 2)
	f.Fuzz(func(t *testing.T, data []byte, maxKeys, maxSightings int) {
		r, err := ParseReport(data, Limits{MaxKeys: maxKeys, MaxSightings: maxSightings})
		if err != nil {
			matched := 0
			for _, e := range allErrors {
				if errors.Is(err, e) {
					matched++
				}
			}
			if matched != 1 {
				t.Fatalf("error %v matches %d of the package's errors, want 1", err, matched)
			}
			if r.Keys != nil || r.Sightings != nil {
				t.Fatal("returned a report with an error")
			}
			return
		}
		if len(r.Keys) > maxKeys || len(r.Sightings) > maxSightings {
			t.Fatalf("accepted %d keys and %d sightings with limits %d and %d", len(r.Keys), len(r.Sightings), maxKeys, maxSightings)
		}
		for i := 1; i < len(r.Keys); i++ {
			if r.Keys[i].Start < r.Keys[i-1].End() {
				t.Fatalf("keys %d and %d overlap or are out of order", i-1, i)
			}
		}
		last := 0
		for _, s := range r.Sightings {
			c := r.Covering(s.Interval)
			if c < 0 || !r.Keys[c].Contains(s.Interval) {
				t.Fatalf("sighting at %d is covered by no key", s.Interval)
			}
			if c < last {
				t.Fatalf("a sighting of key %d after one of key %d", c, last)
			}
			last = c
			if s.Heard != RPIPrefix(s.Heard) {
				t.Fatalf("a sighting heard %x, more than a prefix", s.Heard)
			}
		}
		if err := cloneReport(r).Check(); err != nil {
			t.Fatalf("Check of an accepted report: %v", err)
		}
		// The encoding is canonical up to the order of the keys, which
		// ParseReport sorts: a sorted input re-encodes to itself.
		again, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatalf("re-encoding an accepted report: %v", err)
		}
		if want := canonical(data); !bytes.Equal(again, want) {
			t.Fatalf("decode then encode changed %x into %x, want %x", data, again, want)
		}
	})
}
