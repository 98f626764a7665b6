// Package population runs the whole conftrace system on a simulated population and
// compares what the backend did with the ground truth the simulator knows.
//
// A population of people lives in households, goes to workplaces and schools
// on weekdays and meets strangers in the community. Every encounter has a
// start, a duration and a distance. An epidemic spreads over those
// encounters (incubation, infectious period, symptoms); people with symptoms
// get tested, a health authority signs the results, and app users who test
// positive upload their contact tuples if they consent. Every app user asks
// the backend once a simulated day whether it was exposed. All of this goes
// through the real client SDK, so over attested Oblivious HTTP, to a real
// backend whose clock follows the simulation (Config.SetClock), or to a
// live backend that keeps real time (see below).
//
// Phones are modelled with Bluetooth loss: each side of an encounter hears
// the other in a 10-minute interval only with some probability, measures its
// own attenuation (distance, a per-phone calibration offset and noise) and
// its own duration, so the two sides' records differ as they do in the field.
//
// Run returns a Summary that sets the backend's answers beside the truth:
//
//   - protocol exactness: for every exposure check the simulator computes,
//     from its own record of the tuples each phone logged and uploaded and
//     from the attested risk policy, whether the backend must answer
//     "exposed"; any difference is a bug, and Summary.ProtocolExact says so;
//   - epidemiological recall and precision against true close contacts
//     (15 minutes within 2 m while infectious), which Bluetooth loss and app
//     adoption limit;
//   - the delay from a positive test to the contacts' notification, bytes per
//     device and day beside a GAEN-style design, and request latencies.
//
// With Config.GPS, people also have GPS traces drawn from the same
// encounter model; the authority uploads positive patients' traces and
// devices check their own, and every answer is compared, episodes
// included, with gps.BruteForce (Summary.GPSSummary). The Bluetooth side
// of the run is unchanged by it.
//
// Everything but Summary.Timing is a deterministic function of Config.Seed
// and the population parameters: randomness comes from one seeded PCG
// generator consumed in a fixed order (GPS from generators of its own,
// seeded from the same seed), and the backend's own randomness (keys,
// tokens) does not reach the counts.
//
// # Live backends
//
// A backend that is already running (conftrace serve) keeps real time, and
// nothing can move its clock. Leave Config.SetClock nil to drive one: the
// simulated period then ends at the present (day 0 is Config.Days days
// before today's UTC midnight, the last day is yesterday), so it must fit
// in the backend's retention window, at most RetentionDays-1 days. Every
// request happens at real time, while the tuples, test dates and GPS fixes
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
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// DefaultStart is the simulated time at which a run begins unless
// Config.Start says otherwise; a fixed date keeps runs reproducible.
var DefaultStart = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// GAENBytesPerKey is what one published daily key costs every device in the
// GAEN-style baseline: 16 bytes of key, 4 of rolling start interval and 4 of
// rolling period, plus about 4 bytes of protobuf framing and transmission
// risk, as in the Exposure Notification key export format.
const GAENBytesPerKey = 28

// ErrNotExact is returned (wrapped) by Summary.Check when the backend's
// answers differed from what the protocol requires.
var ErrNotExact = errors.New("sim: the backend's exposure answers differ from the protocol's")

// ErrTooManyDays is returned (wrapped) by Run when the simulated period
// does not fit in a live backend's retention window.
var ErrTooManyDays = errors.New("sim: the simulated days do not fit in the live backend's retention window")

// liveSkew is how far ahead of the real clock a live run computes the
// retention window of an upload, so that an upload sent just before UTC
// midnight holds no day that the backend's window left by the time the
// request arrives.
const liveSkew = time.Minute

// Config describes one simulation.
type Config struct {
	// People is the population size; Days the number of simulated days.
	People, Days int
	// Seed makes the run reproducible.
	Seed uint64
	// Adoption is the fraction of people running the app (default 0.6).
	Adoption float64
	// Consent is the probability that an app user who tests positive
	// uploads (default 0.8).
	Consent float64
	// Detection is the probability that a phone hears the other phone of an
	// encounter in a 10-minute interval (default 0.85).
	Detection float64
	// Start is the simulated time of day 0 (midnight UTC); zero means
	// DefaultStart, or with a live backend (SetClock nil) Days days before
	// today's UTC midnight, which is the only start a live backend allows.
	Start time.Time

	// Server is the backend's base URL.
	Server string
	// Expectations say which attested backend the phones accept.
	Expectations attest.Expectations
	// Verifiers check the backend's evidence; nil means
	// client.DefaultVerifiers.
	Verifiers []attest.Verifier
	// Authority signs test results; the backend's policy must list it.
	Authority *authority.Key
	// SetClock moves the backend's clock to the simulated time: results,
	// uploads and the retention window follow it. Nil means a live backend
	// that keeps real time (see the package documentation); then Days may
	// be 0, for the most that fit: the policy's RetentionDays-1.
	SetClock func(time.Time)
	// Nonce is mixed with Seed into every identifier that reaches the
	// backend. Nil keeps the identifiers a function of Seed alone; with a
	// live backend Run draws a fresh random nonce when Nonce is nil, so
	// that runs against one backend never see each other's data.
	Nonce []byte
	// Daily, if set, is called at the start of every simulated day, after
	// the clock moved; the demo expires the backend's old days there, as a
	// deployed backend does on a timer. A live backend runs its own.
	Daily func(ctx context.Context) error
	// Workers bounds the concurrent exposure checks (default 8).
	Workers int
	// Progress, if set, is called after each simulated day.
	Progress func(day, days int)

	// GPS adds GPS traces: the health authority uploads positive
	// patients' traces and app users' devices check their own against
	// them; see gps.go for the model. It does not change the Bluetooth
	// side of the run.
	GPS bool
	// GPSCheckEvery is how many days apart each device checks its trace
	// (default 3, to keep a run of the default size to about a minute).
	GPSCheckEvery int
}

// Summary is what a run did, beside the ground truth.
type Summary struct {
	People   int    `json:"people"`
	Days     int    `json:"days"`
	Seed     uint64 `json:"seed"`
	AppUsers int    `json:"app_users"`
	// Live is set when the run drove a backend that keeps real time;
	// Nonce is the run's nonce in hex, when it had one.
	Live  bool   `json:"live_backend,omitempty"`
	Nonce string `json:"run_nonce,omitempty"`

	Infections    int `json:"infections"`
	Tests         int `json:"tests"`
	PositiveTests int `json:"positive_tests"`
	Uploads       int `json:"uploads"`
	Checks        int `json:"exposure_checks"`
	Requests      int `json:"requests"`

	// Notified counts devices the backend told "exposed" at least once;
	// ShouldBeNotified those the protocol says it must tell at least once.
	Notified         int `json:"notified"`
	ShouldBeNotified int `json:"should_be_notified"`
	// MissedNotifications and FalseNotifications count exposure checks
	// whose answer was "not exposed" though the protocol requires
	// "exposed", and the reverse.
	MissedNotifications int  `json:"missed_notifications"`
	FalseNotifications  int  `json:"false_notifications"`
	ProtocolExact       bool `json:"protocol_exact"`

	// TrueContacts counts distinct people with at least 15 minutes within
	// 2 m of an uploading case during its infectious period (whether or not
	// they run the app); NotifiedTrueContacts those of them notified.
	TrueContacts         int     `json:"true_contacts"`
	TrueContactsWithApp  int     `json:"true_contacts_with_app"`
	NotifiedTrueContacts int     `json:"notified_true_contacts"`
	EpiRecall            float64 `json:"epi_recall"`
	EpiRecallAppUsers    float64 `json:"epi_recall_app_users"`
	EpiPrecision         float64 `json:"epi_precision"`

	// NotificationDelayDays[i] counts notified devices first notified i
	// days after the test of the case that exposed them was taken.
	NotificationDelayDays []int   `json:"notification_delay_days"`
	MedianDelayDays       float64 `json:"median_notification_delay_days"`

	BytesPerDeviceDay     float64 `json:"bytes_per_device_day"`
	GAENKeysPublished     int     `json:"gaen_keys_published"`
	GAENBytesPerDeviceDay float64 `json:"gaen_bytes_per_device_day"`

	Daily []Day `json:"daily"`
	// Definitions says in words how the figures above are computed.
	Definitions map[string]string `json:"definitions"`

	// Timing holds every wall-clock figure; it is the only part of a
	// Summary that differs between two runs with the same seed, unless
	// the runs drove a live backend.
	Timing Timing `json:"timing"`

	// GPSSummary is set when Config.GPS was; its fields are inlined in
	// the JSON, and absent without GPS.
	*GPSSummary
}

// Day is one simulated day's events.
type Day struct {
	Date          string `json:"date"`
	Infections    int    `json:"infections"`
	Tests         int    `json:"tests"`
	PositiveTests int    `json:"positive_tests"`
	Uploads       int    `json:"uploads"`
	NewlyNotified int    `json:"newly_notified"`
}

// Timing holds the wall-clock figures of a run.
type Timing struct {
	TotalSeconds float64 `json:"total_seconds"`
	// Latencies of the phones' and authority's requests as the client saw
	// them (encryption, HTTP on loopback, backend), in milliseconds.
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP90Ms float64 `json:"latency_p90_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	LatencyMaxMs float64 `json:"latency_max_ms"`
	// Requests the backend served and how long it took to answer them
	// (from the request's arrival to the last byte of the answer), in
	// milliseconds; known only when the backend runs in-process.
	BackendRequests int     `json:"backend_requests,omitempty"`
	BackendP50Ms    float64 `json:"backend_p50_ms,omitempty"`
	BackendP90Ms    float64 `json:"backend_p90_ms,omitempty"`
	BackendP99Ms    float64 `json:"backend_p99_ms,omitempty"`
	BackendMaxMs    float64 `json:"backend_max_ms,omitempty"`
}

// SetBackendLatencies records the durations of the requests the backend
// served, as measured around its HTTP handler.
func (t *Timing) SetBackendLatencies(d []time.Duration) {
	l := slices.Clone(d)
	slices.Sort(l)
	t.BackendRequests = len(l)
	t.BackendP50Ms, t.BackendP90Ms, t.BackendP99Ms, t.BackendMaxMs = quantileMs(l, 0.5), quantileMs(l, 0.9), quantileMs(l, 0.99), quantileMs(l, 1)
}

// quantileMs returns the q quantile of sorted durations, in milliseconds.
func quantileMs(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return float64(sorted[i].Microseconds()) / 1000
}

// Check returns an error wrapping ErrNotExact unless the protocol was
// exact, for GPS too when the run had GPS.
func (s *Summary) Check() error {
	if !s.ProtocolExact {
		return fmt.Errorf("%w: %d missed and %d false notifications", ErrNotExact, s.MissedNotifications, s.FalseNotifications)
	}
	if g := s.GPSSummary; g != nil && !g.GPSProtocolExact {
		return fmt.Errorf("%w: GPS: %d missed and %d false notifications, %d answers with other episodes", ErrNotExact, g.GPSMissed, g.GPSFalse, g.GPSEpisodeMismatches)
	}
	return nil
}

// rec is one tuple a phone logged, with what the simulator knows about it.
type rec struct {
	t       contactlog.Tuple
	partner int32
	// mirror is the partner's duration for the same interval, 0 when the
	// partner's phone did not hear this one.
	mirror uint16
}

type person struct {
	household, group int
	app              bool
	calib            float64

	ever                            bool // ever infected
	infected, infFrom, infTo, onset int  // days
	symptomatic                     bool
	lastTest                        int

	pending []test

	uploaded    bool
	uploadAt    time.Time // when the backend acknowledged the upload
	uploadDay   int
	uploadFirst int // first day of the upload's window
	testDay     int // day the uploading case's test was taken

	tuples        [][]rec // by day
	firstNotified int
}

type test struct {
	day, resultDay int
	positive       bool
	secret         []byte
	submitted      bool
}

type world struct {
	// simNow is the backend's simulated time (Unix nanoseconds), which the
	// client also follows; unused with a live backend.
	simNow *atomic.Int64
	cfg    Config
	rng    *mrand.Rand
	pol    policy.Policy
	c      *client.Client
	people []person
	start  time.Time
	keys   map[[2]int]*enid.Key
	// close accumulates true minutes within 2 m of (infector, contact)
	// while the infector is infectious.
	close  map[[2]int32]int
	meter  *meter
	should []bool
	sum    *Summary
	gps    *gpsWorld // nil without Config.GPS
	// live is set when the backend keeps real time (Config.SetClock nil).
	live bool
	// retries counts checks asked again because the backend's day
	// changed while they were under way (live backends only).
	retries atomic.Int64
}

// Run simulates cfg.Days days and returns the summary. It fails on a
// backend or network error; a protocol mismatch is reported in the summary
// (see Summary.Check), not as an error.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	began := time.Now()
	live := cfg.SetClock == nil
	if cfg.People < 2 || cfg.Days < 0 || (cfg.Days == 0 && !live) {
		return nil, fmt.Errorf("sim: need at least 2 people and 1 day, got %d and %d", cfg.People, cfg.Days)
	}
	if cfg.Authority == nil {
		return nil, errors.New("sim: Config.Authority is required")
	}
	if live && !cfg.Start.IsZero() {
		return nil, errors.New("sim: a live backend (Config.SetClock nil) keeps real time, so the run ends at the present and Config.Start must be zero")
	}
	if live && cfg.Nonce == nil {
		cfg.Nonce = make([]byte, 16)
		rand.Read(cfg.Nonce)
	}
	if cfg.Adoption == 0 {
		cfg.Adoption = 0.6
	}
	if cfg.Consent == 0 {
		cfg.Consent = 0.8
	}
	if cfg.Detection == 0 {
		cfg.Detection = 0.85
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	start := cfg.Start
	if start.IsZero() {
		start = DefaultStart
	}
	if !live {
		cfg.SetClock(start)
	}
	m := newMeter(cfg.Workers)
	simNow := new(atomic.Int64)
	simNow.Store(start.UnixNano())
	var clientNow func() time.Time // real time with a live backend
	if !live {
		clientNow = func() time.Time { return time.Unix(0, simNow.Load()).UTC() }
	}
	c, err := client.New(ctx, client.Config{
		Server:       cfg.Server,
		Expectations: cfg.Expectations,
		Verifiers:    cfg.Verifiers,
		HTTPClient:   &http.Client{Transport: m, Timeout: 60 * time.Second},
		Now:          clientNow,
	})
	if err != nil {
		return nil, fmt.Errorf("sim: connecting to the backend: %w", err)
	}
	pol := c.Policy()
	if a, ok := pol.Authority(cfg.Authority.Name); !ok || !a.PublicKey.Equal(cfg.Authority.PublicKey()) {
		return nil, fmt.Errorf("sim: the backend's policy does not list authority %q with this key", cfg.Authority.Name)
	}
	if live {
		// Every simulated day must lie in the backend's window, which
		// holds today and the RetentionDays-1 days before it.
		most := pol.RetentionDays - 1
		if cfg.Days == 0 {
			cfg.Days = most
		}
		if cfg.Days < 1 || cfg.Days > most {
			return nil, fmt.Errorf("%w: %d days asked, the backend keeps %d days (today included), so at most %d simulated days end yesterday inside it", ErrTooManyDays, cfg.Days, pol.RetentionDays, most)
		}
		start = time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -cfg.Days)
	}
	w := &world{
		simNow: simNow,
		cfg:    cfg, rng: mrand.New(mrand.NewPCG(cfg.Seed, 0x636f6e6674726163)),
		pol: pol, c: c, start: start, live: live,
		keys: map[[2]int]*enid.Key{}, close: map[[2]int32]int{}, meter: m,
		sum: &Summary{People: cfg.People, Days: cfg.Days, Seed: cfg.Seed, Live: live, NotificationDelayDays: []int{}},
	}
	if cfg.Nonce != nil {
		w.sum.Nonce = hex.EncodeToString(cfg.Nonce)
	}
	w.populate()
	if cfg.GPS {
		w.gps = newGPSWorld(w)
	}
	for d := range cfg.Days {
		if err := w.day(ctx, d); err != nil {
			return nil, err
		}
		if cfg.Progress != nil {
			cfg.Progress(d+1, cfg.Days)
		}
	}
	w.finish()
	w.sum.Timing = m.timing()
	w.sum.Timing.TotalSeconds = time.Since(began).Seconds()
	return w.sum, nil
}

// at returns the simulated time of minute min of day d.
func (w *world) at(d, min int) time.Time {
	return w.start.Add(time.Duration(d)*24*time.Hour + time.Duration(min)*time.Minute)
}

// advance returns the backend's time for what the simulation does at
// minute min of day d: the simulated time, to which it moves the
// backend's clock, or the real time with a live backend.
func (w *world) advance(d, min int) time.Time {
	if w.live {
		return time.Now()
	}
	t := w.at(d, min)
	w.simNow.Store(t.UnixNano())
	w.cfg.SetClock(t)
	return t
}

// firstDay returns the first simulation day (at least 0) of the backend's
// retention window at now.
func (w *world) firstDay(now time.Time) int {
	return max(0, w.dayOf(w.pol.WindowStart(now)))
}

// uploadFirst returns the first day an upload sent at now may hold; with
// a live backend it allows for the request crossing UTC midnight.
func (w *world) uploadFirst(now time.Time) int {
	if w.live {
		now = now.Add(liveSkew)
	}
	return w.firstDay(now)
}

// sameWindow reports whether the backend's retention window was the same
// at a and b: then it was the same all the time between.
func (w *world) sameWindow(a, b time.Time) bool {
	return w.pol.WindowStart(a).Equal(w.pol.WindowStart(b))
}

// mix returns b unchanged without a nonce, and otherwise a hash of the
// nonce and b, so that identifiers are fresh for every live run.
func (w *world) mix(label string, b []byte) []byte {
	if w.cfg.Nonce == nil {
		return b
	}
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{byte(len(w.cfg.Nonce))})
	h.Write(w.cfg.Nonce)
	h.Write(b)
	return h.Sum(nil)
}

// dayOf returns the simulation day of t (may be negative).
func (w *world) dayOf(t time.Time) int {
	return int(math.Floor(t.Sub(w.start).Hours() / 24))
}

func (w *world) populate() {
	n := w.cfg.People
	w.people = make([]person, n)
	w.should = make([]bool, n)
	r := w.rng
	// Households of 1 to 5, with sizes roughly as in European censuses.
	sizes := []float64{0.28, 0.35, 0.15, 0.15, 0.07}
	hh := 0
	for i := 0; i < n; hh++ {
		size, u := 1, r.Float64()
		for k, p := range sizes {
			if u < p {
				size = k + 1
				break
			}
			u -= p
		}
		for j := 0; j < size && i < n; j, i = j+1, i+1 {
			w.people[i].household = hh
		}
	}
	// 70% work in workplaces of about 12, 20% go to classes of about 24,
	// 10% stay home.
	work, school := 0, 0
	workLeft, schoolLeft := 0, 0
	nextGroup := 0
	for i := range w.people {
		p := &w.people[i]
		u := r.Float64()
		switch {
		case u < 0.7:
			if workLeft == 0 {
				work, workLeft = nextGroup, 4+r.IntN(17)
				nextGroup++
			}
			p.group, workLeft = work, workLeft-1
		case u < 0.9:
			if schoolLeft == 0 {
				school, schoolLeft = nextGroup, 20+r.IntN(9)
				nextGroup++
			}
			p.group, schoolLeft = school, schoolLeft-1
		default:
			p.group = -1
		}
		p.app = r.Float64() < w.cfg.Adoption
		p.calib = r.Float64()*10 - 5
		p.lastTest, p.firstNotified = -100, -1
		p.tuples = make([][]rec, w.cfg.Days)
	}
	// Seed the epidemic: 2% infected over the five days before the start.
	for range max(2, n/50) {
		w.infect(r.IntN(n), -r.IntN(5))
	}
}

// infect makes i infected on day d if susceptible, drawing the course of
// the disease: infectious from 2 to 3 days after infection for 6 to 8
// days; 60% get symptoms 4 to 6 days after infection.
func (w *world) infect(i, d int) bool {
	p := &w.people[i]
	if p.ever {
		return false
	}
	p.ever, p.infected = true, d
	p.infFrom = d + 2 + w.rng.IntN(2)
	p.infTo = p.infFrom + 6 + w.rng.IntN(3)
	p.symptomatic = w.rng.Float64() < 0.6
	p.onset = d + 4 + w.rng.IntN(3)
	if len(w.sum.Daily) > 0 {
		w.sum.Infections++
		w.sum.Daily[d].Infections++
	}
	return true
}

func (p *person) infectious(d int) bool { return p.ever && d >= p.infFrom && d < p.infTo }

// key derives person i's daily key of day d from the seed (and the
// nonce), so that the identifiers are reproducible.
func (w *world) key(i, d int) *enid.Key {
	if k, ok := w.keys[[2]int{i, d}]; ok {
		return k
	}
	var b [24]byte
	binary.BigEndian.PutUint64(b[:], w.cfg.Seed)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	binary.BigEndian.PutUint64(b[16:], uint64(d))
	h := sha256.Sum256(append([]byte("conftrace sim TEK"), w.mix("conftrace sim TEK nonce", b[:])...))
	start := enid.IntervalOf(w.at(d, 0))
	k, err := enid.NewKey(enid.TEK(h[:16]), start, 144)
	if err != nil {
		panic(err) // unreachable: 144 is the rolling period
	}
	w.keys[[2]int{i, d}] = k
	return k
}

type encounter struct {
	a, b          int
	start, length int // minutes
	dist          float64
	kind          encounterKind
}

// encounterKind says where an encounter happens, for the GPS traces.
type encounterKind uint8

const (
	atHome encounterKind = iota
	atGroup
	inCommunity
)

// encounters draws day d's encounters in a fixed order.
func (w *world) encounters(d int) []encounter {
	r := w.rng
	var es []encounter
	n := len(w.people)
	// Households: every pair spends an evening stretch together.
	for i := 0; i < n; {
		j := i
		for j < n && w.people[j].household == w.people[i].household {
			j++
		}
		for a := i; a < j; a++ {
			for b := a + 1; b < j; b++ {
				es = append(es, encounter{a, b, 17*60 + r.IntN(120), 30 + r.IntN(150), 0.5 + 1.5*r.Float64(), atHome})
			}
		}
		i = j
	}
	// Workplaces and schools on weekdays.
	if wd := w.at(d, 0).Weekday(); wd != time.Saturday && wd != time.Sunday {
		groups := map[int][]int{}
		var ids []int
		for i := range w.people {
			if g := w.people[i].group; g >= 0 {
				if groups[g] == nil {
					ids = append(ids, g)
				}
				groups[g] = append(groups[g], i)
			}
		}
		sort.Ints(ids)
		for _, g := range ids {
			m := groups[g]
			if len(m) < 2 {
				continue
			}
			for _, a := range m {
				for range 1 + r.IntN(3) {
					b := m[r.IntN(len(m))]
					if b != a {
						es = append(es, encounter{a, b, 9*60 + r.IntN(420), 10 + r.IntN(50), 1 + 2*r.Float64(), atGroup})
					}
				}
			}
		}
	}
	// The community: about one chance encounter per person and day.
	for a := range n {
		for range r.IntN(3) {
			b := r.IntN(n)
			if b != a {
				es = append(es, encounter{a, b, 8*60 + r.IntN(720), 5 + r.IntN(26), 1 + 5*r.Float64(), inCommunity})
			}
		}
	}
	return es
}

// attenuation models what a phone measures at dist metres: log-distance
// path loss, the phone's calibration offset and noise.
func (w *world) attenuation(i int, dist float64) uint8 {
	a := 50 + 25*math.Log10(dist) + w.people[i].calib + w.rng.NormFloat64()*4
	return uint8(min(254, max(1, math.Round(a))))
}

func (w *world) play(d int, es []encounter) {
	type pi struct {
		a, b int
		i    enid.Interval
	}
	seen := map[pi]bool{}
	for _, e := range es {
		pa, pb := &w.people[e.a], &w.people[e.b]
		// Transmission, from the true encounter.
		if e.dist <= 2 {
			if pa.infectious(d) {
				w.close[[2]int32{int32(e.a), int32(e.b)}] += e.length
			}
			if pb.infectious(d) {
				w.close[[2]int32{int32(e.b), int32(e.a)}] += e.length
			}
		}
		p := 1 - math.Exp(-0.003*float64(e.length)/max(1, e.dist*e.dist))
		switch {
		case pa.infectious(d) && !pb.ever:
			if w.rng.Float64() < p {
				w.infect(e.b, d)
			}
		case pb.infectious(d) && !pa.ever:
			if w.rng.Float64() < p {
				w.infect(e.a, d)
			}
		}
		if !pa.app || !pb.app {
			continue
		}
		// Bluetooth: per 10-minute interval, each side hears the other
		// with some probability and measures its own duration and
		// attenuation.
		ka, kb := w.key(e.a, d), w.key(e.b, d)
		begin, end := w.at(d, e.start), w.at(d, e.start+e.length)
		lo, hi := min(e.a, e.b), max(e.a, e.b)
		for t := begin; t.Before(end); {
			i := enid.IntervalOf(t)
			next := (i + 1).Time()
			if next.After(end) {
				next = end
			}
			minutes := int(next.Sub(t) / time.Minute)
			t = next
			k := pi{lo, hi, i}
			if minutes == 0 || seen[k] {
				continue // one tuple per pair and interval, as phones keep
			}
			seen[k] = true
			var ha, hb uint16
			if w.rng.Float64() < w.cfg.Detection {
				ha = uint16(max(1, minutes-w.rng.IntN(3)))
			}
			if w.rng.Float64() < w.cfg.Detection {
				hb = uint16(max(1, minutes-w.rng.IntN(3)))
			}
			ra, rb := ka.RPI(i), kb.RPI(i)
			if ha > 0 {
				pa.tuples[d] = append(pa.tuples[d], rec{contactlog.Tuple{Own: ra, Heard: rb, Interval: i, Duration: ha, Attenuation: w.attenuation(e.a, e.dist)}, int32(e.b), hb})
			}
			if hb > 0 {
				pb.tuples[d] = append(pb.tuples[d], rec{contactlog.Tuple{Own: rb, Heard: ra, Interval: i, Duration: hb, Attenuation: w.attenuation(e.b, e.dist)}, int32(e.a), ha})
			}
		}
	}
}

// day runs day d: encounters, infections, tests and results, uploads and
// every app user's exposure check.
func (w *world) day(ctx context.Context, d int) error {
	s := w.sum
	s.Daily = append(s.Daily, Day{Date: w.at(d, 0).Format(api.DateLayout)})
	w.advance(d, 8*60)
	if w.cfg.Daily != nil {
		if err := w.cfg.Daily(ctx); err != nil {
			return fmt.Errorf("sim: day %d: %w", d, err)
		}
	}
	es := w.encounters(d)
	w.play(d, es)
	if w.gps != nil {
		w.gps.plan(d, es)
	}

	// Testing: symptomatic infected people a day after onset (80%),
	// people with other illnesses (0.2% a day), and notified app users
	// the day after their notification (70%).
	for i := range w.people {
		p := &w.people[i]
		seek := false
		switch {
		case p.ever && p.symptomatic && d == p.onset+1:
			seek = w.rng.Float64() < 0.8
		case p.app && p.firstNotified >= 0 && d == p.firstNotified+1:
			seek = w.rng.Float64() < 0.7
		default:
			seek = w.rng.Float64() < 0.002
		}
		if !seek || d-p.lastTest < 7 {
			continue
		}
		p.lastTest = d
		secret := make([]byte, api.TestSecretSize)
		for j := range secret {
			secret[j] = byte(w.rng.Uint32())
		}
		secret = w.mix("conftrace sim test secret", secret)[:api.TestSecretSize]
		positive := p.ever && d >= p.infected+1 && d < p.infTo+3
		p.pending = append(p.pending, test{day: d, resultDay: d + 1 + w.rng.IntN(2), positive: positive, secret: secret})
		s.Tests++
		s.Daily[d].Tests++
	}

	// The authority signs today's results in the evening, phones poll
	// them, and positive app users upload if they consent.
	w.advance(d, 23*60)
	for i := range w.people {
		p := &w.people[i]
		for j := range p.pending {
			t := &p.pending[j]
			if t.submitted || t.resultDay != d {
				continue
			}
			res := api.Negative
			if t.positive {
				res = api.Positive
				s.PositiveTests++
				s.Daily[d].PositiveTests++
			}
			sr, err := w.cfg.Authority.SignResult(api.TestCode(t.secret), res, w.at(t.day, 10*60), time.Time{}, w.advance(d, 23*60))
			if err != nil {
				return fmt.Errorf("sim: signing a result: %w", err)
			}
			if err := w.c.SubmitResult(ctx, sr); err != nil {
				return fmt.Errorf("sim: day %d: submitting a result: %w", d, err)
			}
			s.Requests++
			t.submitted = true
		}
	}
	if w.gps != nil {
		if err := w.gps.upload(ctx, d); err != nil {
			return err
		}
	}
	w.advance(d, 23*60+10)
	for i := range w.people {
		p := &w.people[i]
		keep := p.pending[:0]
		for _, t := range p.pending {
			if !t.submitted {
				keep = append(keep, t)
				continue
			}
			if !p.app {
				continue // a result by letter or phone call
			}
			dctx := withDevice(ctx, i)
			pr, err := w.c.PollResult(dctx, t.secret)
			if err != nil {
				return fmt.Errorf("sim: day %d: polling a result: %w", d, err)
			}
			s.Requests++
			if pr.Result != api.Positive || p.uploaded || w.rng.Float64() >= w.cfg.Consent {
				continue
			}
			first := w.uploadFirst(w.advance(d, 23*60+10))
			var ts []contactlog.Tuple
			for k := first; k <= d; k++ {
				for _, r := range p.tuples[k] {
					ts = append(ts, r.t)
				}
			}
			if len(ts) == 0 {
				continue // nothing to upload
			}
			if _, err := w.c.Upload(dctx, pr.UploadAuthorization, ts); err != nil {
				return fmt.Errorf("sim: day %d: uploading: %w", d, err)
			}
			s.Requests++
			p.uploaded, p.uploadAt, p.uploadDay, p.uploadFirst, p.testDay = true, w.advance(d, 23*60+10), d, first, t.day
			s.Uploads++
			s.Daily[d].Uploads++
			s.GAENKeysPublished += d - first + 1
		}
		p.pending = keep
	}

	// Every app user checks for exposure.
	checkAt := w.advance(d, 23*60+30)
	var users []int
	for i := range w.people {
		if w.people[i].app {
			users = append(users, i)
		}
	}
	got := make([]bool, len(w.people))
	at := make([]time.Time, len(w.people))
	if err := w.checkAll(ctx, users, checkAt, d, got, at); err != nil {
		return err
	}
	for _, i := range users {
		p := &w.people[i]
		want, cause := w.expected(i, d, at[i])
		s.Checks++
		s.Requests++
		switch {
		case want && !got[i]:
			s.MissedNotifications++
		case got[i] && !want:
			s.FalseNotifications++
		}
		if got[i] && p.firstNotified < 0 {
			p.firstNotified = d
			s.Daily[d].NewlyNotified++
			s.Notified++
			if cause >= 0 {
				delay := d - w.people[cause].testDay
				for len(s.NotificationDelayDays) <= delay {
					s.NotificationDelayDays = append(s.NotificationDelayDays, 0)
				}
				s.NotificationDelayDays[delay]++
			}
		}
		if want && !w.should[i] {
			w.should[i] = true
			s.ShouldBeNotified++
		}
	}
	if w.gps != nil {
		return w.gps.check(ctx, d)
	}
	return nil
}

// checkAll has every user check its tuples of the retention window at
// checkAt, or, with a live backend, at the real time of each check, and
// sets got[i] to the answer and at[i] to the time the check's window
// follows.
func (w *world) checkAll(ctx context.Context, users []int, checkAt time.Time, d int, got []bool, at []time.Time) error {
	return w.checkEach(ctx, len(users), checkAt, func(ctx context.Context, j int, now time.Time) error {
		i := users[j]
		var ts []contactlog.Tuple
		for k := w.firstDay(now); k <= d; k++ {
			for _, r := range w.people[i].tuples[k] {
				ts = append(ts, r.t)
			}
		}
		resp, err := w.c.CheckExposure(withDevice(ctx, i), ts)
		if err != nil {
			return fmt.Errorf("sim: day %d: checking exposure: %w", d, err)
		}
		got[i], at[i] = resp.Exposed, now
		return nil
	})
}

// checkEach runs check(ctx, j, now) for every j in [0, n) on cfg.Workers
// goroutines and returns the first error, after which it stops. now is
// checkAt, or with a live backend the real time of the check; a live check
// during which the backend's day changed is run again, since which window
// the backend answered for is then unknown.
func (w *world) checkEach(ctx context.Context, n int, checkAt time.Time, check func(ctx context.Context, j int, now time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		err     error
	)
	for range w.cfg.Workers {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= n || ctx.Err() != nil {
					return
				}
				for {
					now := checkAt
					if w.live {
						now = time.Now()
					}
					if e := check(ctx, j, now); e != nil {
						errOnce.Do(func() { err = e; cancel() })
						return
					}
					if w.live && !w.sameWindow(now, time.Now()) {
						w.retries.Add(1)
						continue
					}
					break
				}
			}
		})
	}
	wg.Wait()
	return err
}

// expected computes, from the simulator's own record, whether the protocol
// requires the backend to answer "exposed" to device i, which holds the
// tuples of days up to d, checking at the backend's time checkAt: the
// tuples of the retention window at checkAt, against the uploads the
// backend acknowledged by then. It also returns which uploading case (the
// one tested earliest) contributed to an exposed day, or -1. Both the
// simulated and the live clock come through checkAt, so one rule serves
// both.
func (w *world) expected(i, d int, checkAt time.Time) (bool, int) {
	risk := w.pol.Risk
	p := &w.people[i]
	exposed, cause := false, -1
	for k := w.firstDay(checkAt); k <= d; k++ {
		sum := 0
		dayCause := -1
		for _, r := range p.tuples[k] {
			q := &w.people[r.partner]
			if !q.uploaded || q.uploadAt.After(checkAt) || r.mirror == 0 || k < q.uploadFirst || k > q.uploadDay {
				continue
			}
			sum += risk.WeightedMinutes(int(min(r.t.Duration, r.mirror)), int(r.t.Attenuation))
			if dayCause < 0 || q.testDay < w.people[dayCause].testDay {
				dayCause = int(r.partner)
			}
		}
		if risk.Exposed(sum) {
			exposed = true
			if cause < 0 || w.people[dayCause].testDay < w.people[cause].testDay {
				cause = dayCause
			}
		}
	}
	return exposed, cause
}

func (w *world) finish() {
	s := w.sum
	s.Requests += int(w.retries.Load())
	s.ProtocolExact = s.MissedNotifications == 0 && s.FalseNotifications == 0
	for i := range w.people {
		if w.people[i].app {
			s.AppUsers++
		}
	}
	// True close contacts of uploading cases.
	contacts := map[int32]bool{}
	for k, m := range w.close {
		if m >= 15 && w.people[k[0]].uploaded {
			contacts[k[1]] = true
		}
	}
	for c := range contacts {
		s.TrueContacts++
		if w.people[c].app {
			s.TrueContactsWithApp++
		}
		if w.people[c].firstNotified >= 0 {
			s.NotifiedTrueContacts++
		}
	}
	s.EpiRecall = ratio(s.NotifiedTrueContacts, s.TrueContacts)
	s.EpiRecallAppUsers = ratio(s.NotifiedTrueContacts, s.TrueContactsWithApp)
	s.EpiPrecision = ratio(s.NotifiedTrueContacts, s.Notified)
	s.MedianDelayDays = median(s.NotificationDelayDays)
	deviceDays := float64(max(1, s.AppUsers) * s.Days)
	s.BytesPerDeviceDay = math.Round(float64(w.meter.deviceBytes.Load()) / deviceDays)
	s.GAENBytesPerDeviceDay = math.Round(float64(s.GAENKeysPublished*GAENBytesPerKey) / float64(s.Days))
	s.Definitions = definitions
	if w.gps != nil || w.live {
		s.Definitions = maps.Clone(definitions)
	}
	if w.gps != nil {
		w.gps.finish()
		s.GPSSummary = w.gps.sum
		maps.Copy(s.Definitions, gpsDefinitions)
	}
	if w.live {
		maps.Copy(s.Definitions, liveDefinitions)
	}
}

// liveDefinitions explain the figures of a run against a live backend.
var liveDefinitions = map[string]string{
	"live_backend": "the run drove a running backend that keeps real time: the simulated days end yesterday inside its retention window, every request happened at real time while tuples, test dates and GPS fixes carry the simulated past, and each check's truth uses the window at the real time of that check; the counts are not reproducible across runs (the dates, so the weekdays, follow the calendar, and the GPS city moves with run_nonce)",
	"run_nonce":    "random per run and mixed with the seed into every identifier the backend sees (daily keys, test secrets, the GPS city's location), so that a run never matches, nor replays, what earlier runs left on the same backend",
}

var definitions = map[string]string{
	"protocol_exact":            "every exposure check answered exactly as the protocol requires: the device's tuples of the retention window whose mirror an uploading case logged and uploaded, scored per UTC day with the attested risk policy (minimum of both durations, the checking device's attenuation)",
	"missed_notifications":      "exposure checks answered 'not exposed' that the protocol says must be 'exposed'",
	"false_notifications":       "exposure checks answered 'exposed' that the protocol says must be 'not exposed'",
	"notified":                  "devices told 'exposed' at least once",
	"true_contacts":             "distinct people with at least 15 minutes within 2 m of an uploading case during its infectious period (true proximity, before Bluetooth loss; app or not)",
	"epi_recall":                "notified true contacts / true contacts (limited by app adoption and Bluetooth loss)",
	"epi_recall_app_users":      "notified true contacts / true contacts running the app",
	"epi_precision":             "notified devices that are true contacts / notified devices",
	"notification_delay_days":   "histogram: days from the test of the (earliest-tested) case that exposed a device to its first notification",
	"bytes_per_device_day":      "Oblivious HTTP request and response bodies a device sent and received (result polls, uploads, exposure checks), per app user and simulated day; the one-time attestation bundle fetch is not counted",
	"gaen_bytes_per_device_day": "GAEN-style baseline: every daily key an uploading case publishes (one per day of its window) is downloaded once by every device, 28 bytes each, per simulated day",
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(float64(a)/float64(b)*1e4) / 1e4
}

func median(hist []int) float64 {
	n := 0
	for _, c := range hist {
		n += c
	}
	if n == 0 {
		return 0
	}
	seen := 0
	for i, c := range hist {
		seen += c
		if 2*seen >= n {
			return float64(i)
		}
	}
	return 0
}
