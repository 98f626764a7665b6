package service

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/postgres"
	"github.com/conftrace/conftrace/internal/store/sqlite"
)

// openStore opens the store that cfg names: the PostgreSQL database at
// cfg.StoreURL, or else the SQLite file in cfg.DataDir. It logs which,
// without the URL's password.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (store.Store, error) {
	if cfg.StoreURL == "" {
		st, err := sqlite.Open(ctx, cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("service: %w", err)
		}
		return st, nil
	}
	st, err := postgres.Open(ctx, cfg.StoreURL)
	if err != nil {
		return nil, fmt.Errorf("service: store %s: %w", postgres.Redacted(cfg.StoreURL), err)
	}
	log.Info("store", "postgres", postgres.Redacted(cfg.StoreURL))
	return st, nil
}
