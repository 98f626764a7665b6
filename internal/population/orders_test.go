package population

import (
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/policy"
)

// orderPolicy is testPolicy notifying up to order n.
func orderPolicy(n int) policy.Policy {
	pol := testPolicy()
	pol.Orders = policy.DefaultOrders(n, pol.Risk.MinimumWeightedMinutes)
	return pol
}

// TestNOrderExact: with max_order 2, exposed phones upload as order-2
// sources, their contacts are told order 2, and every answer, order and
// authorization included, is what the oracle recomputes.
func TestNOrderExact(t *testing.T) {
	t.Parallel()
	s := runPolicy(t, Config{People: 250, Days: 12, Seed: 3, MaxOrder: 2, GAENShare: 0.3}, orderPolicy(2))
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	o := s.OrderSummary
	if o == nil || o.MaxOrder != 2 {
		t.Fatalf("order summary %+v; want one of max order 2", o)
	}
	if o.OrderUploads == 0 || o.NotifiedByOrder[1] == 0 || o.NotifiedByOrder[2] == 0 {
		t.Fatalf("%d order uploads, notified by order %v: the run did not exercise order 2", o.OrderUploads, o.NotifiedByOrder)
	}
	if o.SecondOrderInfectionsWithApp > o.SecondOrderInfections || o.NotifiedSecondOrderInfections > o.SecondOrderInfectionsWithApp ||
		o.SecondOrderNotifiedOnlyByNOrder > o.NotifiedSecondOrderInfections || o.SecondOrderRecall > o.SecondOrderRecallAppUsers {
		t.Fatalf("second-order counts out of order: %+v", o)
	}
	if s.Definitions["notified_by_order"] == "" || s.Definitions["second_order_recall"] == "" {
		t.Fatal("the order figures have no definitions")
	}
	var table strings.Builder
	if err := WriteTable(&table, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "notified by order") || !strings.Contains(table.String(), "2nd-order infections") {
		t.Errorf("the table shows no orders:\n%s", table.String())
	}
}

// TestMaxOrderNeedsThePolicy: Run refuses a backend whose policy notifies
// to another order than the one asked for.
func TestMaxOrderNeedsThePolicy(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil, testPolicy())
	cfg := Config{People: 10, Days: 2, MaxOrder: 2}
	configure(&cfg, b)
	if _, err := Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "max order 2") {
		t.Fatalf("max order 2 from a max order 1 backend: %v", err)
	}
}

// TestLedgerOrders: the oracle's own statement of the n-order rules: an
// order-2 source's contact is exposed at order 2 by its own threshold,
// the lowest order wins, and the cycle rules hold at upload and at check.
func TestLedgerOrders(t *testing.T) {
	pol := policy.Default()
	pol.Orders = policy.DefaultOrders(2, pol.Risk.MinimumWeightedMinutes)
	l := newLedger(pol)
	at := DefaultStart().Add(10 * 24 * time.Hour)
	i := enid.IntervalOf(at.Add(-20 * time.Hour))
	id := func(b byte) enid.RPI { return enid.RPI{b, b, b} }
	// sighting returns n 10-minute sightings by the phone broadcasting own
	// of the phone broadcasting heard, from interval i.
	sighting := func(own, heard enid.RPI, n int) []rec {
		var rs []rec
		for k := range n {
			rs = append(rs, rec{s: contactlog.Sighting{Heard: heard, Interval: i + enid.Interval(k), Minutes: 10, Attenuation: 40}, own: own})
		}
		return rs
	}
	b, a, c := id(1), id(2), id(3)
	l.addUpload(sighting(b, a, 2), nil, 1, at.Add(-2*time.Hour), 1) // b, a case, heard a
	if r, _ := l.answer(sighting(a, b, 2), at); !r.Exposed || r.Order != 1 {
		t.Fatalf("a: %+v; want order 1", r)
	}
	first := l.pol.WindowStart(at)
	if !l.mirrored(sighting(a, b, 1)[0], at, calendar.DayOf(first), 2) || l.mirrored(sighting(a, c, 1)[0], at, calendar.DayOf(first), 2) {
		t.Fatal("the upload rule: a's sighting of b, and only it, mirrors a lower order")
	}
	l.addUpload(append(sighting(a, c, 3), sighting(a, b, 3)...), nil, 2, at.Add(-time.Hour), 2)
	if r, _ := l.answer(sighting(c, a, 3), at); !r.Exposed || r.Order != 2 {
		t.Errorf("c, 30 minutes with a: %+v; want order 2", r)
	}
	if r, _ := l.answer(sighting(c, a, 2), at); r.Exposed {
		t.Errorf("c, 20 minutes with a: %+v; want not exposed (order 2 needs 30)", r)
	}
	if r, _ := l.answer(sighting(b, a, 3), at); r.Exposed {
		t.Errorf("b, whose own side is held at order 1: %+v; want not told order 2", r)
	}
	l.addUpload(sighting(a, c, 2), nil, 2, at.Add(-time.Hour), 1) // a tests positive too
	if r, _ := l.answer(sighting(c, a, 3), at); r.Order != 1 {
		t.Errorf("c, exposed at orders 1 and 2: %+v; want order 1", r)
	}
	// What the check's own exchange uploads is not seen by its check.
	if r, _ := l.answer(sighting(c, a, 3), at.Add(-time.Hour)); r.Exposed {
		t.Errorf("a check at the time of the uploads: %+v; want them unseen", r)
	}
	if !sameOrder(api.ExposureResponse{Order: 2}, api.ExposureResponse{Order: 2}) || sameOrder(api.ExposureResponse{Order: 2}, api.ExposureResponse{Order: 1}) ||
		sameOrder(api.ExposureResponse{Order: 1, OrderAuthorization: make([]byte, 32)}, api.ExposureResponse{Order: 1}) {
		t.Error("sameOrder compares the wrong things")
	}
}
