package population

import (
	"fmt"
	"strings"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/calendar"
)

// n-order notifications (docs/n-order.md), when the backend's policy sets
// max_order above 1. A phone whose exchange's answer carries an order
// authorization asks its user, once per authorization (its order and
// exposing day), whether to warn their own contacts; a user who consents
// (Config.Consent, drawn from a generator of its own so that the run's
// other draws do not move) has the phone's next day's exchange upload the
// same report under the authorization, as a positive user's uploads under
// a result. A phone whose user uploaded as a positive case does not upload
// at an order. The oracle (rules.go) adds what the backend takes at its
// order, and requires the backend to withdraw the authorization once
// used.

// orderStream selects the stream of the generator of n-order consent
// ("ordrconf").
const orderStream = 0x6f726472636f6e66

// orderUse names an order authorization as the backend counts its use: the
// phone, the order it grants and its exposing day.
type orderUse struct {
	person, order int
	from          string
}

// phoneOrder is a phone's n-order state.
type phoneOrder struct {
	// asked holds the authorizations (order, exposing day) its user was
	// asked about.
	asked map[orderUse]bool
	// token, of order grants and exposing day from, is the authorization
	// the user consented to upload under; nil for none.
	token  []byte
	grants int
	from   string
	// notifiedAt holds the orders at which the backend told it "exposed"
	// at least once.
	notifiedAt map[int]bool
}

// authorize sets on resp, the full answer the protocol requires for a
// check of device i at checkAt, the order authorization it must carry:
// for a phone exposed at order k below max_order, for order k+1 and its
// exposing day (the earliest exposed day of order k), unless the backend
// took an upload under that authorization already. The token is the
// backend's secret, so only its length is compared; its expiry is
// compared unless the backend keeps real time (the check's time is then
// not known to the second).
func (o *oracle) authorize(i int, resp *api.ExposureResponse, checkAt time.Time) {
	k := resp.Order
	if k < 1 || k >= o.ledger.pol.MaxOrder() {
		return
	}
	from := ""
	for _, d := range resp.Days {
		if d.Exposed {
			from = d.Date
			break
		}
	}
	if from == "" || o.used[orderUse{i, k + 1, from}] {
		return
	}
	resp.OrderAuthorization, resp.UploadFrom = make([]byte, api.AuthorizationSize), from
	if !o.clock.live {
		ttl := int64(o.ledger.pol.UploadAuthorizationSeconds)
		resp.OrderAuthorizationExpiresAt = (checkAt.Unix()/ttl + 2) * ttl
	}
}

// sameOrder reports whether got agrees with want in its order and its
// authorization (see authorize).
func sameOrder(got, want api.ExposureResponse) bool {
	return got.Order == want.Order && got.UploadFrom == want.UploadFrom &&
		len(got.OrderAuthorization) == len(want.OrderAuthorization) &&
		(want.OrderAuthorizationExpiresAt == 0 || got.OrderAuthorizationExpiresAt == want.OrderAuthorizationExpiresAt)
}

// planOrder adds to device i's plan for today the upload under the order
// authorization its user consented to, unless it uploads under a result.
// An authorization whose exposing day left the window is dropped: the
// phone's report no longer holds its daily key of that day, without which
// the backend cannot verify it (its next check hands out one of a later
// exposing day, if the exposure lasts).
func (w *world) planOrder(i int, pl *plan) {
	ph := &w.people[i].phone
	if pl.upload || ph.order.token == nil || ph.upload.done {
		return
	}
	from, err := time.Parse(api.DateLayout, ph.order.from)
	if err != nil || w.clock.dayOf(from) < w.clock.firstDay(w.clock.current()) {
		ph.order.token = nil
		return
	}
	pl.order = true
}

// considerOrder has device i's user decide, once per authorization, on
// the order authorization of its exchange's answer x.
func (w *world) considerOrder(i int, x exchanged) {
	ph := &w.people[i].phone
	r := x.resp.Exposure
	if r.OrderAuthorization == nil {
		ph.order.token = nil // used, or the exposure left the window
		return
	}
	use := orderUse{i, r.Order + 1, r.UploadFrom}
	switch {
	case ph.upload.done:
		return
	case ph.order.asked[use]:
		if ph.order.token != nil && ph.order.grants == use.order && ph.order.from == use.from {
			ph.order.token = r.OrderAuthorization // the current period's
		}
		return
	}
	if ph.order.asked == nil {
		ph.order.asked = map[orderUse]bool{}
	}
	ph.order.asked[use] = true
	if w.orderRNG.Float64() < w.cfg.Consent {
		ph.order.token, ph.order.grants, ph.order.from = r.OrderAuthorization, use.order, use.from
	}
}

// tookOrderUpload records device i's upload of day d under an order
// authorization, made in its exchange x: the backend must have taken the
// report's keys and sightings from the exposing day on, less those the
// cycle rule leaves out, and the oracle then holds them at their order.
func (l *lab) tookOrderUpload(i, d int, x exchanged) error {
	p := &l.people[i]
	o := p.phone.order
	p.phone.order.token = nil
	up := x.resp.Upload
	if up == nil || x.resp.UploadError != nil {
		l.sum.ExchangeMismatches++
		return nil
	}
	fromDay, err := time.Parse(api.DateLayout, o.from)
	if err != nil {
		l.sum.ExchangeMismatches++
		return nil
	}
	first := max(x.first, l.clock.dayOf(fromDay))
	keys, err := l.radio.dailyKeys(i, first, d)
	if err != nil {
		return err
	}
	window := calendar.DayOf(l.oracle.ledger.pol.WindowStart(x.took))
	kept := p.phone.recs(first, d)
	n := 0
	for _, r := range kept {
		if !l.oracle.ledger.mirrored(r, x.took, window, uint8(o.grants)) {
			kept[n] = r
			n++
		}
	}
	kept = kept[:n]
	l.oracle.ledger.addUpload(kept, keys, int32(i), x.took, uint8(o.grants))
	l.oracle.used[orderUse{i, o.grants, o.from}] = true
	l.sum.OrderUploads++
	if up.Sightings != len(kept) || up.Keys != len(keys) {
		l.sum.ExchangeMismatches++
	}
	return nil
}

// countOrder counts device i among the devices told "exposed" at the
// order of got, the first time it is.
func (w *world) countOrder(i int, got api.ExposureResponse) {
	ph := &w.people[i].phone
	if !got.Exposed || w.pol.MaxOrder() < 2 || ph.order.notifiedAt[got.Order] {
		return
	}
	if ph.order.notifiedAt == nil {
		ph.order.notifiedAt = map[int]bool{}
	}
	ph.order.notifiedAt[got.Order] = true
	w.sum.NotifiedByOrder[got.Order]++
}

// secondOrder counts the true second-order infections of the run: people
// infected by someone who was infected by an index case (a case whose
// keys reached the backend, by upload or GAEN export), where that someone
// is not an index case itself (then the person is a first-order
// infection of an index case). It returns how many there were, how many
// of them ran the app, how many of those the backend told "exposed" at
// least once (at any order), and how many of those at order 2 or more
// only: the notifications n-order added.
func (w *world) secondOrder() (all, withApp, notified, onlyHigher int) {
	for j := range w.people {
		pj := &w.people[j]
		m := pj.disease.by
		if !pj.disease.ever || m < 0 || w.oracle.sharedKeys(m) {
			continue
		}
		if i := w.people[m].disease.by; i < 0 || !w.oracle.sharedKeys(i) {
			continue
		}
		all++
		if !pj.app {
			continue
		}
		withApp++
		if pj.phone.firstNotified >= 0 {
			notified++
			if !pj.phone.order.notifiedAt[1] {
				onlyHigher++
			}
		}
	}
	return all, withApp, notified, onlyHigher
}

// orderDefinitions explain the figures of n-order notifications.
func orderDefinitions() map[string]string {
	return map[string]string{
		"max_order":                                   "the backend's attested policy tells phones exposed up to this order: order 1 is a contact of a case whose keys reached the backend, order k+1 a contact of a phone exposed at order k that uploaded under its order authorization (docs/n-order.md)",
		"order_uploads":                               "uploads the backend took under order authorizations: a phone told it was exposed at order k below max_order, whose user consented (with the consent probability of positive users), uploads the next day the same report as its check, of which the backend keeps the days from the exposing day on, as a source of order k+1",
		"notified_by_order":                           "for each order, devices told 'exposed' at that order at least once (the lowest order at which they were exposed at the time); a device can count under several orders",
		"second_order_infections":                     "people infected during the run by someone who was infected by an index case (a case whose keys reached the backend, by upload or GAEN export), where that someone was not an index case itself",
		"second_order_recall":                         "second-order infections told 'exposed' at least once, at any order / second-order infections (app or not)",
		"second_order_recall_app_users":               "second-order infections told 'exposed' at least once / second-order infections running the app",
		"second_order_notified_only_at_higher_orders": "second-order infections told 'exposed' only at order 2 or more, never at order 1: the notifications that n-order added",
	}
}

// orderRows are the report's rows of n-order notifications.
func orderRows(o *OrderSummary) [][2]string {
	by := make([]string, 0, o.MaxOrder)
	for k := 1; k <= o.MaxOrder; k++ {
		by = append(by, fmt.Sprintf("order %d: %d", k, o.NotifiedByOrder[k]))
	}
	return [][2]string{
		{"notified by order", strings.Join(by, ", ") + fmt.Sprintf(" (max_order %d)", o.MaxOrder)},
		{"order uploads", fmt.Sprintf("%d exposed phones warned their own contacts", o.OrderUploads)},
		{"2nd-order infections", fmt.Sprintf("%d (%d with the app); %d notified, recall %.1f%% of all, %.1f%% of app users; %d of them only at order 2+",
			o.SecondOrderInfections, o.SecondOrderInfectionsWithApp, o.NotifiedSecondOrderInfections, 100*o.SecondOrderRecall, 100*o.SecondOrderRecallAppUsers, o.SecondOrderNotifiedOnlyByNOrder)},
	}
}
