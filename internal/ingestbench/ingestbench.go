// Package ingestbench measures how fast a backend makes uploads durable,
// beside the floor of the same writes made by bare SQLite in the same run.
//
// It opens the enclave over the SQLite store in a directory of the
// caller's, as conftraced does (minus the HTTP and Oblivious HTTP layers,
// which other benchmarks measure, and the TEE, whose sealing key is
// random here), on a clock it moves itself. It registers Config.Uploads
// positive tests and takes their upload authorizations (not timed), then
// times Config.Clients goroutines sending every upload with its
// authorization (Enclave.Upload: decoding, indexing, queueing in the
// journal; or, with Config.Exchanges, in a phone's daily exchange, which
// also checks the report for exposure) while another goroutine makes the journal's flushes back to back: it
// moves the enclave's clock by a flush period as soon as the previous
// flush has committed, so that flushes come as fast as the store takes
// them, not as slowly as a deployment's period. The time ends when the
// last upload is durable: when the poll of its result says so.
//
// The floor then writes, with the same driver (modernc.org/sqlite), the
// same pragmas and schema as package store/sqlite, the very same rows (the
// same keys, values of the same sizes) in the same number of fsync'd
// transactions, and nothing else. The ratio of the two says what the
// enclave's work and the store's wrapping cost beyond SQLite's own.
//
// A backend behind --server flushes on its own clock, every
// store_flush_seconds of real time, so measuring it would measure its
// policy's period, not its capacity: the benchmark is in-process only.
package ingestbench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/benchreport"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store/sqlite"
	"github.com/conftrace/conftrace/policy"
)

// Defaults of the flush rule the enclave enforces: the national policy's
// (see the README), but for the hold. Flushes here come back to back, a
// few milliseconds apart, so a hold of an hour's flushes would keep the
// largest size for most of the run; 1 lets the size follow the backlog.
const (
	DefaultFlushRows    = 32
	DefaultFlushMaxRows = 32 << 11
	DefaultFlushHold    = 1
)

// Config describes a run.
type Config struct {
	// Uploads is how many uploads are sent, each by its own phone.
	Uploads int
	// Sightings is how many sightings each carries, spread over the 13
	// days before today; each phone's 14 daily keys come with them.
	Sightings int
	// Clients is how many uploads are in flight at once; 0 means twice
	// GOMAXPROCS.
	Clients int
	// Exchanges sends each upload as a phone does, in its daily exchange
	// (Enclave.Exchange), which also checks the report for exposure;
	// otherwise each is sent alone (Enclave.Upload), which is what the
	// floor compares with: the check is a cost of every phone's daily
	// exchange, uploading or not, which bench load measures.
	Exchanges bool
	// FlushRows, FlushMaxRows and FlushHold are the policy's
	// store_flush_rows, store_flush_max_rows and store_flush_hold; 0
	// means the defaults above.
	FlushRows, FlushMaxRows, FlushHold int
	// Dir holds the two databases, the measured one and the floor's.
	Dir string
	// Seed makes the reports.
	Seed uint64
	// Logger receives the enclave's log; nil discards it.
	Logger *slog.Logger
	// Profile, if set, receives a CPU profile (pprof format) of the timed
	// part.
	Profile io.Writer
}

// MaxSightingsTotal bounds Uploads × Sightings: the reports are made
// before the timing starts and held in memory (22 bytes a sighting).
const MaxSightingsTotal = 50_000_000

func (c *Config) check() error {
	if c.Clients == 0 {
		c.Clients = 2 * runtime.GOMAXPROCS(0)
	}
	if c.FlushRows == 0 && c.FlushMaxRows == 0 && c.FlushHold == 0 {
		c.FlushRows, c.FlushMaxRows, c.FlushHold = DefaultFlushRows, DefaultFlushMaxRows, DefaultFlushHold
	}
	switch {
	case c.Uploads < 1 || c.Sightings < 1:
		return fmt.Errorf("ingestbench: %d uploads of %d sightings: want at least one of one", c.Uploads, c.Sightings)
	case c.Sightings > policy.MaxSightingsPerRequest:
		return fmt.Errorf("ingestbench: %d sightings, more than one request carries (%d)", c.Sightings, policy.MaxSightingsPerRequest)
	case c.Uploads*c.Sightings > MaxSightingsTotal:
		return fmt.Errorf("ingestbench: %d uploads of %d sightings: more than %d sightings in all", c.Uploads, c.Sightings, MaxSightingsTotal)
	case c.Clients < 1 || c.Clients > 1024:
		return fmt.Errorf("ingestbench: %d clients, want 1 to 1024", c.Clients)
	case c.Dir == "":
		return errors.New("ingestbench: no directory")
	}
	return nil
}

// policyOf returns the policy the measured enclave enforces, listing lab.
func (c Config) policyOf(lab *authority.Key) (policy.Policy, error) {
	p := policy.Default()
	p.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	p.StoreFlushSeconds = 1
	p.StoreFlushRows, p.StoreFlushMaxRows, p.StoreFlushHold = c.FlushRows, c.FlushMaxRows, c.FlushHold
	p.Limits.MaxUploadSightings = max(p.Limits.MaxUploadSightings, c.Sightings)
	p.Limits.MaxCheckSightings = max(p.Limits.MaxCheckSightings, c.Sightings)
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("ingestbench: %w", err)
	}
	return p, nil
}

// Result is what a run measured.
type Result struct {
	Uploads   int `json:"uploads"`
	Sightings int `json:"sightings"`
	Clients   int `json:"clients"`
	// Via is how the uploads were sent: "upload" or "exchange".
	Via string `json:"via"`
	// FlushRows, FlushMaxRows and FlushHold are the flush rule measured.
	FlushRows    int `json:"store_flush_rows"`
	FlushMaxRows int `json:"store_flush_max_rows"`
	FlushHold    int `json:"store_flush_hold"`

	// Seconds is from the first exchange sent to the commit that made
	// the last upload durable; UploadsPerS is Uploads over it.
	Seconds     float64 `json:"seconds"`
	UploadsPerS float64 `json:"uploads_per_s"`
	// SentSeconds is from the first exchange sent to the last answered.
	SentSeconds float64 `json:"sent_seconds"`
	// FloorSeconds is bare SQLite's time for the same transactions;
	// FloorUploadsPerS is Uploads over it; Ratio is UploadsPerS over
	// FloorUploadsPerS.
	FloorSeconds     float64 `json:"floor_seconds"`
	FloorUploadsPerS float64 `json:"floor_uploads_per_s"`
	Ratio            float64 `json:"ratio"`

	// Flushes and Rows are the transactions and the 4,096-byte rows
	// written (real and filler alike: the host cannot tell them apart);
	// FlushSizes counts the flushes of each size. CommitSeconds is the
	// time spent in the store's commits, fsync included.
	Flushes       int         `json:"flushes"`
	Rows          int         `json:"rows"`
	FlushSizes    []FlushSize `json:"flush_sizes"`
	CommitSeconds float64     `json:"commit_seconds"`
	// ExchangeP50Millis and ExchangeP99Millis are the exchanges' times:
	// with nothing but memory under the enclave's lock, commits do not
	// show in them.
	ExchangeP50Millis float64 `json:"exchange_p50_ms"`
	ExchangeP99Millis float64 `json:"exchange_p99_ms"`
}

// FlushSize is how many flushes wrote Rows journal rows.
type FlushSize struct {
	Rows    int `json:"rows"`
	Flushes int `json:"flushes"`
}

// Run measures cfg.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	b, err := open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m, err := b.measure(ctx)
	if cerr := b.store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("ingestbench: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	floor, err := writeFloor(ctx, filepath.Join(cfg.Dir, "floor"), m.flushes)
	if err != nil {
		return nil, err
	}
	return summarize(cfg, m, floor), nil
}

// simClock is the enclave's clock, which the flusher moves.
type simClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *simClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// start is the simulated time the enclave starts at: early in a day, so
// that the run's flushes, a second of its time each, stay on that day.
var start = time.Date(2026, 3, 10, 0, 1, 0, 0, time.UTC)

// bench is a run in progress.
type bench struct {
	cfg   Config
	pol   policy.Policy
	clock *simClock
	store *recordingStore
	enc   *enclave.Enclave
	// The phones: their secrets, authorizations and reports.
	secrets, tokens, reports [][]byte
}

// open opens the enclave over a new store in cfg.Dir, registers the
// positive tests and makes the reports.
func open(ctx context.Context, cfg Config) (*bench, error) {
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	pol, err := cfg.policyOf(lab)
	if err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(cfg.Dir, "backend"))
	if err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	b := &bench{cfg: cfg, pol: pol, clock: &simClock{t: start}, store: &recordingStore{Store: st}}
	var key [seal.KeySize]byte
	rand.Read(key[:])
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b.enc, err = enclave.Open(ctx, enclave.Config{Policy: pol, Store: b.store, SealingKey: key, HostClock: b.clock.now, Logger: log})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	if err := b.register(ctx, lab); err != nil {
		st.Close()
		return nil, err
	}
	rng := mrand.New(mrand.NewChaCha8(benchreport.Seed(cfg.Seed, 0)))
	for range cfg.Uploads {
		r, err := benchreport.Random(rng, start, cfg.Sightings)
		if err != nil {
			st.Close()
			return nil, err
		}
		b.reports = append(b.reports, r)
	}
	return b, nil
}

// register has the lab declare a positive test for every phone, and each
// phone poll its result for its upload authorization.
func (b *bench) register(ctx context.Context, lab *authority.Key) error {
	now := b.clock.now()
	for range b.cfg.Uploads {
		secret := make([]byte, api.TestSecretSize)
		rand.Read(secret)
		res, err := lab.SignResult(api.TestCode(secret), api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
		if err != nil {
			return fmt.Errorf("ingestbench: %w", err)
		}
		if _, err := b.enc.SubmitResult(ctx, res); err != nil {
			return fmt.Errorf("ingestbench: submitting a result: %w", err)
		}
		pr, err := b.enc.PollResult(ctx, api.PollResultRequest{Secret: slices.Clone(secret)})
		if err != nil || len(pr.UploadAuthorization) == 0 {
			return fmt.Errorf("ingestbench: polling a positive result: %+v, %v", pr, err)
		}
		b.secrets, b.tokens = append(b.secrets, secret), append(b.tokens, pr.UploadAuthorization)
	}
	return nil
}

// measured is what the timed part saw.
type measured struct {
	elapsed   time.Duration
	sent      time.Duration
	commits   time.Duration
	flushes   []flush
	exchanges []time.Duration
}

// measure sends every upload while the flusher flushes, until the last is
// durable.
func (b *bench) measure(ctx context.Context) (measured, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next      atomic.Int64
		sent      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		exchanges []time.Duration
	)
	if b.cfg.Profile != nil {
		if err := pprof.StartCPUProfile(b.cfg.Profile); err != nil {
			return measured{}, fmt.Errorf("ingestbench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	b.store.record(true)
	began := time.Now()
	for range b.cfg.Clients {
		wg.Go(func() {
			var mine []time.Duration
			for i := int(next.Add(1) - 1); i < b.cfg.Uploads && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				t := time.Now()
				if err := b.upload(ctx, i); err != nil {
					cancel(err)
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			exchanges = append(exchanges, mine...)
			mu.Unlock()
		})
	}
	var elapsed time.Duration
	var flushErr error
	flusher := make(chan struct{})
	go func() {
		defer close(flusher)
		elapsed, flushErr = b.flushUntilDurable(ctx, &sent, began)
		if flushErr != nil {
			cancel(flushErr)
		}
	}()
	wg.Wait()
	answered := time.Since(began)
	sent.Store(true)
	<-flusher
	b.store.record(false)
	if err := context.Cause(ctx); err != nil {
		return measured{}, err
	}
	flushes, commits := b.store.taken()
	return measured{elapsed: elapsed, sent: answered, commits: commits, flushes: flushes, exchanges: exchanges}, nil
}

// upload sends phone i's upload, alone or as its daily exchange.
func (b *bench) upload(ctx context.Context, i int) error {
	if !b.cfg.Exchanges {
		if _, err := b.enc.Upload(ctx, api.UploadRequest{Authorization: b.tokens[i], Report: b.reports[i]}); err != nil {
			return fmt.Errorf("ingestbench: upload %d: %w", i, err)
		}
		b.reports[i] = nil
		return nil
	}
	r, err := b.enc.Exchange(ctx, api.ExchangeRequest{Flags: api.ExchangeUpload, Authorization: b.tokens[i], Report: b.reports[i]})
	switch {
	case err != nil:
		return fmt.Errorf("ingestbench: upload %d: %w", i, err)
	case r.UploadError != nil:
		return fmt.Errorf("ingestbench: upload %d refused: %v", i, r.UploadError)
	case r.Upload == nil:
		return fmt.Errorf("ingestbench: upload %d: no upload in the answer", i)
	}
	b.reports[i] = nil
	return nil
}

// flushUntilDurable makes flushes back to back, a flush period of the
// enclave's clock each, until every upload was sent and is durable; it
// returns the time from began to the commit that made the last durable.
func (b *bench) flushUntilDurable(ctx context.Context, sent *atomic.Bool, began time.Time) (time.Duration, error) {
	every := time.Duration(b.pol.StoreFlushSeconds) * time.Second
	waiting := slices.Clone(b.secrets)
	for ctx.Err() == nil {
		// Read before the flush: every upload is then queued before it.
		all := sent.Load()
		b.clock.advance(every)
		if err := b.enc.FlushDue(ctx); err != nil {
			return 0, fmt.Errorf("ingestbench: flush: %w", err)
		}
		if !all {
			continue
		}
		done := time.Since(began)
		var err error
		if waiting, err = b.notDurable(ctx, waiting); err != nil {
			return 0, err
		}
		if len(waiting) == 0 {
			return done, nil
		}
	}
	return 0, context.Cause(ctx)
}

// notDurable returns the secrets whose upload the enclave does not say
// durable.
func (b *bench) notDurable(ctx context.Context, secrets [][]byte) ([][]byte, error) {
	var out [][]byte
	for _, s := range secrets {
		pr, err := b.enc.PollResult(ctx, api.PollResultRequest{Secret: slices.Clone(s)})
		if err != nil {
			return nil, fmt.Errorf("ingestbench: poll: %w", err)
		}
		if !pr.Uploaded {
			out = append(out, s)
		}
	}
	return out, nil
}

// summarize puts the figures together.
func summarize(cfg Config, m measured, floor time.Duration) *Result {
	r := &Result{
		Uploads: cfg.Uploads, Sightings: cfg.Sightings, Clients: cfg.Clients, Via: "upload",
		FlushRows: cfg.FlushRows, FlushMaxRows: cfg.FlushMaxRows, FlushHold: cfg.FlushHold,
		Seconds: m.elapsed.Seconds(), SentSeconds: m.sent.Seconds(), FloorSeconds: floor.Seconds(), CommitSeconds: m.commits.Seconds(),
		Flushes: len(m.flushes),
	}
	if cfg.Exchanges {
		r.Via = "exchange"
	}
	r.UploadsPerS = float64(cfg.Uploads) / r.Seconds
	r.FloorUploadsPerS = float64(cfg.Uploads) / r.FloorSeconds
	r.Ratio = r.UploadsPerS / r.FloorUploadsPerS
	sizes := map[int]int{}
	for _, f := range m.flushes {
		n := f.journalRows()
		sizes[n]++
		r.Rows += n
	}
	for _, n := range slices.Sorted(func(yield func(int) bool) {
		for n := range sizes {
			if !yield(n) {
				return
			}
		}
	}) {
		r.FlushSizes = append(r.FlushSizes, FlushSize{Rows: n, Flushes: sizes[n]})
	}
	slices.Sort(m.exchanges)
	r.ExchangeP50Millis = millis(quantile(m.exchanges, 0.5))
	r.ExchangeP99Millis = millis(quantile(m.exchanges, 0.99))
	return r
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
