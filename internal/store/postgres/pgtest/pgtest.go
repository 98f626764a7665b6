// Package pgtest gives each test a PostgreSQL schema of its own, so that
// tests of the PostgreSQL store, and of programs running on it, can run in
// parallel against one server without seeing each other's records.
//
// The server is named by the environment variable CONFTRACE_TEST_POSTGRES,
// a postgres:// URL whose user may create schemas. scripts/test.sh starts
// a throwaway cluster and sets it, together with
// CONFTRACE_REQUIRE_POSTGRES=1, which makes a test that finds no server
// fail rather than skip. Without either, as under a plain `go test ./...`,
// tests that need PostgreSQL skip and say how to run them:
//
//	func TestSomething(t *testing.T) {
//		s, err := postgres.Open(t.Context(), pgtest.URL(t))
//		...
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables that the tests read.
const (
	// EnvURL names the URL of the PostgreSQL server to test against.
	EnvURL = "CONFTRACE_TEST_POSTGRES"
	// EnvRequire, when not empty, makes tests fail without a server.
	EnvRequire = "CONFTRACE_REQUIRE_POSTGRES"
)

// cleanupTimeout bounds how long dropping a test's schema may take.
const cleanupTimeout = 30 * time.Second

// URL makes an empty schema on the test server, drops it (and all in it)
// when t ends, and returns the server's URL with search_path set to it. It
// skips t when no server is configured, or fails it if EnvRequire is set.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("pgtest: %s is set but %s is not: no PostgreSQL server to test against", EnvRequire, EnvURL)
		}
		t.Skipf("pgtest: no PostgreSQL server to test against; run bash scripts/test.sh, which starts a throwaway one, or set %s to a postgres:// URL whose user may create schemas", EnvURL)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %s does not parse as a URL", EnvURL)
	}
	b := make([]byte, 8)
	rand.Read(b)
	schema := pgx.Identifier{"conftrace_test_" + hex.EncodeToString(b)}.Sanitize()

	exec(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { exec(t, base, "DROP SCHEMA "+schema+" CASCADE") })

	q := u.Query()
	q.Set("search_path", schema[1:len(schema)-1]) // unquoted: the name needs no quotes
	u.RawQuery = q.Encode()
	return u.String()
}

// exec runs one statement on its own connection to connURL.
func exec(t testing.TB, connURL, sql string) {
	t.Helper()
	// Not t.Context(): it is canceled before cleanups run.
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v", EnvURL, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}
