// Package client is the SDK a phone app or a health-authority tool uses to
// talk to a conftrace backend.
//
// [New] fetches the backend's attestation bundle and verifies it before
// anything else happens: the TEE evidence must check out, meet the caller's
// [attest.Expectations] (which code, which signer, no debug enclave, no
// simulation unless allowed) and bind the Oblivious HTTP keys and the policy
// the backend serves. Only then does the client encrypt requests, to the
// attested key, so that nothing personal ever reaches code the caller did not
// accept:
//
//	c, err := client.New(ctx, client.Config{
//		Server:       "https://ct.example.org",
//		Expectations: attest.Expectations{Measurements: [][]byte{mrenclave}},
//	})
//	res, err := c.PollResult(ctx, secret)
//	exp, err := c.CheckExposure(ctx, report) // daily keys and sightings
//
// A phone that must follow upgrades pins a governance set instead of
// measurements (Config.Governance, see package release): it then accepts
// whatever code and policy a release statement signed by every member
// admits, and never a statement older than one it accepted.
//
// A bundle is valid for a limited time, which the attested policy bounds
// (bundle_hours): the client refuses one past its not_after, issued in the
// future, or valid for longer than the policy allows. The backend publishes
// a new bundle, with new keys, halfway through the validity of the one
// before and accepts the old keys until that bundle's end; a client fetches
// the bundle again before its first request once a quarter of the validity
// has passed since it last did. So a long-lived client never finds itself
// without a valid bundle.
//
// Every request that carries personal data is an Oblivious HTTP request
// (package ohttp) whose plaintext is a padded Binary HTTP request (package
// bhttp), posted to the backend's gateway or, when Config.Relay is set, to an
// OHTTP relay run by someone else, so that the backend never learns the
// phone's address; the attestation bundle then comes through the relay too.
// [Client.Decoy] sends a request that looks the same on the wire and is
// answered and discarded, so an observer cannot tell when a phone really
// uploads.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	"github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/attest/tdx"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// Config says which backend to talk to and what to accept from it.
type Config struct {
	// Server is the backend's base URL, e.g. "https://ct.example.org".
	// With a Relay the client sends nothing to it: it only names the
	// backend (in errors).
	Server string
	// Relay, if set, is the URL of an Oblivious HTTP relay that forwards
	// to the backend's gateway, such as `conftrace relay`. Every request
	// then goes to the relay: the encapsulated requests are posted to
	// Relay itself, and the attestation bundle, at New and again whenever
	// the gateway no longer knows the attested key, is fetched from Relay
	// with api.PathAttestation appended to its path. The relay must
	// serve it; the client verifies it as it would the backend's. Had the
	// client fetched the bundle from the backend, the backend would learn
	// its address right before its next request. Without a Relay all
	// requests go to Server directly, and the backend sees the client's
	// address.
	Relay string
	// Expectations say which attested identities are acceptable. The
	// platform TCBs that each bundle's attested policy accepts (see
	// policy.TCB) are added to them: a policy can accept more SGX statuses
	// and raise, never lower, the TDX and SNP minimums.
	Expectations attest.Expectations
	// Verifiers check evidence; nil means DefaultVerifiers.
	Verifiers []attest.Verifier
	// HTTPClient sends the requests; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock the client judges the bundle's validity and trims
	// old data by; nil means time.Now. Simulations whose backend keeps
	// simulated time set it.
	Now func() time.Time
	// PolicySHA256, if not nil, is the SHA-256 of the one canonical policy
	// the client accepts, such as the one a phone saw first.
	PolicySHA256 []byte
	// Governance, if not nil, admits the backend's code and policy by
	// release statements (see package release): a bundle is accepted only
	// if it carries one that every member signed, that admits the attested
	// identity and policy, and whose sequence number is at least
	// MinReleaseSequence and at least that of any statement the client
	// accepted before. Expectations still judge the platform (debug mode,
	// TCB, simulation); their Measurements are then usually empty.
	Governance *release.Governance
	// MinReleaseSequence is the highest release sequence number accepted
	// before, by an earlier run of the phone's app for instance.
	MinReleaseSequence uint64
	// ReleaseAccepted, if set, is called with each release statement the
	// client accepts under Governance, before it uses the bundle, so that
	// the caller can remember the sequence number across runs; an error
	// refuses the bundle.
	ReleaseAccepted func(release.Statement) error
}

// ErrBundleLifetime is returned (wrapped) for a bundle valid for longer
// than the attested policy's bundle_hours allow.
var ErrBundleLifetime = errors.New("client: the bundle is valid for longer than its policy allows")

// ErrPolicyNotPinned is returned (wrapped) when the attested policy is not
// the one Config.PolicySHA256 pins.
var ErrPolicyNotPinned = errors.New("client: the backend's policy is not the pinned one")

// DefaultVerifiers returns a verifier for every kind of TEE conftrace runs
// in, checking at the current time against the pinned Intel and AMD roots.
// The simulated TEE's verifier accepts evidence only when exp allows
// simulated evidence.
func DefaultVerifiers(exp attest.Expectations) ([]attest.Verifier, error) {
	snpV, err := snp.NewVerifier(snp.VerifierOptions{})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return []attest.Verifier{
		sim.NewVerifier(sim.VerifierOptions{AllowSimulated: exp.AllowSimulated}),
		// Without collateral an SGX platform's TCB cannot be judged.
		sgx.NewVerifier(sgx.VerifierOptions{RequireCollateral: !exp.AllowUnjudgedTCB}),
		tdx.NewVerifier(tdx.VerifierOptions{}),
		snpV,
	}, nil
}

// Client talks to one attested backend. It is safe for concurrent use.
type Client struct {
	http      *http.Client
	base      string // the backend, named in errors
	bundleURL string // where the attestation bundle is fetched
	gateway   string // where encapsulated requests are posted
	exp       attest.Expectations
	verifiers []attest.Verifier
	now       func() time.Time
	policyPin []byte
	gov       *release.Governance
	accepted  func(release.Statement) error

	fetching sync.Mutex // one bundle fetch at a time

	// dateOffset is added to the clock in the date of inner requests: what
	// the gateway said its time was, the last time it refused a date as
	// stale (nanoseconds).
	dateOffset atomic.Int64

	mu        sync.RWMutex // guards what the bundle vouches for
	verified  *attest.VerifiedBundle
	keyCfg    ohttp.KeyConfig
	policy    policy.Policy
	release   *release.Statement // accepted under gov; nil without
	minSeq    uint64             // the highest release sequence accepted
	refreshAt time.Time          // when to fetch a newer bundle
}

// maxBundleSize bounds the attestation bundle a client reads: evidence with
// collateral is tens of kilobytes.
const maxBundleSize = 1 << 20

// New fetches (through the relay, if there is one) and verifies the
// backend's attestation bundle. It returns an error naming what did not
// match when the backend is not one the expectations accept.
func New(ctx context.Context, cfg Config) (*Client, error) {
	base := strings.TrimRight(cfg.Server, "/")
	if base == "" {
		return nil, errors.New("client: no server URL")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	verifiers := cfg.Verifiers
	if verifiers == nil {
		var err error
		if verifiers, err = DefaultVerifiers(cfg.Expectations); err != nil {
			return nil, err
		}
	}
	gw, bundleURL := base+api.PathGateway, base+api.PathAttestation
	if cfg.Relay != "" {
		u, err := url.Parse(cfg.Relay)
		if err != nil {
			return nil, fmt.Errorf("client: relay URL: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("client: relay URL %q: want an http or https URL", cfg.Relay)
		}
		gw, bundleURL = cfg.Relay, u.JoinPath(api.PathAttestation).String()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	c := &Client{
		http: hc, base: base, bundleURL: bundleURL, gateway: gw, exp: cfg.Expectations, verifiers: verifiers, now: now,
		policyPin: cfg.PolicySHA256, gov: cfg.Governance, accepted: cfg.ReleaseAccepted, minSeq: cfg.MinReleaseSequence,
	}
	c.fetching.Lock()
	defer c.fetching.Unlock()
	if err := c.attest(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// attest fetches and verifies the attestation bundle and adopts the keys
// and policy it vouches for. Callers hold c.fetching, so that concurrent
// requests that all need a new bundle fetch it once.
func (c *Client) attest(ctx context.Context) error {
	body, err := get(ctx, c.http, c.bundleURL, maxBundleSize)
	if err != nil {
		return fmt.Errorf("client: fetching attestation: %w", err)
	}
	var b attest.Bundle
	if err := json.Unmarshal(body, &b); err != nil {
		return fmt.Errorf("client: attestation bundle: %w", err)
	}
	// The bundle's policy says which platform TCBs to accept on top of
	// c.exp; VerifyBundle then checks that the evidence binds it. A policy
	// that does not parse adds nothing, and is refused below.
	exp := c.exp
	if e, err := policy.TCBExpectations(b.Policy, c.exp); err == nil {
		exp = e
	}
	now := c.now()
	vb, err := attest.VerifyBundle(ctx, b, now, exp, c.verifiers...)
	if err != nil {
		return fmt.Errorf("client: backend at %s is not trusted: %w", c.base, err)
	}
	p, err := policy.Parse(vb.Policy)
	if err != nil {
		return fmt.Errorf("client: attested policy: %w", err)
	}
	if vb.Lifetime() > p.BundleLifetime() {
		return fmt.Errorf("client: backend at %s is not trusted: %w: %v, and bundle_hours is %d", c.base, ErrBundleLifetime, vb.Lifetime(), p.BundleHours)
	}
	st, err := c.admit(vb)
	if err != nil {
		return fmt.Errorf("client: backend at %s is not trusted: %w", c.base, err)
	}
	kc, err := ohttp.SelectKeyConfig(vb.KeyConfigs)
	if err != nil {
		return fmt.Errorf("client: attested key configurations: %w", err)
	}
	if st != nil && c.accepted != nil {
		if err := c.accepted(*st); err != nil {
			return fmt.Errorf("client: recording release %d: %w", st.Sequence, err)
		}
	}
	c.mu.Lock()
	c.verified, c.keyCfg, c.policy = vb, kc, p
	if st != nil {
		c.release, c.minSeq = st, max(c.minSeq, st.Sequence)
	}
	c.refreshAt = refreshTime(vb, now)
	c.mu.Unlock()
	return nil
}

// admit checks the attested policy against the pinned one and, under a
// governance set, the release statement; it returns the statement accepted.
func (c *Client) admit(vb *attest.VerifiedBundle) (*release.Statement, error) {
	h := sha256.Sum256(vb.Policy)
	if c.policyPin != nil && !bytes.Equal(c.policyPin, h[:]) {
		return nil, fmt.Errorf("%w: its SHA-256 is %x, the pinned one's %x", ErrPolicyNotPinned, h, c.policyPin)
	}
	if c.gov == nil {
		return nil, nil
	}
	c.mu.RLock()
	minSeq := c.minSeq
	c.mu.RUnlock()
	return c.gov.Admit(vb.Release, vb.Identity, h, minSeq)
}

// refreshTime returns when a client that verified vb at now fetches the
// bundle again: a quarter of vb's validity later, and at its end at the
// latest. The backend publishes a new bundle every half validity, each
// valid for a whole one, so a client adopts each within a quarter of its
// validity and never holds one with less than a quarter left; and a phone
// that exchanges once a day fetches the bundle before every exchange (with
// bundle_hours up to 96), like every other phone, so that the fetch tells
// nothing about it.
func refreshTime(vb *attest.VerifiedBundle, now time.Time) time.Time {
	at := now.Add(vb.Lifetime() / 4)
	if at.After(vb.NotAfter) {
		return vb.NotAfter
	}
	return at
}

// refreshIfDue fetches a newer bundle once the one verified is due for
// it (see refreshTime). If that fails while the verified bundle is still
// valid, the client carries on with it, which is as safe as before, and
// tries again later; once it has expired, the failure is the caller's.
func (c *Client) refreshIfDue(ctx context.Context) error {
	due := func() (time.Time, *attest.VerifiedBundle, bool) {
		c.mu.RLock()
		defer c.mu.RUnlock()
		now := c.now()
		return now, c.verified, !now.Before(c.refreshAt)
	}
	if _, _, ok := due(); !ok {
		return nil
	}
	c.fetching.Lock()
	defer c.fetching.Unlock()
	now, vb, ok := due() // another request may have refreshed it
	if !ok {
		return nil
	}
	err := c.attest(ctx)
	if err == nil || !now.Before(vb.NotAfter) {
		return err
	}
	c.mu.Lock()
	if c.verified == vb {
		c.refreshAt = refreshTime(vb, now)
	}
	c.mu.Unlock()
	return nil
}

// Release returns the release statement under which the client accepted
// the backend, with Config.Governance; false without.
func (c *Client) Release() (release.Statement, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.release == nil {
		return release.Statement{}, false
	}
	return *c.release, true
}

// AttestedRelease returns the release statement file the verified bundle
// carries, as served (nil for none), whether or not Config.Governance
// judged it: for auditors, who print what the backend claims.
func (c *Client) AttestedRelease() []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return bytes.Clone(c.verified.Release)
}

// Validity returns the period in which the verified bundle may be used.
func (c *Client) Validity() (issuedAt, notAfter time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.verified.IssuedAt, c.verified.NotAfter
}

// Identity returns what the backend's evidence proved.
func (c *Client) Identity() attest.Identity {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.verified.Identity
}

// Policy returns the attested policy the backend enforces.
func (c *Client) Policy() policy.Policy {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.policy
}

// PolicyDocument returns the attested policy's canonical bytes.
func (c *Client) PolicyDocument() []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.verified.Policy
}

// SubmitResult sends a health authority's signed test result.
func (c *Client) SubmitResult(ctx context.Context, r api.SignedResult) error {
	var resp api.SubmitResultResponse
	return c.call(ctx, api.PathSubmitResult, r, &resp)
}

// PollResult asks for the result of the test registered with secret, in
// an exchange that carries no report. A phone's app polls in its daily
// exchange instead (Exchange, with its report), so that its polls look like
// every other phone's exchanges.
func (c *Client) PollResult(ctx context.Context, secret []byte) (api.PollResultResponse, error) {
	resp, err := c.Exchange(ctx, Daily{Secret: secret})
	switch {
	case err != nil:
		return api.PollResultResponse{}, err
	case resp.Result == nil:
		return api.PollResultResponse{}, errors.New("client: the backend's answer to a poll has no result")
	}
	return *resp.Result, nil
}

// Upload sends an infected user's report (its daily keys and its
// sightings of the retention window) with the upload authorization that a
// positive result poll returned, or an exposed user's with the order
// authorization of its exposure answer (n-order notifications), in an
// exchange that also checks it, and
// returns how many sightings and keys the backend took. The report is
// checked before it is sent. A refused upload is an *api.Error.
func (c *Client) Upload(ctx context.Context, authorization []byte, r contactlog.Report) (api.UploadResponse, error) {
	if len(authorization) != api.AuthorizationSize {
		return api.UploadResponse{}, fmt.Errorf("client: an upload authorization is %d bytes, got %d", api.AuthorizationSize, len(authorization))
	}
	resp, err := c.Exchange(ctx, Daily{Report: r, Upload: true, Authorization: authorization})
	switch {
	case err != nil:
		return api.UploadResponse{}, err
	case resp.UploadError != nil:
		return api.UploadResponse{}, resp.UploadError
	case resp.Upload == nil:
		return api.UploadResponse{}, errors.New("client: the backend's answer to an upload says neither accepted nor refused")
	}
	return *resp.Upload, nil
}

// CheckExposure sends the device's report (its daily keys and its
// sightings of the retention window) in an exchange and returns the
// backend's answer: whether any sighting matches an infected user's, by
// which rule, and, if the policy's answers are detailed, per day the
// minutes, attenuation and weighted risk. The backend derives the device's
// own identifiers from its keys and keeps nothing.
func (c *Client) CheckExposure(ctx context.Context, r contactlog.Report) (api.ExposureResponse, error) {
	resp, err := c.Exchange(ctx, Daily{Report: r})
	return resp.Exposure, err
}

// ImportGAEN sends a GAEN key export (the zip file a GAEN key server
// publishes) for the backend to import: if a key its attested policy lists
// signed the export, the backend matches the export's daily keys one-sided
// until its retention drops them, so that phones learn whether they met a
// positive user of that GAEN country without downloading anyone's keys.
func (c *Client) ImportGAEN(ctx context.Context, export []byte) (api.ImportResponse, error) {
	var resp api.ImportResponse
	err := c.call(ctx, api.PathImportGAEN, api.ImportRequest{Export: export}, &resp)
	return resp, err
}

// SubmitTrace sends a health authority's signed GPS trace of an infected
// patient and returns how many points the backend stored.
func (c *Client) SubmitTrace(ctx context.Context, t api.SignedTrace) (int, error) {
	var resp api.SubmitTraceResponse
	if err := c.call(ctx, api.PathSubmitTrace, t, &resp); err != nil {
		return 0, err
	}
	return resp.Points, nil
}

// ErrNoRecentFixes is returned by CheckTrace for a trace with no fix inside
// the backend's retention window.
var ErrNoRecentFixes = errors.New("client: no fix within the backend's retention window")

// CheckTrace sends the device's own GPS trace and returns whether, and
// when, it came within the policy's thresholds of an infected patient. The
// backend does not keep the trace. Fixes older than the attested policy's
// retention window cannot match anything the backend still holds, so they
// are not sent: they would only tell it more about the device.
func (c *Client) CheckTrace(ctx context.Context, tr gps.Trace) (api.TraceCheckResponse, error) {
	return c.checkTrace(ctx, tr, nil)
}

// checkTrace is CheckTrace, which asks for an exposure certificate with
// nonce if it is not nil (certificate.go). The request carries a nonce
// either way, zeros when it does not ask, so that its size does not say.
func (c *Client) checkTrace(ctx context.Context, tr gps.Trace, nonce []byte) (api.TraceCheckResponse, error) {
	if nonce == nil {
		nonce = make([]byte, api.CertificateNonceSize)
	}
	start := c.Policy().WindowStart(c.now()).Unix()
	i := 0
	for i < len(tr) && tr[i].Time < start {
		i++
	}
	tr = tr[i:]
	if len(tr) == 0 {
		return api.TraceCheckResponse{}, fmt.Errorf("%w (%d days)", ErrNoRecentFixes, c.Policy().RetentionDays)
	}
	wire, err := tr.MarshalBinary()
	if err != nil {
		return api.TraceCheckResponse{}, fmt.Errorf("client: %w", err)
	}
	// The device's trace leaves the phone only encrypted; the plaintext
	// copies made here are overwritten once sent (best effort: the JSON
	// encoder's buffers are the runtime's).
	defer clear(wire)
	var resp api.TraceCheckResponse
	err = c.call(ctx, api.PathCheckTrace, api.TraceCheckRequest{Trace: wire, CertificateNonce: nonce}, &resp)
	return resp, err
}

// decoyExtra is what an exchange carries besides its report (its version,
// flags, secret, authorization and certificate nonce) and how much longer
// its inner path is than a decoy's.
const decoyExtra = 2 + api.TestSecretSize + api.AuthorizationSize + api.CertificateNonceSize + len(api.PathExchange) - len(api.PathDecoy)

// Decoy sends a request that the backend answers and discards, with size
// bytes of filler in place of a report: a decoy of a check's report length
// has that check's size on the wire, and its answer the size of an
// exposure answer, so a phone can send decoys on the schedule it would
// upload on.
func (c *Client) Decoy(ctx context.Context, size int) error {
	if size < 0 || size > bhttp.MaxSize/2 {
		return fmt.Errorf("client: decoy size %d outside 0..%d", size, bhttp.MaxSize/2)
	}
	// As long as an exchange with a report of size bytes, whose body has a
	// header and whose path is longer: the same size on the wire. Random,
	// so that no two decoys are the same request.
	filler := make([]byte, size+decoyExtra)
	rand.Read(filler)
	var resp api.DecoyResponse
	return c.call(ctx, api.PathDecoy, api.DecoyRequest{Filler: filler}, &resp)
}

// errStaleKey reports that the gateway no longer knows the key the request
// was encrypted to (it restarted with fresh keys).
var errStaleKey = errors.New("client: the gateway does not know the attested key")

// errStaleDate reports that the gateway refused the request's date as
// outside its window, and that the client has taken the gateway's time.
var errStaleDate = errors.New("client: the gateway refused the request's date; clock corrected")

// call sends req to an inner path through the gateway, in its binary form
// if it has one (uploads and exposure checks) and as JSON otherwise, and
// decodes the answer into resp, or returns the backend's *api.Error. When
// the verified bundle is due for renewal, call first fetches and verifies a
// newer one; when the gateway no longer knows the verified key, it verifies
// the bundle served now, with the same expectations, and sends once more.
func (c *Client) call(ctx context.Context, path string, req, resp any) error {
	var (
		body        []byte
		contentType = "application/json"
		err         error
	)
	if bm, ok := req.(interface {
		encoding.BinaryMarshaler
		MediaType() string
	}); ok {
		body, err = bm.MarshalBinary()
		contentType = bm.MediaType()
	} else {
		body, err = json.Marshal(req)
	}
	if err != nil {
		return fmt.Errorf("client: encoding request: %w", err)
	}
	if err := c.refreshIfDue(ctx); err != nil {
		return err
	}
	c.mu.RLock()
	used := c.verified
	c.mu.RUnlock()
	err = c.sendDated(ctx, path, contentType, body, resp)
	if !errors.Is(err, errStaleKey) {
		return err
	}
	if err := c.refetch(ctx, used); err != nil {
		return err
	}
	return c.sendDated(ctx, path, contentType, body, resp)
}

// sendDated sends as send does and, when the gateway refuses the date
// because this device's clock is off, sends once more dated by the
// gateway's time (a new encapsulation: the gateway answers each once).
func (c *Client) sendDated(ctx context.Context, path, contentType string, body []byte, resp any) error {
	err := c.send(ctx, path, contentType, body, resp)
	if errors.Is(err, errStaleDate) {
		err = c.send(ctx, path, contentType, body, resp)
	}
	return err
}

// refetch fetches the bundle served now, after the gateway refused the key
// of bundle used, unless another request has adopted a newer one since.
func (c *Client) refetch(ctx context.Context, used *attest.VerifiedBundle) error {
	c.fetching.Lock()
	defer c.fetching.Unlock()
	c.mu.RLock()
	adopted := c.verified != used
	c.mu.RUnlock()
	if adopted {
		return nil
	}
	return c.attest(ctx)
}

func (c *Client) send(ctx context.Context, path, contentType string, body []byte, resp any) error {
	inner := &bhttp.Request{
		Method:    http.MethodPost,
		Scheme:    "https",
		Authority: api.InnerAuthority,
		Path:      path,
		// The date lets the gateway refuse replays (RFC 9458, section
		// 6.5): it answers only requests of the last few minutes.
		Header: []bhttp.Field{
			{Name: "content-type", Value: contentType},
			{Name: "date", Value: c.now().Add(time.Duration(c.dateOffset.Load())).UTC().Format(http.TimeFormat)},
		},
		Content: body,
	}
	plain, err := inner.MarshalPadded()
	if err != nil {
		return fmt.Errorf("client: %s: %w", path, err)
	}
	c.mu.RLock()
	keyCfg := c.keyCfg
	c.mu.RUnlock()
	enc, rc, err := ohttp.EncapsulateRequest(keyCfg, plain)
	if err != nil {
		return fmt.Errorf("client: %s: %w", path, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.gateway, bytes.NewReader(enc))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	hreq.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return fmt.Errorf("client: %s: %w", path, err)
	}
	defer hresp.Body.Close()
	encResp, err := io.ReadAll(io.LimitReader(hresp.Body, bhttp.MaxSize+4096))
	if err != nil {
		return fmt.Errorf("client: %s: reading response: %w", path, err)
	}
	if hresp.StatusCode == http.StatusUnprocessableEntity {
		return fmt.Errorf("%w: %s", errStaleKey, strings.TrimSpace(string(encResp)))
	}
	if hresp.StatusCode != http.StatusOK {
		return fmt.Errorf("client: %s: gateway answered %s: %s", path, hresp.Status, strings.TrimSpace(string(encResp)))
	}
	plainResp, err := rc.DecapsulateResponse(encResp)
	if err != nil {
		return fmt.Errorf("client: %s: %w", path, err)
	}
	r, err := bhttp.ParseResponse(plainResp, bhttp.MaxSize)
	if err != nil {
		return fmt.Errorf("client: %s: %w", path, err)
	}
	if r.Status != http.StatusOK {
		var apiErr api.Error
		if json.Unmarshal(r.Content, &apiErr) == nil && apiErr.Code != "" {
			if apiErr.Code == api.CodeStale && c.takeGatewayTime(r) {
				return fmt.Errorf("%w: %w", errStaleDate, &apiErr)
			}
			return &apiErr
		}
		return fmt.Errorf("client: %s: backend answered status %d", path, r.Status)
	}
	if err := json.Unmarshal(r.Content, resp); err != nil {
		return fmt.Errorf("client: %s: decoding response: %w", path, err)
	}
	return nil
}

// takeGatewayTime sets the date offset from the date header of the
// gateway's answer r, and reports whether it changed it.
func (c *Client) takeGatewayTime(r *bhttp.Response) bool {
	for _, f := range r.Header {
		if f.Name != "date" {
			continue
		}
		at, err := http.ParseTime(f.Value)
		if err != nil {
			return false
		}
		off := int64(at.Sub(c.now()))
		return c.dateOffset.Swap(off) != off
	}
	return false
}

func get(ctx context.Context, hc *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s: response larger than %d bytes", url, limit)
	}
	return body, nil
}
