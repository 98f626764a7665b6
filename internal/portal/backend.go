package portal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/gps"
)

// ErrNotVerified is returned when the portal is asked to sign while the
// backend's attestation did not verify.
var ErrNotVerified = errors.New("the backend's attestation did not verify: nothing is signed")

// Status is what the portal knows of its backend, for the pages.
type Status struct {
	// Verified is true when the backend's attestation verified and its
	// policy lists this portal's key; then Problem is empty.
	Verified bool
	Problem  string
	Server   string
	// What the attestation proved, once it verified.
	TEE          string
	Simulated    bool
	Measurement  string // hex
	PolicySHA256 string // hex
	ValidUntil   time.Time
	VerifiedAt   time.Time
	// Pinned says what the portal accepts from now on.
	Pinned string
	// FirstUse is true when nothing was pinned by flags: whatever code
	// the backend ran at the portal's start was accepted.
	FirstUse bool
}

// backend is the attested backend the portal signs for. It verifies the
// attestation with the rules phones use (client.New: the evidence, the
// expectations, the policy's bounds, a governance set's release
// statements) when the portal starts and when staff ask again, and pins
// what it accepted: the measurement (the one given, or else the one seen
// first) and the policy seen first, unless a governance set is pinned
// instead, whose signed releases it then follows.
type backend struct {
	cfg client.Config
	key *authority.Key
	now func() time.Time

	mu     sync.Mutex
	c      *client.Client
	status Status
	// The pins taken at the first verification, when no governance set is
	// given: later verifications, as long as the portal runs, refuse any
	// other code or policy.
	pinMeasurements [][]byte
	pinPolicy       []byte
}

func newBackend(cfg client.Config, key *authority.Key, now func() time.Time) *backend {
	return &backend{cfg: cfg, key: key, now: now, status: Status{Server: cfg.Server, Problem: "not verified yet"}}
}

// verify fetches and verifies the backend's attestation bundle. On
// failure the backend is unusable until a verification succeeds; the
// error is also in Status.
func (b *backend) verify(ctx context.Context) error {
	c, pinned, err := b.connect(ctx)
	if err == nil {
		err = b.checkListed(c)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.c = nil
		b.status = Status{Server: b.cfg.Server, Problem: err.Error(), VerifiedAt: b.now()}
		return err
	}
	id := c.Identity()
	pol := sha256.Sum256(c.PolicyDocument())
	_, until := c.Validity()
	b.c = c
	b.status = Status{
		Verified: true, Server: b.cfg.Server, TEE: string(id.TEE), Simulated: id.TEE == attest.Sim,
		Measurement: hex.EncodeToString(id.Measurement), PolicySHA256: hex.EncodeToString(pol[:]),
		ValidUntil: until, VerifiedAt: b.now(), Pinned: pinned,
		FirstUse: b.cfg.Governance == nil && len(b.cfg.Expectations.Measurements) == 0,
	}
	return nil
}

// connect verifies the backend and returns a client that holds it to the
// pins, with a description of them.
func (b *backend) connect(ctx context.Context) (*client.Client, string, error) {
	if b.cfg.Governance != nil {
		c, err := client.New(ctx, b.cfg)
		if err != nil {
			return nil, "", err
		}
		st, _ := c.Release()
		return c, fmt.Sprintf("the governance set of %d members, release statement %d %q; any code or policy that its members all sign",
			len(b.cfg.Governance.Members), st.Sequence, st.Note), nil
	}
	b.mu.Lock()
	ms, pol := b.pinMeasurements, b.pinPolicy
	b.mu.Unlock()
	if pol == nil {
		// The first verification: the rules as given, then pin what
		// they accepted.
		c, err := client.New(ctx, b.cfg)
		if err != nil {
			return nil, "", err
		}
		ms = b.cfg.Expectations.Measurements
		if len(ms) == 0 {
			ms = [][]byte{c.Identity().Measurement}
		}
		h := sha256.Sum256(c.PolicyDocument())
		pol = h[:]
		b.mu.Lock()
		b.pinMeasurements, b.pinPolicy = ms, pol
		b.mu.Unlock()
	}
	cfg := b.cfg
	cfg.Expectations.Measurements, cfg.PolicySHA256 = ms, pol
	c, err := client.New(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	hexes := make([]string, len(ms))
	for i, m := range ms {
		hexes[i] = hex.EncodeToString(m)
	}
	return c, fmt.Sprintf("measurement %s and policy sha256 %x; any other code or policy is refused",
		strings.Join(hexes, " or "), pol), nil
}

// checkListed refuses a backend whose attested policy does not list this
// portal's key under its name: it would refuse every result.
func (b *backend) checkListed(c *client.Client) error {
	pub := b.key.PublicKey()
	for _, a := range c.Policy().Authorities {
		if a.Name == b.key.Name {
			if !bytes.Equal(a.PublicKey, pub) {
				return fmt.Errorf("the backend's attested policy lists authority %q with another public key than this portal's", b.key.Name)
			}
			return nil
		}
	}
	return fmt.Errorf("the backend's attested policy does not list authority %q", b.key.Name)
}

// Status returns what the portal knows of the backend.
func (b *backend) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

func (b *backend) client() (*client.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotVerified, b.status.Problem)
	}
	return b.c, nil
}

// signResult signs d's result with the authority's key, exactly as
// `conftrace authority result` does; the returned submit sends it.
func (b *backend) signResult(d draft, now time.Time) (api.SignedResult, func(context.Context) error, error) {
	c, err := b.client()
	if err != nil {
		return api.SignedResult{}, nil, err
	}
	result := api.Negative
	if d.Positive {
		result = api.Positive
	}
	testDate, err := time.Parse(api.DateLayout, d.TestDate)
	if err != nil {
		return api.SignedResult{}, nil, fmt.Errorf("test date %q: want YYYY-MM-DD", d.TestDate)
	}
	var onset time.Time
	if d.Onset != "" {
		if onset, err = time.Parse(api.DateLayout, d.Onset); err != nil {
			return api.SignedResult{}, nil, fmt.Errorf("symptom onset %q: want YYYY-MM-DD", d.Onset)
		}
	}
	signed, err := b.key.SignResult(d.Code, result, testDate, onset, now)
	if err != nil {
		return api.SignedResult{}, nil, err
	}
	return signed, func(ctx context.Context) error { return c.SubmitResult(ctx, signed) }, nil
}

// signTrace signs a patient's trace, exactly as `conftrace authority gps`
// does, after refusing one the backend's policy would refuse; the
// returned submit sends it and returns how many fixes were stored.
func (b *backend) signTrace(tr gps.Trace, now time.Time) (func(context.Context) (int, error), error) {
	c, err := b.client()
	if err != nil {
		return nil, err
	}
	if n := c.Policy().GPS.MaxTracePoints; len(tr) > n {
		return nil, fmt.Errorf("the trace has %d fixes; the backend's policy accepts at most %d: split it or sample it more sparsely", len(tr), n)
	}
	signed, err := b.key.SignTrace(tr, now)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (int, error) { return c.SubmitTrace(ctx, signed) }, nil
}
