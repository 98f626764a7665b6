package enclave

import (
	"context"
	"fmt"
	"math"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/store"
)

// rebuildIndex loads every stored upload into the match indexes when the
// enclave starts. A record that does not open (tampered, swapped, or of a
// forgotten day) is reported and skipped, never matched.
func (e *Enclave) rebuildIndex(ctx context.Context) error {
	var sightings, keys, bad int
	err := e.store.Scan(ctx, tableUploads, func(r store.Record) error {
		plain, err := e.keys.Open(r.Day, tableUploads, r.Key, r.Value)
		if err != nil {
			bad++
			e.log.Error("stored upload does not open; ignored (tampered, swapped or replayed)", "table", tableUploads, "day", r.Day, "err", err)
			return nil
		}
		// Sealed by this enclave and checked when it was uploaded: the
		// limits only bound what a corrupt record could make it allocate.
		part, err := contactlog.ParseReport(plain, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: math.MaxInt32})
		clear(plain)
		if err != nil {
			bad++
			e.log.Error("stored upload does not decode; ignored", "day", r.Day, "err", err)
			return nil
		}
		defer part.Clear()
		recip, oneSided, err := e.entries(part, r.Day)
		if err != nil {
			bad++
			e.log.Error("stored upload does not derive; ignored", "day", r.Day, "err", err)
			return nil
		}
		if err := e.index.Add(recip); err != nil {
			return fmt.Errorf("enclave: rebuilding index: %w", err)
		}
		if err := e.oneSided.Add(oneSided); err != nil {
			return fmt.Errorf("enclave: rebuilding index: %w", err)
		}
		sightings += len(part.Sightings)
		keys += len(part.Keys)
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	e.log.Info("match indexes rebuilt", "sightings", sightings, "daily_keys", keys, "refused_records", bad,
		"reciprocal_bytes", e.index.MemBytes(), "one_sided_bytes", e.oneSided.MemBytes())
	return nil
}
