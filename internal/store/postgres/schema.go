package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrSchemaTooNew means the database was migrated by a newer version of
// conftrace than this one; this version refuses it rather than misread it.
var ErrSchemaTooNew = errors.New("store/postgres: database schema is newer than this program")

// migrateLock is the key of the advisory lock that Open holds while it
// migrates, so that processes opening one database at once migrate it
// once. Advisory locks are per database, not per schema: processes
// migrating separate schemas of one database take turns, which costs
// little.
const migrateLock int64 = 0x636f6e6674726163 // "conftrac"

// seqLock is the key of the advisory lock that a batch with puts holds
// from its first write to its commit (see Store.Apply). Like migrateLock it
// is per database: stores in separate schemas of one database write one at
// a time.
const seqLock int64 = 0x636f6e6673657121 // "confseq!"

// migrations[i] brings the schema from version i to version i+1. Never
// edit a released migration; append a new one.
var migrations = [][]string{
	{
		// The records of every store table in one SQL table: DeleteDay is
		// one statement and a store table needs no DDL. COLLATE "C" keeps
		// the table names' index independent of the server's locale.
		`CREATE TABLE conftrace_records (
			tbl   text COLLATE "C" NOT NULL,
			key   bytea  NOT NULL,
			day   bigint NOT NULL CHECK (day BETWEEN 0 AND 4294967295),
			value bytea  NOT NULL,
			PRIMARY KEY (tbl, key)
		)`,
		// Sealed values do not compress: store them as they are.
		`ALTER TABLE conftrace_records ALTER COLUMN value SET STORAGE EXTERNAL`,
		`CREATE INDEX conftrace_records_by_day ON conftrace_records (day)`,
	},
	{
		// Sequence numbers (store.Record.Seq), from a sequence, taken by
		// a batch's puts under seqLock so that they follow the order of
		// commits. Records from before have 0.
		`CREATE SEQUENCE conftrace_seq AS bigint`,
		`ALTER TABLE conftrace_records ADD COLUMN seq bigint NOT NULL DEFAULT 0`,
		`CREATE INDEX conftrace_records_by_seq ON conftrace_records (seq)`,
	},
}

// migrate brings the schema to len(migrations), in one transaction.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store/postgres: migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var schema *string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("store/postgres: migrate: %w", err)
	}
	if schema == nil {
		return errors.New("store/postgres: no schema of the search_path exists to make the tables in (give ?search_path=NAME in the URL)")
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return fmt.Errorf("store/postgres: migrate: waiting for other processes: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS conftrace_schema_version (version integer NOT NULL)`); err != nil {
		return fmt.Errorf("store/postgres: migrate (schema %s): %w", *schema, err)
	}
	var version int
	err = tx.QueryRow(ctx, `SELECT version FROM conftrace_schema_version`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO conftrace_schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("store/postgres: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("store/postgres: migrate: reading the schema version: %w", err)
	}
	if version < 0 || version > len(migrations) {
		return fmt.Errorf("store/postgres: schema version %d, this program knows up to %d: %w", version, len(migrations), ErrSchemaTooNew)
	}
	if version == len(migrations) {
		return nil
	}
	for v := version; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("store/postgres: migration to version %d: %w", v+1, err)
			}
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE conftrace_schema_version SET version = $1`, len(migrations)); err != nil {
		return fmt.Errorf("store/postgres: migrate: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store/postgres: migrate: commit: %w", err)
	}
	return nil
}
