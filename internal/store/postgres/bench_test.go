package postgres

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
)

// uploadBatch is one upload-sized write: 1,000 records of 64 bytes, as in
// the SQLite store's benchmarks.
func uploadBatch(n int) *store.Batch {
	var b store.Batch
	value := bytes.Repeat([]byte{0xa5}, 64)
	for i := range 1000 {
		b.Put("tuples", fmt.Appendf(nil, "%08d-%04d", n, i), 18362, value)
	}
	return &b
}

// BenchmarkBaselineCopy is the floor for a durable upload-sized write
// through bare pgx: 1,000 rows of 64 bytes copied into a table keyed the
// same way, in a transaction of the server's default isolation, committed.
func BenchmarkBaselineCopy(b *testing.B) {
	u := pgtest.URL(b)
	open(b, u) // sets synchronous_commit and checks fsync the same way
	cfg, err := parseConfig(u)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(b.Context(), cfg.ConnConfig)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(b.Context())
	if _, err := conn.Exec(b.Context(), `CREATE TABLE baseline (key bytea PRIMARY KEY, value bytea NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	value := bytes.Repeat([]byte{0xa5}, 64)
	rows := make([][]any, 1000)
	n := 0
	for b.Loop() {
		for i := range rows {
			rows[i] = []any{fmt.Appendf(nil, "%08d-%04d", n, i), value}
		}
		err := pgx.BeginFunc(b.Context(), conn, func(tx pgx.Tx) error {
			_, err := tx.CopyFrom(b.Context(), pgx.Identifier{"baseline"}, []string{"key", "value"}, pgx.CopyFromRows(rows))
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*1000), "ns/record")
}

func BenchmarkApplyUpload(b *testing.B) {
	s := open(b, pgtest.URL(b))
	n := 0
	for b.Loop() {
		if err := s.Apply(b.Context(), uploadBatch(n)); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*1000), "ns/record")
}

// BenchmarkBaselineQuery is the cheapest round trip through the pool and
// pgx, to compare Get against.
func BenchmarkBaselineQuery(b *testing.B) {
	s := open(b, pgtest.URL(b))
	for b.Loop() {
		var one int
		if err := s.pool.QueryRow(b.Context(), "SELECT 1").Scan(&one); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s := open(b, pgtest.URL(b))
	for n := range 20 { // 20,000 records
		if err := s.Apply(b.Context(), uploadBatch(n)); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		key := fmt.Appendf(nil, "%08d-%04d", i%20, i*7%1000)
		if _, err := s.Get(b.Context(), "tuples", key); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkScan streams a table of 20,000 records of 64 bytes, as the
// backend does at start.
func BenchmarkScan(b *testing.B) {
	s := open(b, pgtest.URL(b))
	for n := range 20 {
		if err := s.Apply(b.Context(), uploadBatch(n)); err != nil {
			b.Fatal(err)
		}
	}
	records := 0
	for b.Loop() {
		if err := s.Scan(b.Context(), "tuples", func(store.Record) error { records++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(records), "ns/record")
}
