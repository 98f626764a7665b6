package wirebench

import (
	"testing"

	"github.com/conftrace/conftrace/bhttp"
)

// The v2 body is a 22-byte sighting each, plus keys and counts, and every
// request lands in a size class; v2 is never larger than v1.
func TestMeasure(t *testing.T) {
	// The request header (7 bytes), the hybrid encapsulated key (1,120)
	// and the AEAD tag (16).
	const ohttpOverhead = 7 + 1120 + 16
	for _, n := range []int{0, 100, 2000} {
		r, err := Measure(n, 15)
		if err != nil {
			t.Fatal(err)
		}
		if want := 2 + 15*21 + 4 + n*22; r.Body != want {
			t.Errorf("%d sightings: body %d bytes, want %d", n, r.Body, want)
		}
		if r.V1Body < 39*n {
			t.Errorf("%d sightings: v1 body %d bytes, under 39 a tuple", n, r.V1Body)
		}
		// What the wire shows is a size class plus the fixed overhead of
		// Oblivious HTTP with the hybrid key.
		for _, w := range []int{r.Wire, r.V1Wire} {
			if class, err := bhttp.SizeClass(w - ohttpOverhead); err != nil || class != w-ohttpOverhead {
				t.Errorf("%d sightings: %d bytes on the wire is no size class plus %d", n, w, ohttpOverhead)
			}
		}
		if r.Wire > r.V1Wire {
			t.Errorf("%d sightings: v2 %d bytes on the wire, v1 %d", n, r.Wire, r.V1Wire)
		}
	}
	if _, err := Measure(10, 0); err == nil {
		t.Error("Measure with no keys succeeded")
	}
}
