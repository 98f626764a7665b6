package population

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/release"
)

// DefaultStart() returns the simulated time at which a run begins unless
// Config.Start says otherwise; a fixed date keeps runs reproducible.
func DefaultStart() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }

// ErrTooManyDays is returned (wrapped) by Run when the simulated period
// does not fit in a live backend's retention window.
var ErrTooManyDays = errors.New("population: the simulated days do not fit in the live backend's retention window")

// The values of the Config fields left zero.
const (
	defaultAdoption  = 0.6
	defaultConsent   = 0.8
	defaultDetection = 0.85
	defaultWorkers   = 8
)

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
	// DefaultStart(), or with a live backend (SetClock nil) Days days before
	// today's UTC midnight, which is the only start a live backend allows.
	Start time.Time

	// Server is the backend's base URL.
	Server string
	// Expectations say which attested backend the phones accept.
	Expectations attest.Expectations
	// Governance, if not nil, is the governance set the phones pin: they
	// accept the code and policy its release statements admit (see
	// client.Config.Governance).
	Governance *release.Governance
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
	// Flush, if set, is called after every move of the backend's clock
	// (SetClock), before anything happens at the new time: the backend
	// makes the journal flushes that the time says are due
	// (Enclave.FlushDue), as a deployed backend does every second. Uploads
	// become durable only through them, and the simulator counts an
	// upload still not durable two days on as a mismatch, so a backend
	// whose clock the simulation moves needs it. A live backend flushes on
	// its own clock.
	Flush func(ctx context.Context) error
	// DetailedAnswers asks for a backend whose attested policy answers in
	// detail (policy.AnswersDetailed: every day's figures, and the GPS
	// episodes) rather than coarsely. Whoever starts the backend sets its
	// policy (the demo does, for --detailed-answers); Run refuses a
	// backend whose policy answers coarsely. Either way the oracle
	// compares every answer in everything the attested policy says it
	// carries.
	DetailedAnswers bool
	// MaxOrder, if not 0, asks for a backend whose attested policy
	// notifies up to this order (n-order notifications, orders.go);
	// whoever starts the backend sets its policy (the demo does, for
	// --max-order), and Run refuses a backend whose policy says another.
	// With 0, the run follows the backend's policy, whatever it says.
	MaxOrder int
	// Workers bounds the concurrent exposure checks (default 8).
	Workers int
	// Progress, if set, is called after each simulated day.
	Progress func(day, days int)

	// GAENShare is the fraction of the people without the app who run a
	// foreign GAEN app instead (see gaen.go); 0 means none. It needs
	// GAENExportKey.
	GAENShare float64
	// GAENExportKey is the ECDSA P-256 key with which the simulator, as
	// the GAEN-only people's key server, signs the exports it imports; the
	// backend's policy must list its public key (policy.GAENExportKeys).
	GAENExportKey *ecdsa.PrivateKey

	// GPS adds GPS traces: the health authority uploads positive
	// patients' traces and app users' devices check their own against
	// them; see gps.go for the model. It does not change the Bluetooth
	// side of the run.
	GPS bool
	// GPSCheckEvery is how many days apart each device checks its trace
	// (default 3, which keeps runs of the default size short).
	GPSCheckEvery int
}

// live reports whether cfg drives a backend that keeps real time.
func (cfg *Config) live() bool { return cfg.SetClock == nil }

// withDefaults checks cfg and returns it with the defaults of the fields
// left zero and, for a live backend without a nonce, a fresh random nonce.
// Days stays 0 for a live backend that is to run as many as fit: only the
// backend's policy says how many that is.
func (cfg Config) withDefaults() (Config, error) {
	live := cfg.live()
	if cfg.People < 2 || cfg.Days < 0 || (cfg.Days == 0 && !live) {
		return cfg, fmt.Errorf("population: need at least 2 people and 1 day, got %d and %d", cfg.People, cfg.Days)
	}
	if cfg.Authority == nil {
		return cfg, errors.New("population: Config.Authority is required")
	}
	if cfg.GAENShare < 0 || cfg.GAENShare > 1 {
		return cfg, fmt.Errorf("population: Config.GAENShare %v: want 0 to 1", cfg.GAENShare)
	}
	if cfg.GAENShare > 0 && cfg.GAENExportKey == nil {
		return cfg, errors.New("population: Config.GAENShare needs Config.GAENExportKey, the key that signs the GAEN-only people's exports")
	}
	if live && !cfg.Start.IsZero() {
		return cfg, errors.New("population: a live backend (Config.SetClock nil) keeps real time, so the run ends at the present and Config.Start must be zero")
	}
	if live && cfg.Nonce == nil {
		cfg.Nonce = make([]byte, 16)
		rand.Read(cfg.Nonce)
	}
	if cfg.Adoption == 0 {
		cfg.Adoption = defaultAdoption
	}
	if cfg.Consent == 0 {
		cfg.Consent = defaultConsent
	}
	if cfg.Detection == 0 {
		cfg.Detection = defaultDetection
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	return cfg, nil
}

// nonce is a run's Config.Nonce, which keeps the identifiers of runs
// against one live backend apart.
type nonce []byte

// mix returns b unchanged without a nonce, and otherwise a hash of label,
// the nonce and b, so that identifiers are fresh for every live run.
func (n nonce) mix(label string, b []byte) []byte {
	if n == nil {
		return b
	}
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{byte(len(n))})
	h.Write(n)
	h.Write(b)
	return h.Sum(nil)
}
