package loadbench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/ohttp"
)

// floorRequests is how many distinct encapsulated requests the floor
// opens in turn: enough that they are not all in a core's cache.
const floorRequests = 256

// floor measures the Oblivious HTTP work alone, as the gateway does it, in
// this process: clients goroutines, for d, each opening a request of
// plain bytes encapsulated to a key of key's KEM and suites, and
// encapsulating an answer of answer bytes. It returns the pairs done a
// second.
func floor(key ohttp.KeyConfig, plain, answer, clients int, d time.Duration) (float64, error) {
	priv, err := ohttp.GenerateKey(key.KeyID, key.KEM, key.Suites...)
	if err != nil {
		return 0, fmt.Errorf("loadbench: floor: %w", err)
	}
	g, err := ohttp.NewGateway(priv)
	if err != nil {
		return 0, fmt.Errorf("loadbench: floor: %w", err)
	}
	reqs := make([][]byte, floorRequests)
	for i := range reqs {
		msg := make([]byte, plain)
		msg[0] = byte(i)
		if reqs[i], _, err = ohttp.EncapsulateRequest(priv.KeyConfig(), msg); err != nil {
			return 0, fmt.Errorf("loadbench: floor: %w", err)
		}
	}
	ans := make([]byte, answer)
	var (
		done  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	began := time.Now()
	end := began.Add(d)
	for w := range clients {
		wg.Go(func() {
			n := int64(0)
			for i := w; time.Now().Before(end); i++ {
				_, rc, err := g.DecapsulateRequest(reqs[i%len(reqs)])
				if err == nil {
					_, err = rc.EncapsulateResponse(ans)
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
	if first != nil {
		return 0, fmt.Errorf("loadbench: floor: %w", first)
	}
	return float64(done.Load()) / time.Since(began).Seconds(), nil
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
