package wirebench

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/localbackend"
)

// A check's report is 11 bytes a sighting plus its keys; what crosses the
// wire is exactly the client's padded request and the backend's padded
// answer, encapsulated; and v3 is never larger than v2.
func TestMeasure(t *testing.T) {
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	counts := []int{0, 100, 2000}
	checks, err := Measure(t.Context(), client.Config{Server: b.URL, Expectations: b.Expectations()}, counts, 15)
	if err != nil {
		t.Fatal(err)
	}
	reqOver, respOver, err := overheads()
	if err != nil {
		t.Fatal(err)
	}
	// The request header (7 bytes), the hybrid encapsulated key (1,120)
	// and the AEAD tag (16); the answer's nonce (32) and tag (16).
	if reqOver != 7+1120+16 || respOver != 32+16 {
		t.Errorf("Oblivious HTTP adds %d bytes to a request and %d to an answer, want %d and %d", reqOver, respOver, 7+1120+16, 32+16)
	}
	for i, c := range checks {
		n := counts[i]
		if c.Sightings != n || c.Keys != 15 {
			t.Errorf("check %d: %d sightings under %d keys, want %d under 15", i, c.Sightings, c.Keys, n)
		}
		if want := 2 + 15*(contactlog.DailyKeySize+2) + n*contactlog.ReportSightingSize; c.Report != want {
			t.Errorf("%d sightings: report %d bytes, want %d", n, c.Report, want)
		}
		if want := 2 + 15*contactlog.DailyKeySize + 4 + n*v2SightingSize; c.V2Report != want {
			t.Errorf("%d sightings: v2 report %d bytes, want %d", n, c.V2Report, want)
		}
		if want := innerRequest(t, c.Report) + reqOver; c.Request != want {
			t.Errorf("%d sightings: %d bytes on the wire, want the padded request's %d", n, c.Request, want)
		}
		if class, err := bhttp.SizeClass(c.Answer - respOver); err != nil || class != c.Answer-respOver || c.Answer != checks[0].Answer {
			t.Errorf("%d sightings: an answer of %d bytes on the wire, not a size class plus %d, or not the size of every answer (%d)", n, c.Answer, respOver, checks[0].Answer)
		}
		if c.V2Request-reqOver != v2Class(c.V2Request-reqOver) || c.V2Answer-respOver != v2Class(c.V2Answer-respOver) {
			t.Errorf("%d sightings: v2's %d and %d bytes on the wire are not v2 classes plus the overheads", n, c.V2Request, c.V2Answer)
		}
		if c.Bytes() > c.V2Bytes() || c.Bytes() != c.Request+c.Answer {
			t.Errorf("%d sightings: %d bytes on the wire, v2 %d", n, c.Bytes(), c.V2Bytes())
		}
	}
	if _, err := Measure(t.Context(), client.Config{Server: b.URL, Expectations: b.Expectations()}, counts, 0); err == nil {
		t.Error("Measure with no keys succeeded")
	}
}

// innerRequest returns the padded size of the client's exchange carrying
// a report of n bytes.
func innerRequest(t *testing.T, n int) int {
	t.Helper()
	body, err := api.ExchangeRequest{Report: make([]byte, n)}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	req := &bhttp.Request{Method: http.MethodPost, Scheme: "https", Authority: api.InnerAuthority, Path: api.PathExchange,
		Header:  []bhttp.Field{{Name: "content-type", Value: api.MediaTypeReport}, {Name: "date", Value: time.Now().UTC().Format(http.TimeFormat)}},
		Content: body}
	plain, err := req.MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	return len(plain)
}

// Report's keys end today and its sightings are never in the future, so a
// backend takes them.
func TestReport(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	r, err := Report(2000, 15, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	last := r.Keys[len(r.Keys)-1]
	if !last.Contains(enid.IntervalOf(now)) || len(r.Keys) != 15 || len(r.Sightings) != 2000 {
		t.Errorf("%d keys, the last valid from %d; %d sightings", len(r.Keys), last.Start, len(r.Sightings))
	}
	if i := slices.IndexFunc(r.Sightings, func(s contactlog.Sighting) bool { return s.Interval > enid.IntervalOf(now) }); i >= 0 {
		t.Errorf("sighting %d is in the future", i)
	}
	if _, err := Report(1, 0, now); err == nil {
		t.Error("a report without keys")
	}
}

// A compressed, signed export costs at least a key's 16 bytes a key, and
// less than the uncompressed protocol buffer.
func TestExportBytesPerKey(t *testing.T) {
	got, err := ExportBytesPerKey(1400)
	if err != nil {
		t.Fatal(err)
	}
	if got < 16 || got > 40 {
		t.Errorf("%.1f bytes a key", got)
	}
	if _, err := ExportBytesPerKey(0); err == nil {
		t.Error("an export of no keys")
	}
}
