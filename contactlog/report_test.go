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

// rawReport encodes keys and sightings in the report layout without
// checking anything, to make the inputs ParseReport must refuse.
func rawReport(version byte, keys []DailyKey, ss []Sighting) []byte {
	b := []byte{version, byte(len(keys))}
	for _, k := range keys {
		b = append(b, k.TEK[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(k.Start))
		b = append(b, k.Period)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ss)))
	for _, s := range ss {
		b = append(b, s.Heard[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(s.Interval))
		b = append(b, s.Minutes, s.Attenuation)
	}
	return b
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
	vectorHex = "02" + // version
		"02" + // key count
		"11111111111111111111111111111111" + "00285420" + "90" + // TEK, start 2642976, period 144
		"22222222222222222222222222222222" + "002854b0" + "48" + // TEK, start 2643120, period 72
		"00000002" + // sighting count
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + "00285421" + "05" + "41" + // heard RPI, interval 2642977, 5 minutes, 65 dB
		"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" + "002854f7" + "3c" + "49" // heard RPI, interval 2643191, 60 minutes, 73 dB
)

func cloneReport(r Report) Report {
	return Report{Keys: slices.Clone(r.Keys), Sightings: slices.Clone(r.Sightings)}
}

func equalReports(a, b Report) bool {
	return slices.Equal(a.Keys, b.Keys) && slices.Equal(a.Sightings, b.Sightings)
}

func TestReportEncoding(t *testing.T) {
	want := unhex(t, vectorHex)
	if ReportVersion != 2 || DailyKeySize != 21 || MaxKeys != 255 {
		t.Fatalf("ReportVersion %d, DailyKeySize %d, MaxKeys %d: the documented format says 2, 21, 255", ReportVersion, DailyKeySize, MaxKeys)
	}
	b, err := vectorReport.AppendBinary(nil)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("AppendBinary = %x, %v\nwant %x", b, err, want)
	}
	if raw := rawReport(ReportVersion, vectorReport.Keys, vectorReport.Sightings); !bytes.Equal(raw, want) {
		t.Fatalf("the test's own encoder disagrees with the vector: %x", raw)
	}
	// A device may hold its keys in any order; the encoding does not.
	rev := cloneReport(vectorReport)
	slices.Reverse(rev.Keys)
	if b, err := rev.AppendBinary(nil); err != nil || !bytes.Equal(b, want) {
		t.Errorf("AppendBinary with the keys reversed = %x, %v; want the vector", b, err)
	}
	got, err := ParseReport(want, Limits{MaxKeys: 2, MaxSightings: 2})
	if err != nil || !equalReports(got, vectorReport) {
		t.Errorf("ParseReport(vector) = %+v, %v; want %+v", got, err, vectorReport)
	}
}

func TestReportRoundTrip(t *testing.T) {
	last := enid.Interval(math.MaxUint32 - 144)
	var periodOnes Report
	for i := range MaxKeys {
		periodOnes.Keys = append(periodOnes.Keys, key(byte(i), day0+enid.Interval(i), 1))
	}
	periodOnes.Sightings = []Sighting{at(1, day0), at(2, day0+MaxKeys-1)}
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
			if want := rawReport(ReportVersion, tt.r.Keys, tt.r.Sightings); !bytes.Equal(b, want) {
				t.Fatalf("AppendBinary = %x, want %x", b, want)
			}
			// Limits equal to the counts are enough.
			got, err := ParseReport(b, Limits{MaxKeys: len(tt.r.Keys), MaxSightings: len(tt.r.Sightings)})
			if err != nil {
				t.Fatal(err)
			}
			if !equalReports(got, tt.r) {
				t.Errorf("round trip gave %d keys and %d sightings, want %d and %d", len(got.Keys), len(got.Sightings), len(tt.r.Keys), len(tt.r.Sightings))
			}
			if err := tt.r.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
	if b, err := (Report{}).AppendBinary(nil); err != nil || !bytes.Equal(b, []byte{2, 0, 0, 0, 0, 0}) {
		t.Errorf("the empty report encodes to %x, %v; want 020000000000", b, err)
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
	// A version 1 batch of one (own RPI, heard RPI) pair, as the old format
	// wrote it: version, count (4), 39-byte tuple.
	v1 := append([]byte{1, 0, 0, 0, 1}, make([]byte, 39)...)
	v1[5+36+1] = 10 // a duration of 10 minutes
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"trailing byte", append(slices.Clone(good), 0), noLimits, ErrTrailing},
		{"uncounted sighting", append(slices.Clone(good), good[len(good)-SightingSize:]...), noLimits, ErrTrailing},
		{"version 0", with(func(b []byte) { b[0] = 0 }), noLimits, ErrVersion},
		{"version 1", with(func(b []byte) { b[0] = 1 }), noLimits, ErrVersion},
		{"version 3", with(func(b []byte) { b[0] = 3 }), noLimits, ErrVersion},
		{"version 255", with(func(b []byte) { b[0] = 255 }), noLimits, ErrVersion},
		{"a version 1 batch", v1, noLimits, ErrVersion},
		{"keys over the limit", good, Limits{MaxKeys: 1, MaxSightings: 2}, ErrTooMany},
		{"no keys allowed", good, Limits{MaxKeys: 0, MaxSightings: 2}, ErrTooMany},
		{"negative key limit", good, Limits{MaxKeys: -1, MaxSightings: 2}, ErrTooMany},
		{"sightings over the limit", good, Limits{MaxKeys: 2, MaxSightings: 1}, ErrTooMany},
		{"no sightings allowed", good, Limits{MaxKeys: 2, MaxSightings: 0}, ErrTooMany},
		{"negative sighting limit", good, Limits{MaxKeys: 2, MaxSightings: -1}, ErrTooMany},
		{"zero limits", good, Limits{}, ErrTooMany},
		{"huge sighting count over the limit", []byte{2, 0, 0xff, 0xff, 0xff, 0xff}, Limits{MaxSightings: 1000}, ErrTooMany},
		{"huge sighting count, little data", []byte{2, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}, noLimits, ErrTruncated},
		{"255 keys, no data", []byte{2, 255, 0, 0, 0, 0}, noLimits, ErrTruncated},
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
}

// TestMalformedReports checks that the sender and the receiver agree:
// every report that ParseReport refuses, Check and AppendBinary refuse
// with the same error.
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
		{"sighting at End", Report{Keys: []DailyKey{k}, Sightings: []Sighting{at(1, day0), at(2, k.End())}}, ErrUncovered},
		{"sighting before Start", Report{Keys: []DailyKey{k}, Sightings: []Sighting{at(2, day0-1)}}, ErrUncovered},
		{"sighting in a gap", Report{Keys: []DailyKey{later, k}, Sightings: []Sighting{at(2, day0+144)}}, ErrUncovered},
		{"sighting without keys", Report{Sightings: []Sighting{at(2, day0)}}, ErrUncovered},
		{"sighting in the last interval", Report{Keys: []DailyKey{key(2, math.MaxUint32-144, 144)}, Sightings: []Sighting{at(2, math.MaxUint32)}}, ErrUncovered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReport(rawReport(ReportVersion, tt.r.Keys, tt.r.Sightings), noLimits)
			checkOnly(t, err, tt.want)
			if got.Keys != nil || got.Sightings != nil {
				t.Error("ParseReport returned a report with an error")
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
	// More keys than the count can hold: only the sender can get there.
	var many Report
	for i := range MaxKeys + 1 {
		many.Keys = append(many.Keys, key(byte(i), day0+enid.Interval(i), 1))
	}
	checkOnly(t, cloneReport(many).Check(), ErrTooMany)
	b, err := many.AppendBinary(nil)
	checkOnly(t, err, ErrTooMany)
	if b != nil {
		t.Errorf("AppendBinary of %d keys returned %x with an error", len(many.Keys), b)
	}
}

// TestParseReportSortsKeys checks that keys out of order on the wire are
// accepted and come back sorted, as the doc promises.
func TestParseReportSortsKeys(t *testing.T) {
	keys := []DailyKey{key(3, day0+2*144, 144), key(1, day0, 144), key(2, day0+144, 144)}
	ss := []Sighting{at(1, day0+300), at(2, day0)}
	got, err := ParseReport(rawReport(ReportVersion, keys, ss), noLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Keys: []DailyKey{keys[1], keys[2], keys[0]}, Sightings: ss}
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
	if !equalReports(r, vectorReport) {
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
	manySightings := rawReport(ReportVersion, nil, randomSightings(6, ns))
	tests := []struct {
		name string
		data []byte
		lim  Limits
		max  uint64 // bytes per call, far below what decoding would take
	}{
		{"keys", manyKeys, Limits{MaxKeys: MaxKeys - 1, MaxSightings: 1}, MaxKeys * DailyKeySize / 4},
		{"sightings", manySightings, Limits{MaxKeys: 1, MaxSightings: ns - 1}, ns * SightingSize / 16},
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

// canonical returns the report encoding data with its key records sorted
// by start, which is what re-encoding a parsed report gives.
func canonical(data []byte) []byte {
	nk := int(data[1])
	var recs [][]byte
	for i := range nk {
		recs = append(recs, data[2+i*DailyKeySize:2+(i+1)*DailyKeySize])
	}
	slices.SortStableFunc(recs, func(a, b []byte) int {
		return cmp.Compare(binary.BigEndian.Uint32(a[16:20]), binary.BigEndian.Uint32(b[16:20]))
	})
	out := slices.Clone(data[:2])
	for _, r := range recs {
		out = append(out, r...)
	}
	return append(out, data[2+nk*DailyKeySize:]...)
}

func FuzzParseReport(f *testing.F) {
	vector, _ := vectorReport.AppendBinary(nil)
	empty, _ := Report{}.AppendBinary(nil)
	f.Add(vector, 2, 2)
	f.Add(vector, MaxKeys, 1000)
	f.Add(vector, 2, -1)
	f.Add(vector[:len(vector)-1], 2, 2)
	f.Add(empty, 0, 0)
	f.Add(rawReport(ReportVersion, []DailyKey{vectorReport.Keys[1], vectorReport.Keys[0]}, vectorReport.Sightings), 2, 2)
	f.Add([]byte{2, 0, 0xff, 0xff, 0xff, 0xff}, 0, math.MaxInt)
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
		for _, s := range r.Sightings {
			if c := r.Covering(s.Interval); c < 0 || !r.Keys[c].Contains(s.Interval) {
				t.Fatalf("sighting at %d is covered by no key", s.Interval)
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
