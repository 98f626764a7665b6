package enclave

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/gpsindex"
	"github.com/conftrace/conftrace/internal/store"
)

// GPS tables of the store.
const (
	tableTraces    = "traces"     // patients' trace parts by trace id and day
	tableTraceSeen = "trace_seen" // hashes of accepted trace statements
)

// gpsLimits bounds traces as the policy says, against the enclave's clock.
func (e *Enclave) gpsLimits() gps.Limits {
	return gps.Limits{MaxPoints: e.policy.GPS.MaxTracePoints, Now: e.now}
}

// SubmitTrace stores an infected patient's GPS trace that a health
// authority signed: sealed per day of its fixes, so that each day leaves
// with the retention window, and indexed once durable.
func (e *Enclave) SubmitTrace(ctx context.Context, t api.SignedTrace) (api.SubmitTraceResponse, error) {
	if err := e.checkStatement(t.Authority, t.SignedBytes(), t.Signature, t.IssuedAt, t.Nonce); err != nil {
		return api.SubmitTraceResponse{}, err
	}
	tr, err := gps.ParseBinary(t.Trace, e.gpsLimits())
	if err != nil {
		return api.SubmitTraceResponse{}, traceError(err)
	}
	if len(tr) == 0 {
		return api.SubmitTraceResponse{}, api.Errorf(api.CodeMalformed, "an empty trace")
	}
	now := e.now()
	if start := e.policy.WindowStart(now).Unix(); tr[0].Time < start {
		return api.SubmitTraceResponse{}, api.Errorf(api.CodeOutOfWindow, "the trace begins before the %d-day retention window", e.policy.RetentionDays)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	seen := sha256.Sum256(t.Signature)
	var b store.Batch
	b.MustNotExist(tableTraceSeen, seen[:16])
	b.Put(tableTraceSeen, seen[:16], calendar.DayOf(now), []byte{1})
	id := make([]byte, 16)
	rand.Read(id)
	type part struct {
		day calendar.Day
		tr  gps.Trace
	}
	var parts []part
	for d, p := range gpsindex.Days(tr) {
		wire, err := p.MarshalBinary()
		if err != nil {
			return api.SubmitTraceResponse{}, e.internal("encoding trace", err)
		}
		key := binary.BigEndian.AppendUint32(append([]byte{}, id...), uint32(d))
		if err := e.sealPutBytes(&b, d, tableTraces, key, wire); err != nil {
			return api.SubmitTraceResponse{}, e.internal("sealing trace", err)
		}
		parts = append(parts, part{d, p})
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) && !dayKeyConflict(err) {
			return api.SubmitTraceResponse{}, api.Errorf(api.CodeReplayed, "this trace statement was already submitted")
		}
		return api.SubmitTraceResponse{}, e.internal("storing trace", err)
	}
	e.noteStoredDayKeys(&b)
	for _, p := range parts {
		if err := e.gps.Add(p.day, p.tr); err != nil {
			return api.SubmitTraceResponse{}, e.internal("indexing trace", err)
		}
	}
	return api.SubmitTraceResponse{Points: len(tr)}, nil
}

// CheckTrace answers whether the device's trace came within the policy's
// distance and time thresholds of an infected patient's, with the
// episodes. The trace is neither stored nor logged, and is overwritten
// once answered.
func (e *Enclave) CheckTrace(ctx context.Context, r api.TraceCheckRequest) (api.TraceCheckResponse, error) {
	tr, err := gps.ParseBinary(r.Trace, e.gpsLimits())
	clear(r.Trace)
	if err != nil {
		return api.TraceCheckResponse{}, traceError(err)
	}
	defer clear(tr)
	params := e.policy.GPS.Params()
	matches, err := e.gps.Query(tr, params)
	if err != nil {
		return api.TraceCheckResponse{}, e.internal("querying GPS index", err)
	}
	eps := gps.Episodes(tr, matches, params)
	clear(matches)
	var resp api.TraceCheckResponse
	if last, ok := gps.LastExposure(eps, params); ok {
		resp.Exposed = true
		resp.LastExposure = time.Unix(last.Start, 0).UTC().Format(api.DateLayout)
	}
	if err := e.certifyTrace(&resp, r.CertificateNonce, eps, params); err != nil {
		clear(eps)
		return api.TraceCheckResponse{}, err
	}
	if e.policy.Detailed() {
		resp.Episodes = []api.TraceEpisode{}
		for i, ep := range eps {
			if i == api.MaxEpisodes {
				resp.Truncated = true
				break
			}
			resp.Episodes = append(resp.Episodes, api.TraceEpisode{
				Start:         ep.Start,
				End:           ep.End,
				ClosestMeters: math.Round(ep.Closest*10) / 10,
				Minutes:       math.Round(ep.Minutes*10) / 10,
			})
		}
	}
	clear(eps)
	if resp.Exposed {
		e.stats.add(statGPS, 1) // answered: statistics.go
	}
	return resp, nil
}

// TraceResponseBound returns the encoded size of the largest trace check
// answer the policy allows, so the HTTP layer can pad every answer to it.
func (e *Enclave) TraceResponseBound() int {
	resp := api.TraceCheckResponse{Exposed: true, LastExposure: "0000-00-00", Truncated: true, Certificate: largestCertificate()}
	if e.policy.Detailed() {
		resp.Episodes = make([]api.TraceEpisode, api.MaxEpisodes)
		for i := range resp.Episodes {
			resp.Episodes[i] = api.TraceEpisode{Start: math.MinInt64, End: math.MinInt64, ClosestMeters: 99999.9, Minutes: 999999.9}
		}
	}
	b, _ := json.Marshal(resp)
	return len(b) + 64
}

// traceError turns a trace decoding error into the refusal the client sees.
func traceError(err error) error {
	switch {
	case errors.Is(err, gps.ErrTooManyPoints), errors.Is(err, gps.ErrTooLarge):
		return api.Errorf(api.CodeTooLarge, "trace: %v", err)
	case errors.Is(err, gps.ErrFuture):
		return api.Errorf(api.CodeOutOfWindow, "trace: %v", err)
	default:
		return api.Errorf(api.CodeMalformed, "trace: %v", err)
	}
}

func (e *Enclave) rebuildGPS(ctx context.Context) error {
	// Records are uploads, one patient each, in key order, not by day.
	// Each day's fixes are gathered and loaded in batches, unmerged, and
	// each day is then built once by compacting: adding uploads one at a
	// time would merge every day's fixes a dozen times over. Opening,
	// decoding and loading (which sorts each batch) take most of the
	// start-up, so every CPU does them: the scan hands each record to the
	// worker of its day, so that a day is not split into more batches
	// (and generations to merge) than its size needs.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := make([]chan store.Record, runtime.GOMAXPROCS(0))
	var points, bad atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		records := make(chan store.Record, 4)
		workers[w] = records
		wg.Go(func() {
			pending := map[calendar.Day]gps.Trace{}
			load := func(d calendar.Day) {
				if err := e.gps.Load(d, pending[d]); err != nil {
					cancel(fmt.Errorf("loading the GPS fixes of day %d: %w", d, err))
				}
				clear(pending[d]) // patients' fixes: not left in freed memory
				pending[d] = pending[d][:0]
			}
			for r := range records {
				if ctx.Err() != nil {
					continue // drain: the scan stops at its next record
				}
				tr, ok := e.openStoredTrace(r)
				if !ok {
					bad.Add(1)
					continue
				}
				points.Add(int64(len(tr)))
				d := r.Day
				pending[d] = append(pending[d], tr...)
				if len(pending[d]) >= rebuildBatch {
					load(d)
				}
			}
			for d, tr := range pending {
				if len(tr) > 0 && ctx.Err() == nil {
					load(d) // which clears it
				} else {
					clear(tr) // a cancelled rebuild's fixes
				}
			}
		})
	}
	err := e.store.Scan(ctx, tableTraces, func(r store.Record) error {
		select {
		case workers[int(r.Day)%len(workers)] <- r:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	for _, records := range workers {
		close(records)
	}
	wg.Wait()
	// A loading error, or the caller's cancellation, is what stopped the
	// scan: report it rather than the scan's view of it.
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	if err != nil {
		return err
	}
	// Nothing queries the index yet: every CPU compacts.
	e.gps.CompactParallel(len(workers))
	e.log.Info("GPS index rebuilt", "points", points.Load(), "refused_records", bad.Load())
	return nil
}

// openStoredTrace opens and decodes a stored trace record; it logs and
// refuses one that does not open or decode.
func (e *Enclave) openStoredTrace(r store.Record) (gps.Trace, bool) {
	plain, err := e.keys.Open(r.Day, tableTraces, r.Key, r.Value)
	if err != nil {
		e.log.Error("stored trace does not open; ignored (tampered, swapped or replayed)", "table", tableTraces, "day", r.Day, "err", err)
		return nil, false
	}
	// Stored traces were validated on upload; time has moved on since,
	// so only their shape is checked again: "now" is the latest time gps
	// accepts (a 32-bit bound would refuse every trace after 2038).
	tr, err := gps.ParseBinary(plain, gps.Limits{MaxPoints: gps.DefaultMaxPoints, Now: func() time.Time { return time.Unix(math.MaxInt64/2, 0) }})
	clear(plain) // a patient's trace: not left in freed memory
	if err != nil {
		e.log.Error("stored trace does not decode; ignored", "day", r.Day, "err", err)
		return nil, false
	}
	return tr, true
}

// rebuildBatch is the number of a day's fixes the start-up gathers before
// loading them into the GPS index: 8 MB a day of gps.Point.
const rebuildBatch = 1 << 18

// CompactGPS rebuilds the days of the GPS index that uploads left in
// several generations, which makes checks several times faster. It runs
// beside uploads and checks (it does not take the enclave's lock); call
// it periodically. It returns how many days it rebuilt.
func (e *Enclave) CompactGPS() int {
	start := time.Now()
	n := e.gps.Compact()
	if n > 0 {
		e.log.Info("GPS index compacted", "days", n, "ms", time.Since(start).Milliseconds())
	}
	return n
}
