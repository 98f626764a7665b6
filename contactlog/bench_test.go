package contactlog

import "testing"

// BenchmarkParseReport decodes and checks a daily check's report: 2,000
// sightings under 14 daily keys, as a phone sends it.
func BenchmarkParseReport(b *testing.B) {
	rep := randomReport(1, 14, 2000)
	data, err := rep.AppendBinary(nil)
	if err != nil {
		b.Fatal(err)
	}
	lim := Limits{MaxKeys: MaxKeys, MaxSightings: 2000}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseReport(data, lim); err != nil {
			b.Fatal(err)
		}
	}
}
