package loadbench

import (
	"context"
	"fmt"
	"math"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/internal/server"
)

// loadSlice is how long the peak's closed loop runs between two slices of
// the floor, which last half as long: on a machine that other processes
// share, the load and its floor then get the same share of the CPUs, and
// the ratio of the two does not depend on when the others ran.
const loadSlice = time.Second

// warmChecks are sent before a phase, untimed: they open the connections,
// time the building of checks and say how long an answer is.
const warmChecks = 64

// measurer runs the phases.
type measurer struct {
	cfg Config
	s   sender
	b   builder
	met []metPhone // not yet used
	fl  *floorer   // made once the sizes are known
}

// takeMet returns the met phones for n checks and marks them used.
func (m *measurer) takeMet(n int) []metPhone {
	k := min(len(m.met), int(math.Ceil(m.cfg.MetFraction*float64(n))))
	met := m.met[:k]
	m.met = m.met[k:]
	return met
}

// prepare builds n checks for a phase that lasts span once they are
// built, and sends warm-up checks first: it returns the checks, the size
// of their padded plaintext, that of an encapsulated answer and how long
// it took. The checks are dated for the middle of the phase, which the
// warm-up checks' building rate foretells; it fails if that date would
// leave the gateway's window (server.DateWindow) before the phase ends.
func (m *measurer) prepare(ctx context.Context, n int, span time.Duration) (cs []check, plain, answer int, took time.Duration, err error) {
	began := time.Now()
	warm, _, err := m.b.build(ctx, warmChecks, nil, began)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	perCheck := time.Since(began) / warmChecks
	// Labelled: the connections the warm-up opens serve the phase, and
	// their goroutines keep the label of the one that opened them.
	pprof.Do(ctx, generatorLabel, func(ctx context.Context) {
		for i := range warm {
			m.s.send(ctx, &warm[i], time.Now())
		}
	})
	for i := range warm {
		if _, err := warm[i].open(); err != nil {
			return nil, 0, 0, 0, fmt.Errorf("loadbench: a warm-up check: %w", err)
		}
	}
	answer = len(warm[0].answer)
	at := time.Now().Add(time.Duration(n)*perCheck + span/2).Truncate(time.Second)
	cs, plain, err = m.b.build(ctx, n, m.takeMet(n), at)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	if now := time.Now(); now.Before(at.Add(-server.DateWindow)) || now.Add(span).After(at.Add(server.DateWindow)) {
		return nil, 0, 0, 0, fmt.Errorf("loadbench: building %d checks took %v, too far from the %v foretold for the phase's dates to stay within %v: use fewer --checks or a shorter --duration",
			n, time.Since(began).Round(time.Second), time.Duration(n)*perCheck, server.DateWindow)
	}
	return cs, plain, answer, time.Since(began), nil
}

// peak runs the closed loop over cs for the configured duration, in
// slices of about loadSlice, with a slice of the floor before each and
// after the last.
func (m *measurer) peak(ctx context.Context, cs []check) (Phase, error) {
	d, clients := m.cfg.Duration, m.cfg.Clients
	slices := max(1, int(math.Round(float64(d)/float64(loadSlice))))
	slice := d / time.Duration(slices)
	var (
		next      atomic.Int64
		elapsed   time.Duration
		cpu       time.Duration
		exhausted bool
	)
	for range slices {
		if err := m.fl.run(ctx, clients, slice/2); err != nil {
			return Phase{}, err
		}
		cpu0 := processCPU()
		e, x := m.s.closedLoop(ctx, cs, &next, clients, slice)
		cpu += processCPU() - cpu0
		elapsed += e
		if exhausted = x; exhausted || ctx.Err() != nil {
			break
		}
	}
	if err := m.fl.run(ctx, clients, slice/2); err != nil {
		return Phase{}, err
	}
	p := tally(cs, elapsed, 0)
	p.Exhausted = exhausted
	p.setCPU(cpu)
	return p, ctx.Err()
}

// openWarmup is how long an open loop runs before its checks count: the
// generator opens the connections its rate needs and the collector works
// through what the previous phase left, which a server under a steady
// load does not see. Counted, those first checks' latencies alone set the
// p99 of the whole phase.
const openWarmup = 2 * time.Second

// openWarmChecks returns how many checks an open loop at rate sends in its
// warm-up.
func openWarmChecks(rate float64) int { return int(math.Ceil(rate * openWarmup.Seconds())) }

// open runs the open loop over cs at rate. The first openWarmChecks(rate) of
// cs are the warm-up: sent, not counted.
func (m *measurer) open(ctx context.Context, cs []check, rate float64) (Phase, error) {
	w := min(openWarmChecks(rate), len(cs)-1)
	cpu0 := processCPU()
	var warmCPU time.Duration
	elapsed := m.s.openLoop(ctx, cs, rate, w, func() { warmCPU = processCPU() - cpu0 })
	cpu := processCPU() - cpu0 - warmCPU
	p := tally(cs[w:], elapsed, rate)
	p.setCPU(cpu)
	return p, ctx.Err()
}

// run runs the phases and the floor into r: the peak with the floor
// between its slices, or the open loop at Config.Rate between two halves
// of the floor; then, with Config.AtFraction, the open loop at that
// fraction of the peak.
func (m *measurer) run(ctx context.Context, r *Result) error {
	d, rate := m.cfg.Duration, m.cfg.Rate
	n, span := m.cfg.Checks, d*3/2+time.Second
	if rate > 0 {
		n, span = int(math.Ceil(rate*d.Seconds()))+openWarmChecks(rate), d+openWarmup+time.Second
	}
	cs, plain, answer, took, err := m.prepare(ctx, n, span)
	if err != nil {
		return err
	}
	r.BuildSeconds = took.Seconds()
	over, err := answerOverhead(m.b.t.key)
	if err != nil {
		return err
	}
	if m.fl, err = newFloorer(m.b.t.key, plain, answer-over); err != nil {
		return err
	}
	if m.cfg.Profile != nil {
		if err := pprof.StartCPUProfile(m.cfg.Profile); err != nil {
			return fmt.Errorf("loadbench: %w", err)
		}
	}
	var p Phase
	if rate > 0 {
		p, err = m.bracketed(ctx, cs, rate)
	} else {
		p, err = m.peak(ctx, cs)
	}
	if m.cfg.Profile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	r.Load, r.FirstError = p, p.FirstError
	r.ChecksPerS, r.P50Millis, r.P99Millis, r.Errors = p.ChecksPerS, p.P50Millis, p.P99Millis, p.Errors
	r.RequestBytes, r.AnswerBytes = len(cs[0].body), answer
	r.BytesPerCheck = r.RequestBytes + r.AnswerBytes
	r.setFloor(m.fl)
	if rate == 0 && m.cfg.AtFraction > 0 {
		at := m.cfg.AtFraction * p.ChecksPerS
		k := max(1, int(math.Ceil(at*d.Seconds()))) + openWarmChecks(at)
		cs, _, _, _, err := m.prepare(ctx, k, d+openWarmup+time.Second)
		if err != nil {
			return err
		}
		q, err := m.open(ctx, cs, at)
		if err != nil {
			return err
		}
		r.AtRate = &q
	}
	return nil
}

// bracketed runs the open loop at rate between two halves of the floor.
func (m *measurer) bracketed(ctx context.Context, cs []check, rate float64) (Phase, error) {
	half := min(m.cfg.Duration, 5*time.Second) / 2
	if err := m.fl.run(ctx, m.cfg.Clients, half); err != nil {
		return Phase{}, err
	}
	p, err := m.open(ctx, cs, rate)
	if err != nil {
		return Phase{}, err
	}
	return p, m.fl.run(ctx, m.cfg.Clients, half)
}
