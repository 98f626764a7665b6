package loadbench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/internal/wirebench"
	"github.com/conftrace/conftrace/ohttp"
)

// check is one phone's daily exchange, encapsulated before the timing, and
// what sending it gave.
type check struct {
	body []byte
	rc   *ohttp.RequestContext
	met  bool

	// Set by the sender.
	status  int
	answer  []byte
	err     error
	latency time.Duration
	sent    bool
}

// target is the backend the checks go to.
type target struct {
	gateway string // URL of api.PathGateway
	key     ohttp.KeyConfig
}

// fetchTarget fetches the gateway's key configurations from base and
// picks the one a phone picks. The attestation bundle that vouches for
// them is not verified: the benchmark measures throughput, not trust.
func fetchTarget(ctx context.Context, hc *http.Client, base string) (target, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+api.PathKeys, nil)
	if err != nil {
		return target{}, fmt.Errorf("loadbench: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return target{}, fmt.Errorf("loadbench: fetching the OHTTP keys: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return target{}, fmt.Errorf("loadbench: fetching the OHTTP keys: %s, %v", resp.Status, err)
	}
	cs, err := ohttp.ParseKeyConfigs(b)
	if err != nil {
		return target{}, fmt.Errorf("loadbench: %w", err)
	}
	k, err := ohttp.SelectKeyConfig(cs)
	if err != nil {
		return target{}, fmt.Errorf("loadbench: %w", err)
	}
	return target{gateway: base + api.PathGateway, key: k}, nil
}

// builder makes the checks of a phase: each a fresh phone's (fresh daily
// keys, fresh sightings, a fresh encapsulation), the met phones' first.
type builder struct {
	t         target
	sightings int
	keys      int
}

// build returns n checks, every n/len(met)-th by a met phone
// (whose keys replace fresh ones and whose sightings of their uploader
// replace random ones), built on all CPUs, their requests dated at (which
// must be within the gateway's date window while they are sent); plain is
// the size of a check's padded Binary HTTP request.
func (b builder) build(ctx context.Context, n int, met []metPhone, at time.Time) (cs []check, plain int, err error) {
	cs = make([]check, n)
	now := time.Now()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		size  atomic.Int64
		first error
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				var m *metPhone
				if every := n / max(len(met), 1); len(met) > 0 && i%every == 0 && i/every < len(met) {
					m = &met[i/every]
				}
				p, err := b.one(&cs[i], m, now, at)
				if err != nil {
					once.Do(func() { first = err })
					return
				}
				size.Store(int64(p))
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, 0, first
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return cs, int(size.Load()), nil
}

// one builds a check into c, by met phone m if not nil, of sightings up to
// now, dated at, and returns the size of its padded plaintext.
func (b builder) one(c *check, m *metPhone, now, at time.Time) (int, error) {
	r, err := wirebench.Report(b.sightings, b.keys, now)
	if err != nil {
		return 0, err
	}
	if m != nil {
		if len(m.phone.keys) != len(r.Keys) {
			return 0, fmt.Errorf("loadbench: a met phone with %d keys, checks with %d", len(m.phone.keys), len(r.Keys))
		}
		r.Keys = m.phone.keys
		copy(r.Sightings, m.sightings)
		c.met = true
	}
	report, err := r.AppendBinary(nil)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	body, err := api.ExchangeRequest{Report: report}.MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	inner := &bhttp.Request{
		Method: http.MethodPost, Scheme: "https", Authority: api.InnerAuthority, Path: api.PathExchange,
		Header: []bhttp.Field{
			{Name: "content-type", Value: api.MediaTypeReport},
			{Name: "date", Value: at.UTC().Format(http.TimeFormat)},
		},
		Content: body,
	}
	plain, err := inner.MarshalPadded()
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	c.body, c.rc, err = ohttp.EncapsulateRequest(b.t.key, plain)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	return len(plain), nil
}
