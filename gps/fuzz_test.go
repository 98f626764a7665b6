package gps

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// fuzzLimits keeps fuzzing fast and deterministic.
var fuzzLimits = Limits{Now: testNow, MaxPoints: 1000, MaxBytes: 1 << 16}

// checkRoundTrip checks that a parsed trace survives the binary encoding.
func checkRoundTrip(t *testing.T, tr Trace) {
	b, err := tr.MarshalBinary()
	if err != nil {
		t.Fatalf("parsed trace does not marshal: %v", err)
	}
	back, err := ParseBinary(b, fuzzLimits)
	if err != nil {
		t.Fatalf("marshalled trace does not parse: %v", err)
	}
	if len(tr) > 0 && !reflect.DeepEqual(back, tr) {
		t.Fatalf("round trip: %+v became %+v", tr, back)
	}
}

func FuzzParseCSV(f *testing.F) {
	f.Add("time,lat,lon,accuracy\n2024-03-01T12:00:00Z,46.5,6.6,4\n1709294460,46.50001,6.6\n")
	f.Add("1709294400,90,180\n1709294400,90,-180,0\n")
	f.Add("1709294400,\"46.5\",6.6\n# c\n1709294400.5,-0,-0,\n")
	f.Add("1709294400,1e-8,-1e-8,0.05\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ParseCSV(strings.NewReader(in), fuzzLimits)
		if err != nil {
			return
		}
		checkRoundTrip(t, tr)
	})
}

func FuzzParseGPX(f *testing.F) {
	f.Add(gpxDoc(2))
	f.Add(`<gpx><trk><trkseg><trkpt lat="-90" lon="180"><time>2024-03-01T12:00:00.5+02:00</time></trkpt></trkseg></trk></gpx>`)
	f.Add(`<!DOCTYPE gpx><gpx/>`)
	f.Add(`<gpx><trkpt lat="1" lon="1"><trkpt lat="2" lon="2"><time>2024-03-01T12:00:00Z</time></trkpt></trkpt></gpx>`)
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ParseGPX(strings.NewReader(in), fuzzLimits)
		if err != nil {
			return
		}
		checkRoundTrip(t, tr)
	})
}

func FuzzParseBinary(f *testing.F) {
	f.Add(Trace{{Time: 1709294400, Lat: 46.5, Lon: 6.6, Accuracy: 4.5}, {Time: 1709294460, Lat: 46.5001, Lon: 6.6}}.mustMarshal(f))
	f.Add(Trace{{Time: 1709294400, Lat: -90, Lon: 180}, {Time: 1709294400, Lat: -90, Lon: -180}}.mustMarshal(f))
	f.Add(Trace{}.mustMarshal(f))
	f.Add([]byte{1, 0x80, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseBinary(b, fuzzLimits)
		if err != nil {
			return
		}
		again, err := tr.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded trace does not marshal: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("not canonical: %x re-encodes as %x", b, again)
		}
	})
}
