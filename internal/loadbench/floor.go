package loadbench

import (
	"context"
	"fmt"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/ohttp"
)

// floorRequests is how many distinct encapsulated requests the floor
// opens in turn: enough that they are not all in a core's cache.
const floorRequests = 256

// floorer measures the Oblivious HTTP work alone, as the gateway does it,
// in this process: opening (decapsulating) a request of a check's padded
// size, encapsulated to a key of the gateway's KEM and suites, and
// sealing (encapsulating) an answer of a check's size.
type floorer struct {
	g    *ohttp.Gateway
	reqs [][]byte
	ans  []byte
	// done, seconds and cpu add up the slices run.
	done    int64
	seconds float64
	cpu     time.Duration
}

// newFloorer prepares the floor of requests of plain bytes and answers
// of answer bytes, with key's KEM and suites.
func newFloorer(key ohttp.KeyConfig, plain, answer int) (*floorer, error) {
	priv, err := ohttp.GenerateKey(key.KeyID, key.KEM, key.Suites...)
	if err != nil {
		return nil, fmt.Errorf("loadbench: floor: %w", err)
	}
	g, err := ohttp.NewGateway(priv)
	if err != nil {
		return nil, fmt.Errorf("loadbench: floor: %w", err)
	}
	reqs := make([][]byte, floorRequests)
	for i := range reqs {
		msg := make([]byte, plain)
		msg[0] = byte(i)
		if reqs[i], _, err = ohttp.EncapsulateRequest(priv.KeyConfig(), msg); err != nil {
			return nil, fmt.Errorf("loadbench: floor: %w", err)
		}
	}
	return &floorer{g: g, reqs: reqs, ans: make([]byte, answer)}, nil
}

// run has clients goroutines open requests and seal answers for d, and
// adds what they did to the floorer's totals. Its goroutines carry the
// profiler label part=floor, so that a CPU profile of a phase the floor
// is interleaved with can leave them out.
func (f *floorer) run(ctx context.Context, clients int, d time.Duration) error {
	var (
		done  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	cpu0 := processCPU()
	began := time.Now()
	end := began.Add(d)
	pprof.Do(ctx, pprof.Labels("part", "floor"), func(context.Context) {
		for w := range clients {
			wg.Go(func() {
				n := int64(0)
				for i := w; time.Now().Before(end); i++ {
					_, rc, err := f.g.DecapsulateRequest(f.reqs[i%len(f.reqs)])
					if err == nil {
						_, err = rc.EncapsulateResponse(f.ans)
					}
					if err != nil {
						mu.Lock()
						first = err
						mu.Unlock()
						return
					}
					n++
				}
				done.Add(n)
			})
		}
		wg.Wait()
	})
	if first != nil {
		return fmt.Errorf("loadbench: floor: %w", first)
	}
	f.seconds += time.Since(began).Seconds()
	f.cpu += processCPU() - cpu0
	f.done += done.Load()
	return nil
}

// perS returns the floor's pairs opened and sealed a second, over the
// slices run.
func (f *floorer) perS() float64 {
	if f.seconds == 0 {
		return 0
	}
	return float64(f.done) / f.seconds
}

// answerOverhead returns what encapsulating an answer adds to it, with
// key's KEM and suites.
func answerOverhead(key ohttp.KeyConfig) (int, error) {
	priv, err := ohttp.GenerateKey(key.KeyID, key.KEM, key.Suites...)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	g, err := ohttp.NewGateway(priv)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	enc, _, err := ohttp.EncapsulateRequest(priv.KeyConfig(), make([]byte, 1))
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	_, rc, err := g.DecapsulateRequest(enc)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	resp, err := rc.EncapsulateResponse(nil)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	return len(resp), nil
}
