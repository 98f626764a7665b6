package enclave

import (
	"context"
	"fmt"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
	"github.com/conftrace/conftrace/internal/store"
)

// rebuildIndex loads every stored upload into the match index when the
// enclave starts. A record that does not open (tampered, swapped, or of a
// forgotten day) is reported and skipped, never matched.
func (e *Enclave) rebuildIndex(ctx context.Context) error {
	var tuples, bad int
	err := e.store.Scan(ctx, tableUploads, func(r store.Record) error {
		day := r.Day
		plain, err := e.keys.Open(day, tableUploads, r.Key, r.Value)
		if err != nil {
			bad++
			e.log.Error("stored upload does not open; ignored (tampered, swapped or replayed)", "table", tableUploads, "day", r.Day, "err", err)
			return nil
		}
		ts, err := contactlog.UnmarshalBatch(plain, 1<<24)
		if err != nil {
			bad++
			e.log.Error("stored upload does not decode; ignored", "day", r.Day, "err", err)
			return nil
		}
		if err := e.index.Add(entries(ts, day)); err != nil {
			return fmt.Errorf("enclave: rebuilding index: %w", err)
		}
		tuples += len(ts)
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	e.log.Info("match index rebuilt", "tuples", tuples, "refused_records", bad, "index_bytes", e.index.MemBytes())
	return nil
}

func entries(ts []contactlog.Tuple, day calendar.Day) []matchindex.Entry {
	es := make([]matchindex.Entry, len(ts))
	for i, t := range ts {
		es[i] = matchindex.Entry{
			Key: matchindex.NewKey(t.Own, t.Heard),
			Contact: matchindex.Contact{
				Interval:    uint32(t.Interval),
				Minutes:     t.Duration,
				Attenuation: t.Attenuation,
				Day:         day,
			},
		}
	}
	return es
}
