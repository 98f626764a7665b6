package policy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestOrdersCanonical: a policy without n-order notifications is written
// exactly as before the field existed (so existing policy hashes hold), and
// one with them round-trips through Parse and Canonical.
func TestOrdersCanonical(t *testing.T) {
	doc, err := Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte("orders")) || bytes.Contains(doc, []byte("max_order")) {
		t.Errorf("the default policy mentions orders: %s", doc)
	}
	if Default().MaxOrder() != 1 {
		t.Errorf("default MaxOrder = %d, want 1", Default().MaxOrder())
	}
	p := Default()
	p.Orders = DefaultOrders(3, p.Risk.MinimumWeightedMinutes)
	doc, err = p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	want := `"orders":{"max_order":3,"rules":[{"order":2,"minimum_weighted_minutes":30},{"order":3,"minimum_weighted_minutes":60}]}`
	if !bytes.Contains(doc, []byte(want)) {
		t.Errorf("canonical form %s lacks %s", doc, want)
	}
	q, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if q.MaxOrder() != 3 || q.OrderRisk(1).MinimumWeightedMinutes != 15 || q.OrderRisk(2).MinimumWeightedMinutes != 30 || q.OrderRisk(3).MinimumWeightedMinutes != 60 {
		t.Errorf("parsed back: max order %d, thresholds %d/%d/%d", q.MaxOrder(), q.OrderRisk(1).MinimumWeightedMinutes, q.OrderRisk(2).MinimumWeightedMinutes, q.OrderRisk(3).MinimumWeightedMinutes)
	}
	if DefaultOrders(1, 15).isZero() != true {
		t.Errorf("DefaultOrders(1) is not the zero rule")
	}
}

// TestOrdersRefused: every malformed n-order rule is refused with its
// reason, including a second spelling of max_order 1.
func TestOrdersRefused(t *testing.T) {
	base, err := Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ orders, want string }{
		"max_order 1 spelled out": {`{"max_order":1,"rules":[]}`, "leave orders out"},
		"empty rule":              {`{"max_order":0,"rules":[]}`, "outside 2..3"},
		"max_order 4":             {`{"max_order":4,"rules":[{"order":2,"minimum_weighted_minutes":30},{"order":3,"minimum_weighted_minutes":60},{"order":4,"minimum_weighted_minutes":90}]}`, "outside 2..3"},
		"missing rule":            {`{"max_order":3,"rules":[{"order":2,"minimum_weighted_minutes":30}]}`, "1 rules for max_order 3"},
		"rules out of order":      {`{"max_order":3,"rules":[{"order":3,"minimum_weighted_minutes":30},{"order":2,"minimum_weighted_minutes":60}]}`, "is for order 3, want 2"},
		"zero threshold":          {`{"max_order":2,"rules":[{"order":2,"minimum_weighted_minutes":0}]}`, "outside 1..1440"},
		"threshold past a day":    {`{"max_order":2,"rules":[{"order":2,"minimum_weighted_minutes":1441}]}`, "outside 1..1440"},
		"unknown field":           {`{"max_order":2,"rules":[{"order":2,"minimum_weighted_minutes":30}],"x":1}`, "unknown field"},
	} {
		doc := append(append(bytes.Clone(base[:len(base)-1]), `,"orders":`+tc.orders...), '}')
		_, err := Parse(doc)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse = %v, want an invalid policy saying %q", name, err, tc.want)
		}
	}
}
