package enclave

import "testing"

// TestIndexEntriesCountsEveryOrder: the operator's index size counts what
// uploads of orders above 1 added, so that memory planning sees them.
func TestIndexEntriesCountsEveryOrder(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	before := v.e.IndexEntries()
	up, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.e.IndexEntries(); got < before+up.Sightings {
		t.Errorf("IndexEntries after an order-2 upload of %d sightings: %d, was %d", up.Sightings, got, before)
	}
}
