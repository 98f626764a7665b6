// Package opsmetrics is what conftraced tells its operator in Prometheus
// format (conftraced --metrics-listen): only what the host can see anyway,
// or what the attested policy and bundle publish.
//
// The backend runs on the operator's host, which sees every connection,
// every byte in and out and when, every store operation and its timing,
// and the enclave's memory at page granularity. What the host must not
// learn is what a phone's request was: an upload, an exposure check, a
// poll, a decoy, and what it was answered. So the metrics are of the outer
// layer and the host's own resources only:
//
//   - outer requests, by outer path (the attestation bundle, the OHTTP key
//     configurations, the gateway, health, the public statistics, the
//     transparency page, key release; any other path counts as "other") and status code; their body bytes in and out; their
//     latency from the handler's start to its end, which the host measures
//     itself on the wire, after the policy's answer release
//     (policy.AnswerReleaseMillis) has held the answer;
//   - store operations (get, scan, apply, delete_day, days): their latency
//     and failures, which the host sees in its database or file system;
//   - the size of the match indexes, coarsened in time and size (see
//     SetIndexEntries);
//   - the replica's state: its TEE kind and store kind, and the validity of
//     the attestation bundle it serves, which phones download.
//
// There is nothing by inner path, inner status or answer: a counter of
// uploads or of exposed answers would tell the host which requests were
// which, the very thing Oblivious HTTP, padding and the journal hide. The
// outer status code of the gateway does not depend on the inner request
// (internal/server answers every request it can decapsulate with 200 and
// puts the inner status inside the encrypted answer), so counting it leaks
// nothing. The Go runtime's and the process's collectors are not
// registered either: their allocation and object counters are exact to the
// byte at every scrape, so at low traffic their increments would tell an
// upload from a check; the host sees the process's memory and CPU from
// outside anyway.
//
// Not here because it is not built: key-release events (issue 19, item 3,
// the attested release of the key-encryption key between replicas) and the
// replicas' view of each other (item 2). They are added with the code that
// makes them happen, not as counters that always read zero.
//
// A nil *Metrics is valid and measures nothing, so that callers wire it
// without conditions.
package opsmetrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conftrace/conftrace/attest"
)

// namespace prefixes every metric's name.
const namespace = "conftraced"

// Metrics holds conftraced's metrics and serves them.
type Metrics struct {
	reg          *prometheus.Registry
	http         httpMetrics
	store        storeMetrics
	indexEntries prometheus.Gauge
	info         *prometheus.GaugeVec
}

// New returns the metrics of one backend, registered in a registry of
// their own: two backends in one process (tests) do not share counters.
func New() *Metrics {
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		http:  newHTTPMetrics(),
		store: newStoreMetrics(),
		indexEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "match_index_entries",
			Help: "Entries in the match indexes, rounded down to a multiple of IndexGranule and updated only at start and at hourly maintenance.",
		}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "replica_info",
			Help: "1, labelled with the kind of TEE the backend attests and the kind of store it keeps sealed records in.",
		}, []string{"tee", "store"}),
	}
	m.reg.MustRegister(m.indexEntries, m.info)
	m.http.register(m.reg)
	m.store.register(m.reg)
	return m
}

// Handler serves the metrics in Prometheus's text exposition format.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// SetReplica records the kind of TEE the backend attests and the kind of
// store it uses ("sqlite" or "postgres"): both are in the bundle or the
// host's own configuration.
func (m *Metrics) SetReplica(tee attest.TEE, storeKind string) {
	if m == nil {
		return
	}
	m.info.Reset()
	m.info.WithLabelValues(string(tee), storeKind).Set(1)
}

// WatchBundle exposes when the attestation bundle that current returns
// was issued and until when clients accept it, read at every scrape:
// phones download the bundle, so both times are public. An operator
// alerts on a not_after that comes close, which means that the OHTTP keys
// stopped rotating. Call it once.
func (m *Metrics) WatchBundle(current func() attest.Bundle) error {
	if m == nil {
		return nil
	}
	issued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "bundle_issued_at_seconds",
		Help: "When the attestation bundle served now was issued (issued_at), in Unix seconds.",
	}, func() float64 { return float64(current().IssuedAt) })
	notAfter := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "bundle_not_after_seconds",
		Help: "Until when clients accept the attestation bundle served now (not_after), in Unix seconds.",
	}, func() float64 { return float64(current().NotAfter) })
	if err := m.reg.Register(issued); err != nil {
		return err
	}
	return m.reg.Register(notAfter)
}

// IndexGranule is the step to which SetIndexEntries rounds the index size
// down: 4096 entries are about 80 KiB of index memory, twenty pages and
// more, so the gauge is no finer than the enclave's memory, which the host
// sees page by page.
const IndexGranule = 4096

// SetIndexEntries records how many entries the match indexes hold. The
// host can infer the size from the enclave's memory anyway; the gauge
// tells no more than that, and nothing of when one upload arrived: it is
// rounded down to a multiple of IndexGranule, and the caller sets it only
// at start (the index rebuilt from the store the host holds) and at the
// hourly maintenance, when retention deletes whole days in the host's
// view, never on a request.
func (m *Metrics) SetIndexEntries(n int) {
	if m == nil {
		return
	}
	m.indexEntries.Set(float64(n - n%IndexGranule))
}
