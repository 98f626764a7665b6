package population

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type deviceKey struct{}

// withDevice marks ctx as carrying requests of simulated device i, so the
// meter can count its bytes.
func withDevice(ctx context.Context, i int) context.Context {
	return context.WithValue(ctx, deviceKey{}, i)
}

// meter is the phones' HTTP transport: it counts the Oblivious HTTP
// requests (POSTs) that devices make and the bytes of their bodies and
// answers, and times every request. The attestation bundle fetches (GETs)
// are not a device's daily traffic.
type meter struct {
	base           http.RoundTripper
	deviceBytes    atomic.Int64
	deviceRequests atomic.Int64

	mu        sync.Mutex
	latencies []time.Duration
}

func newMeter(workers int) *meter {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Enough idle connections for every worker, or loopback runs out of
	// ephemeral ports opening and closing connections.
	t.MaxIdleConnsPerHost = workers + 2
	return &meter{base: t}
}

func (m *meter) RoundTrip(r *http.Request) (*http.Response, error) {
	_, device := r.Context().Value(deviceKey{}).(int)
	began := time.Now()
	resp, err := m.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(began)
	m.mu.Lock()
	m.latencies = append(m.latencies, elapsed)
	m.mu.Unlock()
	if device && r.Method == http.MethodPost {
		m.deviceRequests.Add(1)
		m.deviceBytes.Add(max(0, r.ContentLength) + int64(len(body)))
	}
	resp.Body = io.NopCloser(&sliceReader{b: body})
	return resp, nil
}

type sliceReader struct{ b []byte }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

func (m *meter) timing() Timing {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := slices.Clone(m.latencies)
	slices.Sort(l)
	return Timing{LatencyP50Ms: quantileMs(l, 0.5), LatencyP90Ms: quantileMs(l, 0.9), LatencyP99Ms: quantileMs(l, 0.99), LatencyMaxMs: quantileMs(l, 1)}
}
