package enclave

import (
	"context"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
)

// window returns the first and last day of the retention window at now.
func (e *Enclave) window(now time.Time) (first, last calendar.Day) {
	return calendar.DayOf(e.policy.WindowStart(now)), calendar.DayOf(now)
}

// Expire forgets every day older than the retention window: its key goes
// from memory and store, its tuples from the index, its records from the
// store. Call it at least daily.
func (e *Enclave) Expire(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	first, _ := e.window(e.now())
	days, err := e.store.Days(ctx)
	if err != nil {
		return fmt.Errorf("enclave: expiring: %w", err)
	}
	for _, d := range days {
		if d >= first {
			continue
		}
		e.keys.Forget(d)
		dropped := e.index.Drop(d) + e.oneSided.Drop(d)
		dropped += e.gps.Drop(d)
		n, err := e.store.DeleteDay(ctx, d)
		if err != nil {
			return fmt.Errorf("enclave: deleting day %d: %w", d, err)
		}
		e.log.Info("day expired", "day", d.String(), "records", n, "index_entries", dropped)
	}
	for _, d := range e.keys.Days() {
		if d < first {
			e.keys.Forget(d)
		}
	}
	return nil
}
