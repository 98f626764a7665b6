// Package device keeps a phone's conftrace state: its daily keys, its
// contact log, the test it registered and what it trusts of its backend.
// It is what a phone app (or the conftrace device command) builds on;
// talking to the backend is package client's job, with what the device
// pinned ([Config]).
//
// A device pins its backend one of three ways: the measurements and the
// policy it saw first or was given ([Config.Measurements],
// [Config.PolicySHA256]); a governance set, whose members must all sign a
// release statement for each build and policy it accepts
// ([Config.Governance], see package release), together with the highest
// release sequence number it accepted ([Device.AcceptRelease]), so that
// upgrades need no re-pinning and rollbacks are refused; or nothing, for
// development only ([Config.AnyCode]).
//
// A device broadcasts, in every 10-minute interval, the rotating identifier
// (RPI) of that day's key and records the identifiers it hears as
// sightings. When two devices meet, each records a sighting of the other's
// RPI; an upload or an exposure check sends the device's [Device.Report]:
// its daily keys, from which the backend derives the device's own RPIs,
// and its sightings.
//
//	a, _ := device.Create(ctx, dirA, device.Config{Server: url})
//	c, _ := device.Create(ctx, dirC, device.Config{Server: url})
//	n, err := device.Meet(ctx, a, c, at, 20*time.Minute, 50, 52)
//	report, err := a.Report(pol, time.Now())
//
// State lives in one directory: the device key (which encrypts the contact
// log), the daily keys and the test state, each replaced atomically. On a
// phone the device key belongs in the platform keystore; here it is a file
// readable only by its owner, and the package does not pretend otherwise.
package device

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// Config is what a device knows about the backend it talks to. It pins
// the backend's code and policy one way ([Config.Pinned]): by
// Measurements and PolicySHA256, by Governance, or not at all with AnyCode.
type Config struct {
	// Server is the backend's base URL.
	Server string `json:"server"`
	// Measurements are the acceptable TEE measurements, lowercase hex.
	Measurements []string `json:"measurements,omitempty"`
	// PolicySHA256 is the SHA-256 of the one canonical policy accepted,
	// lowercase hex; empty accepts any policy of the pinned measurements.
	PolicySHA256 string `json:"policy_sha256,omitempty"`
	// Governance is the governance file the device pins instead of
	// measurements and policy (see package release).
	Governance string `json:"governance,omitempty"`
	// ReleaseSequence is the highest release sequence number accepted
	// under Governance: older statements are refused.
	ReleaseSequence uint64 `json:"release_sequence,omitempty"`
	// AnyCode accepts any code and policy: development only.
	AnyCode bool `json:"any_code,omitempty"`
	// AllowSimulated accepts a backend running in the simulated TEE.
	AllowSimulated bool `json:"allow_simulated,omitempty"`
	// Relay, if set, is the Oblivious HTTP relay that requests go through,
	// so that the backend never sees the device's address.
	Relay string `json:"relay,omitempty"`
}

// ErrNothingPinned is returned by [Config.Pinned] for a device that pins no
// code and does not say it accepts any: one made before devices pinned
// what they saw first.
var ErrNothingPinned = errors.New("device: the device pins no code or policy")

// Pinned reports whether the config pins its backend exactly one way, and
// the pins are well formed.
func (c Config) Pinned() error {
	ways := 0
	for _, set := range []bool{len(c.Measurements) > 0, c.Governance != "", c.AnyCode} {
		if set {
			ways++
		}
	}
	switch {
	case c.PolicySHA256 != "" && len(c.Measurements) == 0:
		return errors.New("device: a pinned policy goes with pinned measurements")
	case ways == 0:
		return ErrNothingPinned
	case ways != 1:
		return errors.New("device: pin measurements, a governance set, or any code: exactly one")
	}
	if _, err := c.Expectations(); err != nil {
		return err
	}
	if _, err := c.PolicyPin(); err != nil {
		return err
	}
	_, err := c.GovernanceSet()
	return err
}

// PolicyPin returns the SHA-256 of the pinned policy, or nil.
func (c Config) PolicyPin() ([]byte, error) {
	if c.PolicySHA256 == "" {
		return nil, nil
	}
	h, err := hex.DecodeString(c.PolicySHA256)
	if err != nil || len(h) != sha256.Size || hex.EncodeToString(h) != c.PolicySHA256 {
		return nil, fmt.Errorf("device: policy_sha256 %q: want %d bytes of lowercase hex", c.PolicySHA256, sha256.Size)
	}
	return h, nil
}

// GovernanceSet returns the pinned governance set, or nil.
func (c Config) GovernanceSet() (*release.Governance, error) {
	if c.Governance == "" {
		return nil, nil
	}
	g, err := release.ParseGovernance([]byte(c.Governance))
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	return g, nil
}

// Expectations returns what the device accepts of its backend, as
// client.Config takes them. It fails if a saved measurement is not valid.
func (c Config) Expectations() (attest.Expectations, error) {
	exp := attest.Expectations{AllowSimulated: c.AllowSimulated}
	for _, s := range c.Measurements {
		m, err := attest.ParseMeasurement(s)
		if err != nil {
			return attest.Expectations{}, fmt.Errorf("device: %w", err)
		}
		exp.Measurements = append(exp.Measurements, m)
	}
	return exp, nil
}

// Test is the state of the test a device registered.
type Test struct {
	Secret       []byte     `json:"secret"`
	Code         string     `json:"code"`
	RegisteredAt time.Time  `json:"registered_at"`
	Result       api.Result `json:"result"`
	// UploadAuthorization and ExpiresAt are set once a positive result
	// was polled; Uploaded once the upload was acknowledged.
	UploadAuthorization []byte    `json:"upload_authorization,omitempty"`
	ExpiresAt           time.Time `json:"expires_at,omitzero"`
	Uploaded            bool      `json:"uploaded,omitempty"`
}

// File names inside a device directory.
const (
	configFile = "config.json"
	keyFile    = "device.key"
	keysFile   = "daily-keys.json"
	logFile    = "contacts.log"
	testFile   = "test.json"
)

// ErrExists is returned by Create for a directory that already holds a device.
var ErrExists = errors.New("device: directory already holds a device")

// ErrNoTest is returned when a device has no registered test.
var ErrNoTest = errors.New("device: no test registered (register one first)")

// Device is one phone's state. It is safe for concurrent use.
type Device struct {
	dir string
	cfg Config
	log *contactlog.Log

	mu   sync.Mutex
	teks map[enid.Interval]enid.TEK // by rolling start
	keys map[enid.Interval]*enid.Key
	test *Test
}

// Create makes a new device in dir (created if missing). A cfg that pins
// nothing is accepted, for devices that never talk to a backend or pin
// the first they see ([Device.Pin]); one that pins in more than one way, or
// badly, is not.
func Create(ctx context.Context, dir string, cfg Config) (*Device, error) {
	if err := cfg.Pinned(); err != nil && !errors.Is(err, ErrNothingPinned) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, keyFile)); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, dir)
	}
	var key [contactlog.KeySize]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if err := writeJSON(filepath.Join(dir, configFile), cfg); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(dir, keysFile), []dailyKey{}); err != nil {
		return nil, err
	}
	// The key file is written last: its presence marks a complete device.
	if err := atomicfile.Write(filepath.Join(dir, keyFile), key[:], 0o600); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	return Open(ctx, dir)
}

// Open loads the device in dir.
func Open(ctx context.Context, dir string) (*Device, error) {
	key, err := os.ReadFile(filepath.Join(dir, keyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("device: no device in %s (run device init first)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if len(key) != contactlog.KeySize {
		return nil, fmt.Errorf("device: %s is %d bytes, want %d", keyFile, len(key), contactlog.KeySize)
	}
	d := &Device{dir: dir, teks: map[enid.Interval]enid.TEK{}, keys: map[enid.Interval]*enid.Key{}}
	if err := readJSON(filepath.Join(dir, configFile), &d.cfg); err != nil {
		return nil, err
	}
	var dks []dailyKey
	if err := readJSON(filepath.Join(dir, keysFile), &dks); err != nil {
		return nil, err
	}
	for _, dk := range dks {
		if len(dk.TEK) != len(enid.TEK{}) {
			return nil, fmt.Errorf("device: %s: a daily key is %d bytes, want 16", keysFile, len(dk.TEK))
		}
		d.teks[dk.Start] = enid.TEK(dk.TEK)
	}
	var t Test
	switch err := readJSON(filepath.Join(dir, testFile), &t); {
	case err == nil:
		d.test = &t
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	d.log, err = contactlog.Open(ctx, filepath.Join(dir, logFile), [contactlog.KeySize]byte(key), nil)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	return d, nil
}

// Dir returns the device's directory.
func (d *Device) Dir() string { return d.dir }

// Config returns what the device knows about its backend.
func (d *Device) Config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// AcceptRelease records that the device accepted a backend under release
// statement st, so that it refuses older statements from now on, across
// restarts. It is what client.Config.ReleaseAccepted calls.
func (d *Device) AcceptRelease(st release.Statement) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st.Sequence <= d.cfg.ReleaseSequence {
		return nil
	}
	cfg := d.cfg
	cfg.ReleaseSequence = st.Sequence
	if err := writeJSON(filepath.Join(d.dir, configFile), cfg); err != nil {
		return err
	}
	d.cfg = cfg
	return nil
}

// Pin pins the measurement and the policy of the backend the device sees
// first, when it pins nothing yet ([ErrNothingPinned]): trust on first use.
func (d *Device) Pin(measurement, policySHA256 []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.cfg.Pinned(); !errors.Is(err, ErrNothingPinned) {
		return errors.New("device: the device pins its backend already")
	}
	cfg := d.cfg
	cfg.Measurements = []string{hex.EncodeToString(measurement)}
	cfg.PolicySHA256 = hex.EncodeToString(policySHA256)
	if err := cfg.Pinned(); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(d.dir, configFile), cfg); err != nil {
		return err
	}
	d.cfg = cfg
	return nil
}

// Log returns the device's contact log.
func (d *Device) Log() *contactlog.Log { return d.log }

type dailyKey struct {
	Start enid.Interval `json:"rolling_start"`
	TEK   []byte        `json:"tek"`
}

// Key returns the daily key in force at interval i, making and saving a new
// one the first time a day is seen.
func (d *Device) Key(i enid.Interval) (*enid.Key, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := i.RollingStart()
	if k, ok := d.keys[start]; ok {
		return k, nil
	}
	tek, ok := d.teks[start]
	if !ok {
		tek = enid.NewTEK()
		d.teks[start] = tek
		if err := d.saveKeysLocked(); err != nil {
			delete(d.teks, start)
			return nil, err
		}
	}
	k, err := enid.NewKey(tek, start, enid.RollingPeriod)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	d.keys[start] = k
	return k, nil
}

// RPI returns the identifier the device broadcasts in interval i.
func (d *Device) RPI(i enid.Interval) (enid.RPI, error) {
	k, err := d.Key(i)
	if err != nil {
		return enid.RPI{}, err
	}
	return k.RPI(i), nil
}

// Prune forgets daily keys and sightings older than the retention
// window before now.
func (d *Device) Prune(ctx context.Context, now time.Time) error {
	if err := d.log.Prune(ctx, now); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	oldest := enid.IntervalOf(now.Add(-contactlog.DefaultRetention)).RollingStart()
	d.mu.Lock()
	defer d.mu.Unlock()
	for start := range d.teks {
		if start < oldest {
			delete(d.teks, start)
			delete(d.keys, start)
		}
	}
	return d.saveKeysLocked()
}

func (d *Device) saveKeysLocked() error {
	dks := make([]dailyKey, 0, len(d.teks))
	for s, t := range d.teks {
		dks = append(dks, dailyKey{Start: s, TEK: t[:]})
	}
	slices.SortFunc(dks, func(a, b dailyKey) int { return int(a.Start) - int(b.Start) })
	return writeJSON(filepath.Join(d.dir, keysFile), dks)
}

// Meet records an encounter between a and b that began at start and lasted
// duration: for every 10-minute interval they overlapped, each device
// records a sighting of the RPI the other broadcast, with the minutes of
// overlap in that interval; a hears b at attAB dB and b hears a at attBA dB
// (reception is asymmetric). It returns the number of sightings each device
// recorded.
func Meet(ctx context.Context, a, b *Device, start time.Time, duration time.Duration, attAB, attBA uint8) (int, error) {
	if duration <= 0 {
		return 0, errors.New("device: an encounter needs a positive duration")
	}
	if a == b || a.dir == b.dir {
		return 0, errors.New("device: a device cannot meet itself")
	}
	var sa, sb []contactlog.Sighting
	end := start.Add(duration)
	for t := start; t.Before(end); {
		i := enid.IntervalOf(t)
		next := (i + 1).Time()
		if next.After(end) {
			next = end
		}
		minutes := int(next.Sub(t).Round(time.Minute) / time.Minute)
		t = next
		if minutes == 0 {
			continue
		}
		ra, err := a.RPI(i)
		if err != nil {
			return 0, err
		}
		rb, err := b.RPI(i)
		if err != nil {
			return 0, err
		}
		sa = append(sa, contactlog.Sighting{Heard: rb, Interval: i, Minutes: uint8(minutes), Attenuation: attAB})
		sb = append(sb, contactlog.Sighting{Heard: ra, Interval: i, Minutes: uint8(minutes), Attenuation: attBA})
	}
	if err := a.log.Append(ctx, sa...); err != nil {
		return 0, fmt.Errorf("device: %w", err)
	}
	if err := b.log.Append(ctx, sb...); err != nil {
		return 0, fmt.Errorf("device: %w", err)
	}
	return len(sa), nil
}

// Hear records a sighting of an RPI broadcast by a device outside this
// system (a GAEN phone, say): heard at time at, for minutes (1 to
// contactlog.MaxMinutes), at attenuation dB. The device makes its daily key
// for that time if it has none, since its report must cover the sighting.
func (d *Device) Hear(ctx context.Context, rpi enid.RPI, at time.Time, minutes int, attenuation uint8) error {
	if minutes < 1 || minutes > contactlog.MaxMinutes {
		return fmt.Errorf("device: a sighting of %d minutes, want 1 to %d", minutes, contactlog.MaxMinutes)
	}
	i := enid.IntervalOf(at)
	if _, err := d.Key(i); err != nil {
		return err
	}
	if err := d.log.Append(ctx, contactlog.Sighting{Heard: rpi, Interval: i, Minutes: uint8(minutes), Attenuation: attenuation}); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	return nil
}

// Keys returns the device's daily keys valid during [from, to), in the
// form the backend takes them.
func (d *Device) Keys(from, to enid.Interval) []contactlog.DailyKey {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ks []contactlog.DailyKey
	for start, tek := range d.teks {
		k := contactlog.DailyKey{TEK: tek, Start: start, Period: enid.RollingPeriod}
		if k.End() > from && k.Start < to {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, func(a, b contactlog.DailyKey) int { return cmp.Compare(a.Start, b.Start) })
	return ks
}

// Report returns what an upload or an exposure check sends at now under
// p: the device's daily keys and sightings of p's retention window. The
// backend counts the window in whole UTC days and refuses an upload that
// reaches further back.
//
// A sighting longer than the policy allows is sent as that long: the
// backend would count no more, and would refuse the whole report for it.
func (d *Device) Report(p policy.Policy, now time.Time) contactlog.Report {
	from, to := enid.IntervalOf(p.WindowStart(now)), enid.IntervalOf(now)+1
	r := contactlog.Report{Keys: d.Keys(from, to), Sightings: d.log.Sightings(from, to)}
	longest := uint8(min(max(p.Limits.MaxSightingMinutes, 1), contactlog.MaxMinutes))
	for i := range r.Sightings {
		r.Sightings[i].Minutes = min(r.Sightings[i].Minutes, longest)
	}
	return r
}

// RegisterTest makes a new test secret and returns the code to show the
// test site. It replaces any earlier test.
func (d *Device) RegisterTest(now time.Time) (string, error) {
	secret := make([]byte, api.TestSecretSize)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("device: %w", err)
	}
	t := Test{Secret: secret, Code: api.TestCode(secret), RegisteredAt: now.UTC(), Result: api.Pending}
	if err := d.SaveTest(t); err != nil {
		return "", err
	}
	return t.Code, nil
}

// Test returns the registered test.
func (d *Device) Test() (Test, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.test == nil {
		return Test{}, ErrNoTest
	}
	return *d.test, nil
}

// RecordPoll records the answer to a result poll in the test's state and
// returns the new state.
func (d *Device) RecordPoll(resp api.PollResultResponse) (Test, error) {
	t, err := d.Test()
	if err != nil {
		return t, err
	}
	t.Result = resp.Result
	// The backend stops returning the authorization once it is used or
	// expired; keep the one saved so that the state still records it.
	if resp.UploadAuthorization != nil {
		t.UploadAuthorization = resp.UploadAuthorization
	}
	if resp.ExpiresAt != 0 {
		t.ExpiresAt = time.Unix(resp.ExpiresAt, 0).UTC()
	}
	// The backend says whether the upload is durable; an upload it lost
	// (it stopped before writing it) is to be made again, with the
	// authorization it hands out anew.
	t.Uploaded = resp.Uploaded
	return t, d.SaveTest(t)
}

// SaveTest records the test's new state.
func (d *Device) SaveTest(t Test) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := writeJSON(filepath.Join(d.dir, testFile), t); err != nil {
		return err
	}
	d.test = &t
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("device: encoding %s: %w", filepath.Base(path), err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("device: writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("device: %s: %w", filepath.Base(path), err)
	}
	return nil
}
