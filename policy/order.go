package policy

// n-order notifications (docs/n-order.md). A phone told it was exposed at
// order k, below the policy's max_order, may upload its own daily keys and
// sightings as a source of order k+1, so that its contacts learn they were
// exposed at order k+1. Order 1 is today's rule: contact with a confirmed
// case. Each order above 1 has its own threshold of weighted minutes,
// since its source is only exposed, not confirmed.

// MaxOrderLimit is the highest max_order a policy may set.
const MaxOrderLimit = 3

// Orders is the policy's n-order rule. Its zero value, which a policy
// writes by leaving the field out, is max_order 1: no phone uploads as
// anything but a confirmed case. A policy that sets it has one spelling
// per rule: max_order 2 or 3 and one OrderRule for each order from 2 on.
type Orders struct {
	// MaxOrder is the highest order at which a phone can be told it was
	// exposed: 2 or 3 (1 is written by leaving Orders out).
	MaxOrder int `json:"max_order"`
	// Rules are the risk rules of orders 2 to MaxOrder, in that order.
	Rules []OrderRule `json:"rules"`
}

// OrderRule is how one order above 1 judges an exposure: the policy's risk
// scoring (attenuation buckets, weights, interval tolerance) with its own
// threshold.
type OrderRule struct {
	// Order is the order the rule is for, 2 to MaxOrder.
	Order int `json:"order"`
	// MinimumWeightedMinutes is the weighted minutes per day from which
	// a day counts as an exposure at this order.
	MinimumWeightedMinutes int `json:"minimum_weighted_minutes"`
}

// isZero reports whether o is the zero value, max_order 1.
func (o Orders) isZero() bool { return o.MaxOrder == 0 && o.Rules == nil }

// MaxOrder returns the highest order of exposure the policy notifies: 1
// unless the policy sets Orders.
func (p Policy) MaxOrder() int {
	if p.Orders.isZero() {
		return 1
	}
	return p.Orders.MaxOrder
}

// OrderRisk returns the risk rule of order k (1 to MaxOrder): the policy's
// Risk, with order k's threshold for k above 1.
func (p Policy) OrderRisk(k int) Risk {
	r := p.Risk
	if k >= 2 && k-2 < len(p.Orders.Rules) {
		r.MinimumWeightedMinutes = p.Orders.Rules[k-2].MinimumWeightedMinutes
	}
	return r
}

// DefaultOrders returns the n-order rule for maxOrder (1 to
// MaxOrderLimit) that `conftrace policy init --max-order` writes: order k
// needs 2^(k-1) times the base threshold of order 1 (base, in weighted
// minutes), capped at a day. Doubling is a choice, not a measured figure:
// each order adds a link that is only a suspicion, so it asks for a
// longer contact before it warns anyone. The zero Orders for maxOrder 1.
func DefaultOrders(maxOrder, base int) Orders {
	if maxOrder <= 1 {
		return Orders{}
	}
	o := Orders{MaxOrder: maxOrder}
	for k := 2; k <= maxOrder; k++ {
		o.Rules = append(o.Rules, OrderRule{Order: k, MinimumWeightedMinutes: min(base<<(k-1), 24*60)})
	}
	return o
}

// validate checks the n-order rule: absent, or max_order 2 to
// MaxOrderLimit with one rule per order above 1, in order.
func (o Orders) validate() error {
	if o.isZero() {
		return nil
	}
	if o.MaxOrder < 2 || o.MaxOrder > MaxOrderLimit {
		return invalidf("orders: max_order %d outside 2..%d (leave orders out for max_order 1)", o.MaxOrder, MaxOrderLimit)
	}
	if len(o.Rules) != o.MaxOrder-1 {
		return invalidf("orders: %d rules for max_order %d, want one for each order from 2 to %d", len(o.Rules), o.MaxOrder, o.MaxOrder)
	}
	for i, r := range o.Rules {
		if r.Order != i+2 {
			return invalidf("orders: rule %d is for order %d, want %d (rules list orders 2, 3... in order)", i, r.Order, i+2)
		}
		if r.MinimumWeightedMinutes < 1 || r.MinimumWeightedMinutes > 24*60 {
			return invalidf("orders: order %d: minimum_weighted_minutes %d outside 1..1440", r.Order, r.MinimumWeightedMinutes)
		}
	}
	return nil
}
