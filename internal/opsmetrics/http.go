package opsmetrics

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/keyrelease"
)

// outerPaths are the paths the backend serves outside the gateway, the
// only ones a metric names ("/" is the transparency page). Inner paths exist only inside Oblivious HTTP,
// so a request to one of them from outside is a 404 like any other. Key
// release's counts by status are its events: releases and refusals.
var outerPaths = []string{api.PathAttestation, api.PathKeys, api.PathGateway, api.PathHealth,
	api.PathStatistics, "/", keyrelease.NoncePath, keyrelease.ReleasePath}

// otherPath labels every path not in outerPaths, so that a client cannot
// put strings of its choosing into the exposition.
const otherPath = "other"

// outerPath returns the label of a request's path.
func outerPath(p string) string {
	if slices.Contains(outerPaths, p) {
		return p
	}
	return otherPath
}

// httpMetrics are the outer requests'.
type httpMetrics struct {
	requests *prometheus.CounterVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics() httpMetrics {
	return httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "requests_total",
			Help: "Outer HTTP requests answered, by outer path and status code. The gateway's status does not depend on the inner request.",
		}, []string{"path", "code"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_body_bytes_total",
			Help: "Bytes of outer request bodies read, by outer path (the gateway's are encapsulated and padded).",
		}, []string{"path"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "response_body_bytes_total",
			Help: "Bytes of outer response bodies written, by outer path (the gateway's are encapsulated and padded).",
		}, []string{"path"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time from an outer request's headers to the end of its answer, by outer path, as the host sees it on the wire: after the policy's answer release.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"path"}),
	}
}

func (h httpMetrics) register(reg *prometheus.Registry) {
	reg.MustRegister(h.requests, h.bytesIn, h.bytesOut, h.duration)
}

// Instrument counts and times the outer requests that next serves. It
// sees what any proxy in front of the backend sees: paths, status codes,
// body lengths and times, never the content.
func (m *Metrics) Instrument(next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		path := outerPath(r.URL.Path)
		var in int64
		if r.Body != nil {
			r.Body = &countingBody{ReadCloser: r.Body, n: &in}
		}
		cw := &countingWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		code := cw.status
		if code == 0 {
			code = http.StatusOK
		}
		m.http.requests.WithLabelValues(path, strconv.Itoa(code)).Inc()
		m.http.bytesIn.WithLabelValues(path).Add(float64(in))
		m.http.bytesOut.WithLabelValues(path).Add(float64(cw.n))
		m.http.duration.WithLabelValues(path).Observe(time.Since(start).Seconds())
	})
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n *int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	*b.n += int64(n)
	return n, err
}

// countingWriter records the status and counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's deadlines,
// which the gateway sets while it reads a body.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
