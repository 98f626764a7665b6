package gps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testNow is the clock of the tests: 2024-03-02T00:00:00Z.
func testNow() time.Time { return time.Unix(1_709_337_600, 0) }

var testLimits = Limits{Now: testNow}

func TestParseCSV(t *testing.T) {
	in := "time,lat,lon,accuracy\n" +
		"# a comment\n" +
		"2024-03-01T12:00:00Z,46.51234564,6.6,4.04\n" +
		"1709294460, -46.5 , 179.99999999\n" + // 12:01, no accuracy, spaces
		"2024-03-01T13:01:00.9+01:00,-46.5,-180,\n" + // same second as above, fraction dropped
		"1709294520.75,-46.5001,-179.9999,12\n"
	got, err := ParseCSV(strings.NewReader(in), Limits{Now: testNow, MaxSpeed: 1e9})
	if err != nil {
		t.Fatal(err)
	}
	want := Trace{
		{Time: 1709294400, Lat: 46.5123456, Lon: 6.6, Accuracy: 4},
		{Time: 1709294460, Lat: -46.5, Lon: 180},
		{Time: 1709294460, Lat: -46.5, Lon: -180},
		{Time: 1709294520, Lat: -46.5001, Lon: -179.9999, Accuracy: 12},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	const ok = "1709294400,46.5,6.6\n"
	tests := []struct {
		name string
		csv  string
		want error
		line int // the line the error must name, if any
	}{
		{"latitude", ok + "1709294460,90.01,6.6\n", ErrLatitude, 2},
		{"longitude", ok + "1709294460,46.5,-180.5\n", ErrLongitude, 2},
		{"NaN", "1709294400,NaN,6.6\n", ErrSyntax, 1},
		{"infinity", "1709294400,46.5,+Inf\n", ErrSyntax, 1},
		{"not a number", "1709294400,north,6.6\n", ErrSyntax, 1},
		{"fields", "1709294400,46.5\n", ErrSyntax, 1},
		{"bad time", "yesterday,46.5,6.6\n", ErrTime, 1},
		{"bad RFC 3339", "2024-13-01T00:00:00Z,46.5,6.6\n", ErrTime, 1},
		{"before 2000", "86400,46.5,6.6\n", ErrTime, 1},
		{"unordered", ok + "1709294399,46.5,6.6\n", ErrOrder, 2},
		{"future", ok + "1709341201,46.5,6.6\n", ErrFuture, 2},
		{"speed", ok + "1709294401,46.6,6.6\n", ErrSpeed, 2}, // 11 km in a second
		{"negative accuracy", "1709294400,46.5,6.6,-1\n", ErrAccuracy, 1},
		{"absurd accuracy", "1709294400,46.5,6.6,5000\n", ErrAccuracy, 1},
		{"quote", "1709294400,\"46.5,6.6\n", ErrSyntax, 0},
	}
	for _, tt := range tests {
		_, err := ParseCSV(strings.NewReader(tt.csv), testLimits)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
			continue
		}
		var pe *PointError
		if tt.line > 0 && (!errors.As(err, &pe) || pe.Line != tt.line) {
			t.Errorf("%s: error %v does not name line %d", tt.name, err, tt.line)
		}
	}
}

func TestParseLimits(t *testing.T) {
	var b strings.Builder
	for i := range 11 {
		fmt.Fprintf(&b, "%d,46.5,6.6\n", 1709294400+i)
	}
	if _, err := ParseCSV(strings.NewReader(b.String()), Limits{Now: testNow, MaxPoints: 10}); !errors.Is(err, ErrTooManyPoints) {
		t.Errorf("11 points with MaxPoints 10: %v", err)
	}
	if _, err := ParseCSV(strings.NewReader(b.String()), Limits{Now: testNow, MaxPoints: 11}); err != nil {
		t.Errorf("11 points with MaxPoints 11: %v", err)
	}
	if _, err := ParseCSV(strings.NewReader(b.String()), Limits{Now: testNow, MaxBytes: int64(b.Len() - 1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one byte over MaxBytes: %v", err)
	}
	if _, err := ParseCSV(strings.NewReader(b.String()), Limits{Now: testNow, MaxBytes: int64(b.Len())}); err != nil {
		t.Errorf("exactly MaxBytes: %v", err)
	}
	gpx := gpxDoc(b.Len())
	if _, err := ParseGPX(strings.NewReader(gpx), Limits{Now: testNow, MaxBytes: int64(len(gpx) - 1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("GPX one byte over MaxBytes: %v", err)
	}
	// A slow plane is fine; a faster-than-airliner one is not.
	plane := "1709294400,46.5,6.6\n1709294460,46.5,6.8\n" // 15.3 km/min = 918 km/h
	if _, err := ParseCSV(strings.NewReader(plane), testLimits); err != nil {
		t.Errorf("918 km/h: %v", err)
	}
	fast := "1709294400,46.5,6.6\n1709294460,46.5,6.9\n" // 1377 km/h
	if _, err := ParseCSV(strings.NewReader(fast), testLimits); !errors.Is(err, ErrSpeed) {
		t.Errorf("1377 km/h: %v", err)
	}
	// GPS jitter with equal timestamps is within SameTimeSlack; a jump at
	// one instant (a forged trace sweeping a neighbourhood) is not.
	jitter := "1709294400,46.5,6.6\n1709294400,46.5002,6.6\n" // 22 m
	if _, err := ParseCSV(strings.NewReader(jitter), testLimits); err != nil {
		t.Errorf("22 m jitter at one timestamp: %v", err)
	}
	jump := "1709294400,46.5,6.6\n1709294400,46.5009,6.6\n" // 100 m
	if _, err := ParseCSV(strings.NewReader(jump), testLimits); !errors.Is(err, ErrSpeed) {
		t.Errorf("100 m jump at one timestamp: %v, want ErrSpeed", err)
	}
}

// gpxDoc returns a GPX document of n points.
func gpxDoc(n int) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
<trk><name>walk</name><trkseg>
`)
	for i := range n {
		fmt.Fprintf(&b, "<trkpt lat=\"46.5%04d\" lon=\"6.6\"><ele>372</ele><time>%s</time></trkpt>\n",
			i, time.Unix(1709294400+int64(i)*60, 0).UTC().Format(time.RFC3339))
	}
	b.WriteString("</trkseg></trk></gpx>\n")
	return b.String()
}

func TestParseGPX(t *testing.T) {
	got, err := ParseGPX(strings.NewReader(gpxDoc(3)), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := Trace{
		{Time: 1709294400, Lat: 46.5, Lon: 6.6},
		{Time: 1709294460, Lat: 46.50001, Lon: 6.6},
		{Time: 1709294520, Lat: 46.50002, Lon: 6.6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// The same trace as CSV parses to the same points.
	csv, err := ParseCSV(strings.NewReader("1709294400,46.5,6.6\n1709294460,46.500010000001,6.6\n1709294520,46.50002,6.6\n"), testLimits)
	if err != nil || !reflect.DeepEqual(csv, want) {
		t.Errorf("CSV of the same trace: %+v, %v", csv, err)
	}
}

func TestParseGPXErrors(t *testing.T) {
	pt := func(attrs, inner string) string {
		return `<gpx><trk><trkseg><trkpt ` + attrs + `>` + inner + `</trkpt></trkseg></trk></gpx>`
	}
	const tm = "<time>2024-03-01T12:00:00Z</time>"
	tests := []struct {
		name string
		doc  string
		want error
	}{
		{"DTD", `<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx>&a;</gpx>`, ErrDTD},
		{"undefined entity", `<gpx>&lol;</gpx>`, ErrSyntax},
		{"mismatched tags", `<gpx><trk></gpx>`, ErrSyntax},
		{"unterminated", `<gpx><trk><trkseg><trkpt lat="1" lon="2">`, ErrSyntax},
		{"no lat", pt(`lon="6.6"`, tm), ErrSyntax},
		{"bad lat", pt(`lat="x" lon="6.6"`, tm), ErrSyntax},
		{"lat range", pt(`lat="-91" lon="6.6"`, tm), ErrLatitude},
		{"lon range", pt(`lat="46" lon="181"`, tm), ErrLongitude},
		{"no time", pt(`lat="46" lon="6"`, ""), ErrTime},
		{"bad time", pt(`lat="46" lon="6"`, "<time>noon</time>"), ErrTime},
		{"long time", pt(`lat="46" lon="6"`, "<time>"+strings.Repeat(" ", 100)+"</time>"), ErrTime},
		{"future", pt(`lat="46" lon="6"`, "<time>2030-01-01T00:00:00Z</time>"), ErrFuture},
	}
	for _, tt := range tests {
		if _, err := ParseGPX(strings.NewReader(tt.doc), testLimits); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := ParseGPX(strings.NewReader(gpxDoc(11)), Limits{Now: testNow, MaxPoints: 10}); !errors.Is(err, ErrTooManyPoints) {
		t.Errorf("11 points with MaxPoints 10: %v", err)
	}
	var pe *PointError
	if _, err := ParseGPX(strings.NewReader(strings.Replace(gpxDoc(5), `lat="46.50003"`, `lat="146.5"`, 1)), testLimits); !errors.As(err, &pe) || pe.Index != 3 || pe.Line != 7 {
		t.Errorf("bad 4th point: %v, want point 3 on line 7", err)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	tr, err := ParseCSV(strings.NewReader("1709294400,46.5123456,6.6,4.5\n1709294460,46.5123,6.6001\n1709294460,46.5124,6.6\n1709337600,-46.5,-180,499.9\n"), Limits{Now: testNow, MaxSpeed: 1e4})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []Trace{nil, tr[:1], tr} {
		b, err := tr.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBinary(b, Limits{Now: testNow, MaxSpeed: 1e4})
		if err != nil {
			t.Fatalf("%x: %v", b, err)
		}
		if len(got) != len(tr) || (len(tr) > 0 && !reflect.DeepEqual(got, tr)) {
			t.Errorf("round trip: got %+v, want %+v", got, tr)
		}
	}
}

func TestBinaryErrors(t *testing.T) {
	good, err := Trace{
		{Time: 1709294400, Lat: 46.5, Lon: 6.6},
		{Time: 1709294460, Lat: 46.5001, Lon: 6.6},
	}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	with := func(edit func([]byte) []byte) []byte { return edit(bytes.Clone(good)) }
	tests := []struct {
		name   string
		b      []byte
		limits Limits
		want   error
	}{
		{"empty", nil, testLimits, ErrTruncated},
		{"version", with(func(b []byte) []byte { b[0] = 2; return b }), testLimits, ErrVersion},
		{"truncated", good[:len(good)-1], testLimits, ErrTruncated},
		{"count beyond input", with(func(b []byte) []byte { b[1] = 100; return b }), testLimits, ErrTruncated},
		{"trailing", append(bytes.Clone(good), 0), testLimits, ErrTrailing},
		{"too many", good, Limits{Now: testNow, MaxPoints: 1}, ErrTooManyPoints},
		{"non-minimal varint", []byte{1, 0x80, 0x00}, testLimits, ErrNonCanonical},
		{"varint overflow", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, testLimits, ErrNonCanonical},
		{"latitude", encodeRaw(1709294400, 91e7, 0, 0), testLimits, ErrLatitude},
		{"longitude", encodeRaw(1709294400, 0, -181e7, 0), testLimits, ErrLongitude},
		{"huge deltas", encodeRaw(1709294400, math.MaxInt64, math.MinInt64, math.MaxUint64), testLimits, ErrLatitude},
		{"future", Trace{{Time: 1809294400, Lat: 1, Lon: 2}}.mustMarshal(t), testLimits, ErrFuture},
		{"speed", Trace{{Time: 1709294400}, {Time: 1709294401, Lat: 1}}.mustMarshal(t), testLimits, ErrSpeed},
		{"accuracy", Trace{{Time: 1709294400, Accuracy: 600}}.mustMarshal(t), testLimits, ErrAccuracy},
	}
	for _, tt := range tests {
		if _, err := ParseBinary(tt.b, tt.limits); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
	}
	// Marshal refuses what no parser produces.
	for _, tr := range []Trace{
		{{Time: 1709294400, Lat: 91}},
		{{Time: 1709294400, Lon: -200}},
		{{Time: 1709294400, Accuracy: -1}},
		{{Time: 1709294400}, {Time: 1709294399}},
	} {
		if _, err := tr.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%+v) accepted", tr)
		}
	}
}

// encodeRaw encodes one point without MarshalBinary's checks.
func encodeRaw(tm, lat, lon int64, acc uint64) []byte {
	b := binary.AppendUvarint([]byte{BinaryVersion}, 1)
	b = binary.AppendVarint(b, tm)
	b = binary.AppendVarint(b, lat)
	b = binary.AppendVarint(b, lon)
	return binary.AppendUvarint(b, acc)
}

func (t Trace) mustMarshal(tb testing.TB) []byte {
	b, err := t.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestBinarySize(t *testing.T) {
	// A trace sampled every minute, moving a few metres: about 6 bytes a
	// point, against 32 for the Go struct.
	var tr Trace
	for i := range 1440 {
		tr = append(tr, Point{Time: 1709251200 + int64(i)*60, Lat: 46.5 + float64(i%50)*1e-5, Lon: 6.6, Accuracy: 8})
	}
	b := tr.mustMarshal(t)
	if per := float64(len(b)) / float64(len(tr)); per > 7 {
		t.Errorf("%.1f bytes a point, want at most 7", per)
	}
}
