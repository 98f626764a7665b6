// Package observerbench plays the host of a conftrace backend: the party
// that runs everything outside the TEE and sees every outer request and
// answer with its size and timing, every connection, and every byte the
// backend writes to its store and when. It runs phones of four groups
// (never tested, tested negative, tested positive and uploading, exposed to
// a positive phone) for several simulated days through a real backend,
// records exactly what the host sees of each group, and checks that the
// records are identical between the groups, not merely similar; and that
// the groups really did differ inside the TEE (uploads made durable,
// exposures told), so that the identity is not vacuous.
//
// It is tooling for conftrace bench observer and its own test; the
// measured image never imports it (its name says bench, which the trust
// boundary test forbids outside cmd/conftrace).
package observerbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// Group is what a phone is, which the host must not learn.
type Group string

// The groups, each of Config.Phones phones.
const (
	// Untested phones never register a test.
	Untested Group = "untested"
	// Negative phones register a test whose result is negative.
	Negative Group = "negative"
	// Positive phones register a test whose result is positive, and
	// upload (their users consent).
	Positive Group = "positive"
	// Exposed phones met a positive phone on the first day.
	Exposed Group = "exposed"
)

// Groups lists the groups in the order reports show them.
var Groups = []Group{Untested, Negative, Positive, Exposed}

// The backend's policy, besides policy.Default: flushes often enough that
// a simulated day has many (with and without uploads), few rows each so
// that the store stays small, and answers on the default grid, whose step
// is long beside both an exchange's work on loopback and the scheduling
// delays of a loaded machine (see DefaultTolerance).
const (
	FlushSeconds  = 1800
	FlushRows     = 8
	ReleaseMillis = 100
)

// Policy returns the policy the observed backend enforces.
func Policy() policy.Policy {
	p := policy.Default()
	p.StoreFlushSeconds, p.StoreFlushRows, p.AnswerReleaseMillis = FlushSeconds, FlushRows, ReleaseMillis
	return p
}

// DefaultTolerance is how long after a release grid point an answer may
// complete and still count as released on it. The gap is the server's
// wake-up from its sleep until the grid point, its write of the answer and
// the client's wake-up and read over loopback: 1 to 2 ms, up to 5 ms under
// -race, and once 10 ms under -race with every CPU of a two-CPU machine
// busy. A fifth of the step (20 ms) leaves twice that; an answer released
// as soon as it is ready, with requests sent at a random phase of the grid,
// lands within it only one time in five, so that a few such answers do not
// all pass.
const DefaultTolerance = ReleaseMillis * time.Millisecond / 5

// DefaultSightings is how many sightings every phone records a day.
const DefaultSightings = 12

// encounter is when, on the first day, each exposed phone meets its
// positive phone, and for how long: long and close enough to count as an
// exposure under the default risk policy.
const (
	encounterAt  = 2 * time.Hour
	encounterFor = 30 * time.Minute
)

// Times of a simulated day: sightings are heard before exchangesFrom (a
// report may hold no sighting of the future), tests are registered at
// registerAt and their results submitted at resultAt, and each phone makes
// its exchange at a random second of [exchangesFrom, exchangesTo).
const (
	sightingsBefore = 6 * time.Hour
	registerAt      = 3 * time.Hour
	resultAt        = 5 * time.Hour
	exchangesFrom   = 6 * time.Hour
	exchangesTo     = 22 * time.Hour
)

// start is the simulated time the backend starts at, midnight UTC of the
// first day.
var start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// Backend is the running backend, as the observer needs it.
type Backend struct {
	// URL is its base URL.
	URL string
	// Expectations are what a client accepts of its attestation.
	Expectations attest.Expectations
	// Authority is a health authority its policy lists.
	Authority *authority.Key
	// Maintain does what the backend does on its clock: flushes the
	// journal, expires days, rotates keys.
	Maintain func(context.Context) error
	// FlushDue makes the journal flushes that are due, alone.
	FlushDue func(context.Context) error
	// Close stops it.
	Close func() error
}

// StartFunc starts a backend keeping its state in dir (every file the
// store writes is under it), enforcing pol, on the clock now. The backend
// must do nothing on its own clock (no background flushes): the observer
// calls Maintain and FlushDue when the simulated clock says.
type StartFunc func(ctx context.Context, dir string, pol policy.Policy, now func() time.Time) (*Backend, error)

// Config describes a run.
type Config struct {
	// Days is how many simulated days the phones exchange, at least 3: a
	// positive phone learns its result on one day, uploads on the next,
	// and hears that the upload is durable on the third.
	Days int
	// Phones is how many phones each group has.
	Phones int
	// Seed makes the run's choices (exchange times, sightings, phases).
	Seed uint64
	// SightingsPerDay is how many sightings every phone records a day,
	// at least the first day's encounter's; 0 means DefaultSightings.
	SightingsPerDay int
	// Tolerance is how long after a grid point an answer may complete;
	// 0 means DefaultTolerance.
	Tolerance time.Duration
	// Dir holds the backend's state and the phones'.
	Dir string
	// Start starts the backend.
	Start StartFunc
}

// MaxDays bounds Config.Days.
const MaxDays = 60

// MaxPhones bounds Config.Phones.
const MaxPhones = 500

// encounterSightings is how many sightings the first day's encounter
// makes on each phone: one per 10-minute interval.
const encounterSightings = int(encounterFor / (10 * time.Minute))

func (cfg *Config) check() error {
	if cfg.SightingsPerDay == 0 {
		cfg.SightingsPerDay = DefaultSightings
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = DefaultTolerance
	}
	switch {
	case cfg.Days < 3 || cfg.Days > MaxDays:
		return fmt.Errorf("observerbench: %d days, want 3 to %d", cfg.Days, MaxDays)
	case cfg.Phones < 1 || cfg.Phones > MaxPhones:
		return fmt.Errorf("observerbench: %d phones a group, want 1 to %d", cfg.Phones, MaxPhones)
	case cfg.SightingsPerDay < encounterSightings || cfg.SightingsPerDay > 1000:
		return fmt.Errorf("observerbench: %d sightings a day, want %d to 1000", cfg.SightingsPerDay, encounterSightings)
	case cfg.Tolerance < 0 || cfg.Tolerance >= ReleaseMillis*time.Millisecond:
		return fmt.Errorf("observerbench: tolerance %v, want less than the %d ms grid step", cfg.Tolerance, ReleaseMillis)
	case cfg.Dir == "" || cfg.Start == nil:
		return errors.New("observerbench: a directory and a backend are required")
	}
	return nil
}

// clock is the backend's and the phones' simulated time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// phone is one phone and what it knows.
type phone struct {
	group Group
	index int
	dev   *device.Device
	c     *client.Client
	rec   *recorder
	// testDay is the day it registers a test, 0 for none.
	testDay int
	// secret is its test's secret while it polls.
	secret []byte
	// consented: its result is positive; its next exchange uploads.
	consented bool
	// uploaded: an exchange's upload was taken.
	uploaded bool
}

// run is one observation in progress.
type run struct {
	cfg     Config
	pol     policy.Policy
	clock   *clock
	b       *Backend
	dir     string // the backend's, which the host watches
	rng     *rand.Rand
	phones  []*phone
	lab     *client.Client
	labRec  *recorder
	hasher  *hasher
	last    snapshot // the backend's directory when the last watch ended
	rep     *Report
	uploads int // uploads taken since the last flush
	// nextFlush is the next flush the schedule has.
	nextFlush time.Time
}

// Run starts a backend, runs the phones through it for cfg.Days simulated
// days and returns what the host saw, with the checks' failures in
// Report.Failures. An error means the run itself failed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &run{
		cfg:    cfg,
		pol:    Policy(),
		clock:  &clock{t: start},
		dir:    filepath.Join(cfg.Dir, "backend"),
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x686f7374)),
		hasher: newHasher(),
	}
	r.nextFlush = start.Add(r.flushPeriod())
	r.rep = &Report{
		Days: cfg.Days, PhonesPerGroup: cfg.Phones, SightingsPerDay: cfg.SightingsPerDay, Seed: cfg.Seed,
		FlushSeconds: FlushSeconds, FlushRows: FlushRows, RowBytes: policy.StoreRowBytes, ReleaseMillis: ReleaseMillis,
		ToleranceMillis: millis(cfg.Tolerance),
	}
	b, err := cfg.Start(ctx, r.dir, r.pol, r.clock.now)
	if err != nil {
		return nil, err
	}
	r.b = b
	err = r.observe(ctx)
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	r.rep.summarize(cfg)
	return r.rep, nil
}

// observe runs the phones for the configured days.
func (r *run) observe(ctx context.Context) error {
	if err := r.setup(ctx); err != nil {
		return fmt.Errorf("observerbench: %w", err)
	}
	for d := 1; d <= r.cfg.Days; d++ {
		if err := r.day(ctx, d); err != nil {
			return fmt.Errorf("observerbench: day %d: %w", d, err)
		}
	}
	return nil
}

func (r *run) flushPeriod() time.Duration {
	return time.Duration(r.pol.StoreFlushSeconds) * time.Second
}

// newClient returns a client of the backend whose network r records.
func (r *run) newClient(ctx context.Context) (*client.Client, *recorder, error) {
	rec := newRecorder()
	c, err := client.New(ctx, client.Config{
		Server:       r.b.URL,
		Expectations: r.b.Expectations,
		HTTPClient:   &http.Client{Transport: rec, Timeout: time.Minute},
		Now:          r.clock.now,
	})
	return c, rec, err
}

// setup makes the phones and the lab, each with a network of its own.
func (r *run) setup(ctx context.Context) error {
	for _, g := range Groups {
		for k := range r.cfg.Phones {
			dev, err := device.Create(ctx, filepath.Join(r.cfg.Dir, "phones", fmt.Sprintf("%s-%d", g, k)),
				device.Config{Server: r.b.URL, AllowSimulated: true})
			if err != nil {
				return err
			}
			c, rec, err := r.newClient(ctx)
			if err != nil {
				return err
			}
			p := &phone{group: g, index: k, dev: dev, c: c, rec: rec}
			if g == Negative || g == Positive {
				// Tests spread over the days that leave a positive
				// phone two more: to upload, and to hear it durable.
				p.testDay = 1 + k%(r.cfg.Days-2)
			}
			r.phones = append(r.phones, p)
		}
	}
	var err error
	r.lab, r.labRec, err = r.newClient(ctx)
	return err
}

// partner returns the positive phone an exposed phone meets.
func (r *run) partner(p *phone) *phone {
	return r.phones[slices.Index(Groups, Positive)*r.cfg.Phones+p.index]
}

// event is something that happens at a simulated time.
type event struct {
	at   time.Time
	kind int
	p    *phone
}

// Kinds of events, in the order they happen at the same time: a flush is
// due before anything else that second.
const (
	evProbe = iota
	evFlush
	evResult
	evExchange
)

// day runs simulated day d: the phones' sightings and tests, the lab's
// results, every phone's exchange and every flush on the schedule.
func (r *run) day(ctx context.Context, d int) error {
	dayStart := start.Add(time.Duration(d-1) * 24 * time.Hour)
	if err := r.sightings(ctx, d, dayStart); err != nil {
		return err
	}
	var evs []event
	for ; !r.nextFlush.After(dayStart.Add(24 * time.Hour)); r.nextFlush = r.nextFlush.Add(r.flushPeriod()) {
		evs = append(evs, event{at: r.nextFlush.Add(-time.Second), kind: evProbe}, event{at: r.nextFlush, kind: evFlush})
	}
	for _, p := range r.phones {
		if p.testDay == d {
			if _, err := p.dev.RegisterTest(dayStart.Add(registerAt)); err != nil {
				return err
			}
			t, err := p.dev.Test()
			if err != nil {
				return err
			}
			p.secret = t.Secret
			evs = append(evs, event{at: dayStart.Add(resultAt), kind: evResult, p: p})
		}
		at := dayStart.Add(exchangesFrom + time.Duration(r.rng.Int64N(int64((exchangesTo-exchangesFrom)/time.Second)))*time.Second)
		evs = append(evs, event{at: at, kind: evExchange, p: p})
	}
	slices.SortStableFunc(evs, func(a, b event) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.kind - b.kind
	})
	for _, e := range evs {
		r.clock.set(e.at)
		var err error
		switch e.kind {
		case evProbe:
			err = r.probe(ctx)
		case evFlush:
			err = r.flush(ctx, d)
		case evResult:
			err = r.submitResult(ctx, e.p)
		case evExchange:
			err = r.exchange(ctx, d, e.p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sightings has every phone record the same number of sightings on day d:
// the first day's encounters, and sightings of random RPIs (phones of
// other people) for the rest, so that every report has the same length
// and request sizes compare exactly.
func (r *run) sightings(ctx context.Context, d int, dayStart time.Time) error {
	have := map[*phone]int{}
	if d == 1 {
		for _, p := range r.phones {
			if p.group != Exposed {
				continue
			}
			n, err := device.Meet(ctx, p.dev, r.partner(p).dev, dayStart.Add(encounterAt), encounterFor, 50, 50)
			if err != nil {
				return err
			}
			have[p] += n
			have[r.partner(p)] += n
		}
	}
	first := enid.IntervalOf(dayStart)
	slots := int(sightingsBefore / (10 * time.Minute))
	for _, p := range r.phones {
		if _, err := p.dev.Key(first); err != nil {
			return err
		}
		var ss []contactlog.Sighting
		for range r.cfg.SightingsPerDay - have[p] {
			var rpi enid.RPI
			for i := range rpi {
				rpi[i] = byte(r.rng.Uint32())
			}
			ss = append(ss, contactlog.Sighting{
				Heard:       rpi,
				Interval:    first + enid.Interval(r.rng.IntN(slots)),
				Minutes:     uint8(1 + r.rng.IntN(10)),
				Attenuation: uint8(40 + r.rng.IntN(40)),
			})
		}
		if err := p.dev.Log().Append(ctx, ss...); err != nil {
			return err
		}
	}
	return nil
}

// watch runs f and returns what changed in the backend's directory
// since the last watch ended: nothing but f should have changed it, and
// a change made between watches is blamed on f, which errs on the side of
// a failed check.
func (r *run) watch(f func() error) (changed []string, growth, written int64, err error) {
	before := r.last
	if before == nil {
		if before, err = r.hasher.snapshot(r.dir); err != nil {
			return nil, 0, 0, err
		}
	}
	if err := f(); err != nil {
		return nil, 0, 0, err
	}
	after, err := r.hasher.snapshot(r.dir)
	if err != nil {
		return nil, 0, 0, err
	}
	r.last = after
	changed, growth, written = before.changes(after)
	return changed, growth, written, nil
}

// probe makes the flushes due a second before a scheduled one: there must
// be none.
func (r *run) probe(ctx context.Context) error {
	changed, _, _, err := r.watch(func() error { return r.b.FlushDue(ctx) })
	if err != nil {
		return fmt.Errorf("flush a second early: %w", err)
	}
	r.rep.Probes++
	if len(changed) > 0 {
		r.rep.EarlyWrites = append(r.rep.EarlyWrites, Flush{At: r.clock.now(), Changed: changed})
	}
	return nil
}

// flush makes the flush due, then runs the rest of the backend's
// maintenance. That writes on the clock too (expiry stores the day keys
// again at every run), so it is recorded apart: a flush that wrote
// nothing must show.
func (r *run) flush(ctx context.Context, d int) error {
	now := r.clock.now()
	changed, growth, written, err := r.watch(func() error { return r.b.FlushDue(ctx) })
	if err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	r.rep.Flushes = append(r.rep.Flushes, Flush{At: now, Day: d, UploadsBefore: r.uploads,
		Changed: changed, GrowthBytes: growth, WrittenBytes: written})
	r.uploads = 0
	changed, growth, written, err = r.watch(func() error { return r.b.Maintain(ctx) })
	if err != nil {
		return fmt.Errorf("maintenance: %w", err)
	}
	r.rep.Maintenance = append(r.rep.Maintenance, Flush{At: now, Day: d, Changed: changed, GrowthBytes: growth, WrittenBytes: written})
	return nil
}

// submitResult has the lab submit p's test result.
func (r *run) submitResult(ctx context.Context, p *phone) error {
	t, err := p.dev.Test()
	if err != nil {
		return err
	}
	result := api.Negative
	if p.group == Positive {
		result = api.Positive
	}
	now := r.clock.now()
	res, err := r.b.Authority.SignResult(t.Code, result, t.RegisteredAt, time.Time{}, now)
	if err != nil {
		return err
	}
	r.labRec.begin()
	changed, growth, written, err := r.watch(func() error { return r.lab.SubmitResult(ctx, res) })
	w := r.labRec.end()
	if err != nil {
		return fmt.Errorf("submitting a result: %w", err)
	}
	r.rep.Lab = append(r.rep.Lab, LabSubmission{Result: result, At: now, Trips: w.trips, StoreChanged: changed, GrowthBytes: growth, WrittenBytes: written})
	return nil
}

// exchange has p make its daily exchange, and records what the host saw.
func (r *run) exchange(ctx context.Context, d int, p *phone) error {
	now := r.clock.now()
	report := p.dev.Report(r.pol, now)
	enc, err := report.AppendBinary(nil)
	if err != nil {
		return err
	}
	daily := client.Daily{Report: report}
	if p.secret != nil {
		daily.Secret, daily.Upload = p.secret, p.consented
	}
	// A random phase of the release grid, so that an answer not held
	// for the grid would complete anywhere in a step (see Tolerance).
	q := time.Duration(r.pol.AnswerReleaseMillis) * time.Millisecond
	if err := sleep(ctx, time.Duration(r.rng.Int64N(int64(q)))); err != nil {
		return err
	}
	var resp api.ExchangeResponse
	p.rec.begin()
	changed, _, _, err := r.watch(func() error {
		var err error
		resp, err = p.c.Exchange(ctx, daily)
		return err
	})
	w := p.rec.end()
	if err != nil {
		return fmt.Errorf("%s phone %d: exchange: %w", p.group, p.index, err)
	}
	x := Exchange{
		Group: p.group, Phone: p.index, Day: d, At: now, ReportBytes: len(enc),
		Trips: w.trips, Connections: w.conns, WireOutBytes: w.out, WireInBytes: w.in, StoreChanged: changed,
		Polled: daily.Secret != nil, Uploading: daily.Upload,
	}
	// The gateway answer that carried the exchange's answer: the one
	// accepted (a stale key's refusal, retried, comes before it).
	i := slices.IndexFunc(w.trips, func(t RoundTrip) bool {
		return t.Path == api.PathGateway && t.Status == http.StatusOK
	})
	if i < 0 {
		return fmt.Errorf("%s phone %d: the exchange was answered by no gateway request the host saw", p.group, p.index)
	}
	ans := w.trips[i]
	x.RequestBytes, x.AnswerBytes = ans.RequestBytes, ans.AnswerBytes
	x.OffsetMillis = millis(ans.Done.Sub(ans.Done.Truncate(q)))
	x.Steps = int(ans.Done.Truncate(q).Sub(ans.Sent.Add(q/2).Truncate(q)) / q)
	x.PhaseMillis = millis(ans.Sent.Sub(ans.Sent.Truncate(q)))
	r.learn(p, daily, resp, &x)
	r.rep.Exchanges = append(r.rep.Exchanges, x)
	return nil
}

// learn updates what p knows from its exchange's answer, as a phone app
// does: a negative or durable result ends its polls, a positive one has
// it upload in its next exchange.
func (r *run) learn(p *phone, daily client.Daily, resp api.ExchangeResponse, x *Exchange) {
	if daily.Upload && resp.Upload != nil && resp.UploadError == nil {
		p.uploaded, p.consented = true, false
		x.UploadTaken = true
		r.uploads++
	}
	if resp.UploadError != nil {
		x.UploadError = resp.UploadError.Code
	}
	if res := resp.Result; res != nil {
		x.Result = res.Result
		switch {
		case res.Result == api.Negative:
			p.secret = nil
		case res.Result == api.Positive && res.Uploaded:
			x.Durable = true
			p.secret = nil
		case res.Result == api.Positive && !p.uploaded:
			p.consented = true
		}
	}
	x.Exposed = resp.Exposure.Exposed
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
