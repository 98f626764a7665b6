package opsmetrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// storeMetrics are the store operations'. They carry the operation, never
// the table: the host sees tables too, but a table's name says what kind
// of record a request wrote, and the exposition stays free of such words.
type storeMetrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

func newStoreMetrics() storeMetrics {
	return storeMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "store", Name: "operation_duration_seconds",
			Help:    "Duration of store operations, by operation (get, scan, apply, delete_day, days); a scan's includes the work on each record.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20),
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "store", Name: "errors_total",
			Help: "Store operations that failed, by operation: not a missing record or a failed check of a batch, which are answers, not failures.",
		}, []string{"op"}),
	}
}

func (s storeMetrics) register(reg *prometheus.Registry) {
	reg.MustRegister(s.duration, s.errors)
}

// observe records an operation that started at start and ended with err.
func (s storeMetrics) observe(op string, start time.Time, err error) {
	s.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		s.errors.WithLabelValues(op).Inc()
	}
}

// Store returns st with its operations timed and its failures counted; a
// nil m returns st itself.
func (m *Metrics) Store(st store.Store) store.Store {
	if m == nil {
		return st
	}
	for _, op := range []string{"get", "scan", "apply", "delete_day", "days"} {
		// Every operation shows from the start, at zero.
		m.store.duration.WithLabelValues(op)
		m.store.errors.WithLabelValues(op)
	}
	return &measuredStore{Store: st, m: m.store}
}

// measuredStore is a store.Store whose operations are measured.
type measuredStore struct {
	store.Store
	m storeMetrics
}

func (s *measuredStore) Get(ctx context.Context, table string, key []byte) (store.Record, error) {
	start := time.Now()
	r, err := s.Store.Get(ctx, table, key)
	s.m.observe("get", start, err)
	return r, err
}

func (s *measuredStore) Scan(ctx context.Context, table string, fn func(store.Record) error) error {
	start := time.Now()
	var fnErr error
	err := s.Store.Scan(ctx, table, func(r store.Record) error {
		fnErr = fn(r)
		return fnErr
	})
	// Scan returns fn's error unchanged: that one is the caller's, not
	// the store's.
	if fnErr != nil && errors.Is(err, fnErr) {
		s.m.observe("scan", start, nil)
	} else {
		s.m.observe("scan", start, err)
	}
	return err
}

func (s *measuredStore) Apply(ctx context.Context, b *store.Batch) error {
	start := time.Now()
	err := s.Store.Apply(ctx, b)
	s.m.observe("apply", start, err)
	return err
}

func (s *measuredStore) DeleteDay(ctx context.Context, day calendar.Day) (int64, error) {
	start := time.Now()
	n, err := s.Store.DeleteDay(ctx, day)
	s.m.observe("delete_day", start, err)
	return n, err
}

func (s *measuredStore) Days(ctx context.Context) ([]calendar.Day, error) {
	start := time.Now()
	d, err := s.Store.Days(ctx)
	s.m.observe("days", start, err)
	return d, err
}
