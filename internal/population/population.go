// Package population runs the whole conftrace system on a simulated population and
// compares what the backend did with the ground truth the simulator knows.
//
// A population of people lives in households, goes to workplaces and schools
// on weekdays and meets strangers in the community. Every encounter has a
// start, a duration and a distance. An epidemic spreads over those
// encounters (incubation, infectious period, symptoms); people with symptoms
// get tested, and a health authority signs the results. Every app user's
// phone makes one exchange with the backend a simulated day (exchange.go):
// its report of the retention window (daily keys and sightings, protocol
// v2: package contactlog), which the backend checks for exposure, with the
// poll of its test's result while it has one, and, once its user learnt a
// positive result and consented, the upload of the same report, so that an
// infected phone's traffic looks like any other's. A share of the people
// without the app run a foreign GAEN app
// (Config.GAENShare, see gaen.go): app phones record them, and the keys of
// those who test positive reach the backend in signed GAEN key exports,
// which it matches one-sided. All of this goes through the real client SDK,
// so over attested Oblivious HTTP, to a real backend whose clock follows
// the simulation (Config.SetClock), or to a live backend that keeps real
// time (see below).
//
// Phones are modelled with Bluetooth loss: each side of an encounter hears
// the other in a 10-minute interval only with some probability, measures its
// own attenuation (distance, a per-phone calibration offset and noise) and
// its own duration, and records a sighting of the other's identifier, so
// the two sides' records differ as they do in the field.
//
// Run returns a Summary that sets the backend's answers beside the truth:
//
//   - protocol exactness: for every exposure check the simulator computes,
//     from its own record of what each phone heard and broadcast, what
//     reached the backend and when (uploads, GAEN imports) and the
//     attested policy, the whole answer the backend must give (rules.go),
//     and compares everything the answer carries: by default (coarse
//     answers) whether the phone was exposed, its last exposed day and the
//     rules that matched on exposed days; with a policy of detailed
//     answers also every day's minutes, weighted minutes, minimum
//     attenuation, rules and verdict. Every result poll must answer the
//     signed result, and every upload must be taken whole and heard
//     durable within two days. Any difference is a bug, and
//     Summary.ProtocolExact says so;
//   - epidemiological recall and precision against true close contacts
//     (15 minutes within 2 m while infectious), which Bluetooth loss and app
//     adoption limit;
//   - the delay from a positive test to the contacts' notification, bytes per
//     device and day beside a GAEN-style design, and request latencies.
//
// With Config.GPS, people also have GPS traces drawn from the same
// encounter model; the authority uploads positive patients' traces and
// devices check their own, and every answer is compared with
// gps.BruteForce (Summary.GPSSummary), episodes included when the policy's
// answers are detailed. The Bluetooth side
// of the run is unchanged by it.
//
// When the backend's policy notifies beyond order 1 (n-order
// notifications, docs/n-order.md), phones told they were exposed may, with
// their users' consent, upload as sources of the next order (orders.go);
// the oracle recomputes every order of every answer, and the summary adds
// the notifications by order and the recall of true second-order
// infections (OrderSummary).
//
// Everything but Summary.Timing is a deterministic function of Config.Seed
// and the population parameters: randomness comes from one seeded PCG
// generator consumed in a fixed order (GPS and the GAEN-only phones from
// generators of their own, seeded from the same seed), and the backend's
// own randomness (keys, tokens) and the export signatures' do not reach
// the counts.
//
// # Live backends
//
// A backend that is already running (conftraced) keeps real time, and
// nothing can move its clock. Leave Config.SetClock nil to drive one: the
// simulated period then ends at the present (day 0 is Config.Days days
// before today's UTC midnight, the last day is yesterday), so it must fit
// in the backend's retention window, at most RetentionDays-1 days. Every
// request happens at real time, while the sightings, test dates and GPS fixes
// carry the simulated past; the ground truth of each check uses the window
// at the real time of that check, as the backend does. A live backend keeps
// what earlier runs uploaded, so every identifier that reaches it (daily
// keys, test secrets, the GPS city's location) mixes a fresh random
// Config.Nonce into the seed: a second run neither matches the first's
// uploads nor replays its test codes. The counts of live runs are not
// reproducible: the dates, and so the weekdays, follow the calendar.
package population

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// rngStream selects the stream of the run's generator ("conftrac").
const rngStream = 0x636f6e6674726163

// world is one run: the people, the parts of the simulation that act on
// them, and the backend they talk to. The parts of the Bluetooth side
// share one generator (GPS has its own), so the fixed order in which day
// runs the phases fixes the order of the draws.
type world struct {
	cfg Config
	rng *mrand.Rand
	// orderRNG draws the users' consent to n-order uploads (orders.go).
	orderRNG *mrand.Rand
	clock    *simClock
	pol      policy.Policy
	backend  *client.Client
	people   []person

	radio   *radio    // what phones hear of each other
	lab     *lab      // tests, results and uploads
	checker *checker  // the concurrent checks
	oracle  *oracle   // what the backend must answer
	gps     *gpsWorld // nil without Config.GPS

	meter *meter
	sum   *Summary
}

// Run simulates cfg.Days days and returns the summary. It fails on a
// backend or network error; a protocol mismatch is reported in the summary
// (see Summary.Check), not as an error.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	began := time.Now()
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w, err := setUp(ctx, cfg)
	if err != nil {
		return nil, err
	}
	for d := range w.cfg.Days {
		if err := w.day(ctx, d); err != nil {
			return nil, err
		}
		if w.cfg.Progress != nil {
			w.cfg.Progress(d+1, w.cfg.Days)
		}
	}
	w.finish()
	w.sum.Timing = w.meter.timing()
	w.sum.Timing.TotalSeconds = time.Since(began).Seconds()
	return w.sum, nil
}

// setUp connects to the backend described by cfg, a Config with its
// defaults, and sets up the run's world. A simulated backend's clock
// starts at day 0 before the client connects.
func setUp(ctx context.Context, cfg Config) (*world, error) {
	live := cfg.live()
	day0 := cfg.Start
	if day0.IsZero() {
		day0 = DefaultStart()
	}
	simNow := new(atomic.Int64)
	if !live {
		cfg.SetClock(day0)
		simNow.Store(day0.UnixNano())
	}
	m := newMeter(cfg.Workers)
	c, err := connect(ctx, cfg, m, simNow)
	if err != nil {
		return nil, err
	}
	pol := c.Policy()
	if live {
		if cfg.Days, err = liveDays(cfg.Days, pol); err != nil {
			return nil, err
		}
		day0 = time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -cfg.Days)
	}
	clock := &simClock{start: day0, live: live, now: simNow, set: cfg.SetClock, flush: cfg.Flush, pol: pol}
	return newWorld(cfg, pol, c, clock, m), nil
}

// connect returns a client of the backend whose requests go through m and
// which, with a simulated backend, follows the simulated time in simNow.
// It checks that the backend's policy lists cfg.Authority.
func connect(ctx context.Context, cfg Config, m *meter, simNow *atomic.Int64) (*client.Client, error) {
	var clientNow func() time.Time // real time with a live backend
	if !cfg.live() {
		clientNow = func() time.Time { return time.Unix(0, simNow.Load()).UTC() }
	}
	c, err := client.New(ctx, client.Config{
		Server:       cfg.Server,
		Expectations: cfg.Expectations,
		Governance:   cfg.Governance,
		Verifiers:    cfg.Verifiers,
		HTTPClient:   &http.Client{Transport: m, Timeout: 60 * time.Second},
		Now:          clientNow,
	})
	if err != nil {
		return nil, fmt.Errorf("population: connecting to the backend: %w", err)
	}
	if a, ok := c.Policy().Authority(cfg.Authority.Name); !ok || !a.PublicKey.Equal(cfg.Authority.PublicKey()) {
		return nil, fmt.Errorf("population: the backend's policy does not list authority %q with this key", cfg.Authority.Name)
	}
	if cfg.MaxOrder != 0 && c.Policy().MaxOrder() != cfg.MaxOrder {
		return nil, fmt.Errorf("population: max order %d asked for, but the backend's policy notifies up to order %d", cfg.MaxOrder, c.Policy().MaxOrder())
	}
	if cfg.DetailedAnswers && !c.Policy().Detailed() {
		return nil, fmt.Errorf("population: detailed answers asked for, but the backend's policy answers %q", c.Policy().Answers)
	}
	if cfg.GAENExportKey != nil && !listsExportKey(c.Policy(), &cfg.GAENExportKey.PublicKey) {
		return nil, errors.New("population: the backend's policy lists no GAEN export key matching Config.GAENExportKey, so it would refuse the GAEN-only people's exports")
	}
	return c, nil
}

// listsExportKey reports whether pol lists pub among its GAEN export keys.
func listsExportKey(pol policy.Policy, pub *ecdsa.PublicKey) bool {
	for _, k := range pol.GAENExportKeys {
		if ec, err := k.ECDSA(); err == nil && ec.Equal(pub) {
			return true
		}
	}
	return false
}

// liveDays returns how many days a run against a live backend simulates:
// days, or with 0 as many as fit. Every simulated day must lie in the
// backend's window, which holds today and the RetentionDays-1 days before
// it.
func liveDays(days int, pol policy.Policy) (int, error) {
	most := pol.RetentionDays - 1
	if days == 0 {
		days = most
	}
	if days < 1 || days > most {
		return 0, fmt.Errorf("%w: %d days asked, the backend keeps %d days (today included), so at most %d simulated days end yesterday inside it", ErrTooManyDays, days, pol.RetentionDays, most)
	}
	return days, nil
}

// newWorld draws the population and wires up the parts of the run.
func newWorld(cfg Config, pol policy.Policy, c *client.Client, clock *simClock, m *meter) *world {
	rng := mrand.New(mrand.NewPCG(cfg.Seed, rngStream))
	sum := &Summary{People: cfg.People, Days: cfg.Days, Seed: cfg.Seed, Live: clock.live, DetailedAnswers: pol.Detailed(), NotificationDelayDays: []int{}}
	if pol.MaxOrder() > 1 {
		sum.OrderSummary = &OrderSummary{MaxOrder: pol.MaxOrder(), NotifiedByOrder: map[int]int{}}
	}
	if cfg.Nonce != nil {
		sum.Nonce = hex.EncodeToString(cfg.Nonce)
	}
	people := newPeople(rng, cfg.People, cfg.Days, cfg.Adoption)
	gaenRNG := mrand.New(mrand.NewPCG(cfg.Seed, gaenStream))
	sum.GAENOnlyPeople = assignGAEN(gaenRNG, people, cfg.GAENShare)
	r := &radio{rng: rng, gaenRNG: gaenRNG, clock: clock, seed: cfg.Seed, nonce: nonce(cfg.Nonce), detection: cfg.Detection, keys: map[[2]int]*enid.Key{}}
	o := newOracle(pol, clock, people)
	w := &world{
		cfg: cfg, rng: rng, clock: clock, pol: pol, backend: c, people: people,
		orderRNG: mrand.New(mrand.NewPCG(cfg.Seed, orderStream)),
		radio:    r,
		lab: &lab{rng: rng, people: people, clock: clock, backend: c, authority: cfg.Authority,
			nonce: nonce(cfg.Nonce), consent: cfg.Consent, sum: sum, radio: r, oracle: o},
		checker: &checker{workers: cfg.Workers, clock: clock},
		oracle:  o,
		meter:   m,
		sum:     sum,
	}
	w.lab.gaen = &gaenServer{rng: gaenRNG, people: people, radio: r, clock: clock, backend: c, oracle: o, sum: sum,
		signer: cfg.GAENExportKey, consent: cfg.Consent}
	if cfg.GPS {
		w.gps = newGPSWorld(w)
	}
	return w
}

// day runs day d. Its phases, in the order in which they happen and draw
// from the run's generator:
//
//   - the morning: the clock moves and Config.Daily runs;
//   - encounters (encounters.go): people meet, the infection spreads, and
//     app users' phones record each other, and GAEN-only phones (radio,
//     phones.go);
//   - testing (lab.go): people get tested, the authority submits the
//     day's results in the evening, and people without the app learn
//     theirs by letter; positive GAEN-only people's keys go to their key
//     server, which exports them to the backend (gaen.go);
//   - the daily exchange (exchange.go): every app user's phone sends its
//     report, which the backend checks for exposure, with its test's
//     result poll and, once its user consented after a positive result,
//     its upload; the oracle (exact.go) says what each check's answer
//     must be, and the simulator's record of the tests what the poll's
//     and the upload's must be.
//
// GPS (gps.go) plans its traces from the encounters, uploads patients'
// traces with the results and checks devices' traces last.
func (w *world) day(ctx context.Context, d int) error {
	if err := w.morning(ctx, d); err != nil {
		return err
	}
	es := drawEncounters(w.rng, w.people, w.clock.weekday(d))
	if err := w.meet(d, es); err != nil {
		return err
	}
	if w.gps != nil {
		w.gps.plan(d, es)
	}
	w.lab.seek(d)
	if err := w.lab.report(ctx, d); err != nil {
		return err
	}
	if w.gps != nil {
		if err := w.gps.upload(ctx, d); err != nil {
			return err
		}
	}
	w.lab.deliver(d)
	if err := w.lab.gaen.publish(ctx, d); err != nil {
		return err
	}
	if err := w.exchanges(ctx, d); err != nil {
		return err
	}
	if w.gps != nil {
		return w.gps.check(ctx, d)
	}
	return nil
}

// morning opens day d's record, moves the clock to the morning and runs
// Config.Daily.
func (w *world) morning(ctx context.Context, d int) error {
	w.sum.Daily = append(w.sum.Daily, Day{Date: w.clock.at(d, 0).Format(api.DateLayout)})
	if _, err := w.clock.advance(ctx, d, morningMinute); err != nil {
		return err
	}
	if w.cfg.Daily != nil {
		if err := w.cfg.Daily(ctx); err != nil {
			return fmt.Errorf("population: day %d: %w", d, err)
		}
	}
	return nil
}

// finish completes the summary after the last day.
func (w *world) finish() {
	s := w.sum
	s.Requests += int(w.checker.retries.Load())
	for i := range w.people {
		if w.people[i].app {
			s.AppUsers++
		}
	}
	s.TrueContacts, s.TrueContactsWithApp, s.NotifiedTrueContacts = w.oracle.trueContacts()
	s.derive(w.meter.deviceBytes.Load(), w.meter.deviceRequests.Load())
	if s.OrderSummary != nil {
		o := s.OrderSummary
		o.SecondOrderInfections, o.SecondOrderInfectionsWithApp, o.NotifiedSecondOrderInfections, o.SecondOrderNotifiedOnlyByNOrder = w.secondOrder()
		o.SecondOrderRecall = ratio(o.NotifiedSecondOrderInfections, o.SecondOrderInfections)
		o.SecondOrderRecallAppUsers = ratio(o.NotifiedSecondOrderInfections, o.SecondOrderInfectionsWithApp)
	}
	s.Definitions = summaryDefinitions(w.gps != nil, w.clock.live, s.OrderSummary != nil)
	if w.gps != nil {
		w.gps.finish()
		s.GPSSummary = w.gps.sum
	}
}
