package enclave

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
)

// window returns the first and last day of the retention window at now.
func (e *Enclave) window(now time.Time) (first, last calendar.Day) {
	return calendar.DayOf(e.policy.WindowStart(now)), calendar.DayOf(now)
}

// Expire forgets every day older than the retention window: its key goes
// from memory and store, its sightings and keys from the indexes, its
// results from memory, its records from the store. It also makes the day
// keys of the window and of tomorrow, so that the journal, which seals
// uploads under the days they belong to, never writes a day key when a
// phone uploads. Call it at least daily.
func (e *Enclave) Expire(ctx context.Context) error {
	// Not while a flush, which seals without e.mu, writes (flush.go).
	e.journal.flushing.Lock()
	defer e.journal.flushing.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	first, today := e.window(now)
	days, err := e.store.Days(ctx)
	if err != nil {
		return fmt.Errorf("enclave: expiring: %w", err)
	}
	for _, d := range slices.Compact(slices.Sorted(slices.Values(append(days, e.keys.Days()...)))) {
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
	for k, r := range e.results {
		if r.day < first {
			delete(e.results, k)
		}
	}
	e.journal.forget(first)
	return e.ensureDayKeysLocked(ctx, first, today+1, now)
}

// ensureDayKeysLocked makes the day keys of the days from first to last
// that have none, and stores every one of them (again), with the time mark
// of now: a key made here but not stored by a failed write is stored by
// the next call. The caller holds e.mu.
func (e *Enclave) ensureDayKeysLocked(ctx context.Context, first, last calendar.Day, now time.Time) error {
	var b store.Batch
	for d := first; d <= last; d++ {
		wrapped, err := e.keys.DayKey(d)
		if err != nil {
			return fmt.Errorf("enclave: day key of %s: %w", d, err)
		}
		b.Put(tableDayKeys, binary.BigEndian.AppendUint32(nil, uint32(d)), d, wrapped)
	}
	if err := e.putMark(&b, now); err != nil {
		return fmt.Errorf("enclave: sealing time mark: %w", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		return fmt.Errorf("enclave: storing day keys: %w", err)
	}
	return nil
}
