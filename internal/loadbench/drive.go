package loadbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/ohttp"
)

// Phase is what one phase of load measured.
type Phase struct {
	// Rate is the open-loop rate the checks were sent at (checks/s); 0 for
	// a closed loop (each client sends its next check when the last is
	// answered).
	Rate float64 `json:"rate_checks_per_s"`
	// Sent is how many checks were sent; Errors how many of them failed
	// (a transport error, a status other than 200 outside or inside, an
	// answer that does not open or decode).
	Sent   int `json:"sent"`
	Errors int `json:"errors"`
	// Seconds is from the first check sent to the last answered;
	// ChecksPerS is the checks answered without error over it.
	Seconds    float64 `json:"seconds"`
	ChecksPerS float64 `json:"checks_per_s"`
	// P50Millis and P99Millis are the checks' latencies: from when the
	// check was due (open loop) or sent (closed loop) to its answer's
	// last byte.
	P50Millis float64 `json:"p50_ms"`
	P99Millis float64 `json:"p99_ms"`
	// Met is how many checks came from phones that met an uploader,
	// Exposed how many answers said exposed.
	Met     int `json:"met_checks"`
	Exposed int `json:"exposed_checks"`
	// Exhausted says the closed loop ran out of pre-built checks before
	// its duration (Seconds is then shorter): build more (--checks).
	Exhausted bool `json:"exhausted,omitempty"`
	// CPUSeconds is the CPU time this process (the generator, and the
	// server when started here) used over Seconds; CPUs is their ratio:
	// below GOMAXPROCS, other processes had the rest (or the phase could
	// not use it). 0 where unknown.
	CPUSeconds float64 `json:"cpu_s"`
	CPUs       float64 `json:"cpus_used"`
	// FirstError is the first failed check's error, if any.
	FirstError string `json:"first_error,omitempty"`
}

// sender posts checks to a target.
type sender struct {
	hc *http.Client
	t  target
}

// send posts c and records what came back; the answer is opened later.
func (s sender) send(ctx context.Context, c *check, from time.Time) {
	c.sent = true
	defer func() { c.latency = time.Since(from) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.t.gateway, bytes.NewReader(c.body))
	if err != nil {
		c.err = err
		return
	}
	req.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	resp, err := s.hc.Do(req)
	if err != nil {
		c.err = err
		return
	}
	defer resp.Body.Close()
	c.status = resp.StatusCode
	c.answer, c.err = io.ReadAll(io.LimitReader(resp.Body, bhttp.MaxSize+4096))
}

// closedLoop has clients goroutines send the checks from cs[next:] back
// to back until d has passed or none is left, advancing next past those
// it sent; it returns how long it took, to the last answer, and whether
// the checks ran out. Its goroutines, and the transport's they start,
// carry the profiler label part=generator.
func (s sender) closedLoop(ctx context.Context, cs []check, next *atomic.Int64, clients int, d time.Duration) (time.Duration, bool) {
	var wg sync.WaitGroup
	began := time.Now()
	end := began.Add(d)
	pprof.Do(ctx, generatorLabel, func(ctx context.Context) {
		for range clients {
			wg.Go(func() {
				for ctx.Err() == nil && time.Now().Before(end) {
					i := int(next.Add(1) - 1)
					if i >= len(cs) {
						return
					}
					s.send(ctx, &cs[i], time.Now())
				}
			})
		}
		wg.Wait()
	})
	return time.Since(began), int(next.Load()) > len(cs)
}

// generatorLabel marks the load generator's goroutines in a CPU profile:
// go tool pprof -tagignore part=generator shows the server's work alone.
var generatorLabel = pprof.Labels("part", "generator")

// openLoop sends the checks at rate a second, each when due whatever the
// previous ones' fate, so that a slow answer delays none of the next
// (latencies count from when a check was due). The first warm checks are
// a warm-up: when the next is due, openLoop calls warmed, and it returns
// the time from then to the last answer.
func (s sender) openLoop(ctx context.Context, cs []check, rate float64, warm int, warmed func()) time.Duration {
	var wg sync.WaitGroup
	began := time.Now()
	timed := began
	pprof.Do(ctx, generatorLabel, func(ctx context.Context) {
		for i := range cs {
			due := began.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
				case <-t.C:
				}
			}
			if ctx.Err() != nil {
				break
			}
			if i == warm {
				timed = time.Now()
				warmed()
			}
			wg.Go(func() { s.send(ctx, &cs[i], due) })
		}
		wg.Wait()
	})
	return time.Since(timed)
}

// tally opens the answers of the checks sent and sums up the phase.
func tally(cs []check, elapsed time.Duration, rate float64) Phase {
	p := Phase{Rate: rate, Seconds: elapsed.Seconds()}
	var lat []time.Duration
	for i := range cs {
		c := &cs[i]
		if !c.sent {
			continue
		}
		p.Sent++
		if c.met {
			p.Met++
		}
		lat = append(lat, c.latency)
		exposed, err := c.open()
		if err != nil {
			if p.FirstError == "" {
				p.FirstError = err.Error()
			}
			p.Errors++
			continue
		}
		if exposed {
			p.Exposed++
		}
	}
	p.ChecksPerS = float64(p.Sent-p.Errors) / p.Seconds
	slices.Sort(lat)
	p.P50Millis = millis(quantile(lat, 0.50))
	p.P99Millis = millis(quantile(lat, 0.99))
	return p
}

// setCPU records that the phase used cpu of CPU time.
func (p *Phase) setCPU(cpu time.Duration) {
	p.CPUSeconds = cpu.Seconds()
	if p.Seconds > 0 {
		p.CPUs = p.CPUSeconds / p.Seconds
	}
}

// open opens c's answer and reports whether it says exposed.
func (c *check) open() (bool, error) {
	switch {
	case c.err != nil:
		return false, c.err
	case c.status != http.StatusOK:
		return false, fmt.Errorf("loadbench: gateway answered %d: %s", c.status, bytes.TrimSpace(c.answer))
	}
	plain, err := c.rc.DecapsulateResponse(c.answer)
	if err != nil {
		return false, fmt.Errorf("loadbench: %w", err)
	}
	r, err := bhttp.ParseResponse(plain, bhttp.MaxSize)
	if err != nil {
		return false, fmt.Errorf("loadbench: %w", err)
	}
	if r.Status != http.StatusOK {
		return false, fmt.Errorf("loadbench: backend answered %d: %s", r.Status, r.Content)
	}
	var resp api.ExchangeResponse
	if err := json.Unmarshal(r.Content, &resp); err != nil {
		return false, fmt.Errorf("loadbench: %w", err)
	}
	return resp.Exposure.Exposed, nil
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
