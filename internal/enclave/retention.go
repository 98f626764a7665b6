package enclave

import (
	"context"
	"errors"
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
	// Not while an upload, which adds to the indexes without e.mu, is
	// taken (upload.go), nor while a flush, which seals without e.mu,
	// writes (flush.go).
	e.ingest.Lock()
	defer e.ingest.Unlock()
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
		dropped := e.index.Drop(d) + e.oneSided.Drop(d) + e.dropOrderDay(d)
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
	e.forgetOrderUses(first)
	return e.ensureDayKeysLocked(ctx, first, today+1, now)
}

// ensureDayKeysLocked makes sure the day keys of the days from first to
// last are stored, and stores the time mark of now with them: one write,
// of one shape, whatever the requests. A day's key is created only if none
// is stored: of replicas racing to make a day's key, one stores its own
// and the others load it, so that a day has one key. The keys this
// enclave holds as stored are stored again (a key the host deleted comes
// back); a key it holds but did not learn was stored (a write that
// failed) is stored by the next call, or replaced by the one stored. The
// caller holds e.mu.
func (e *Enclave) ensureDayKeysLocked(ctx context.Context, first, last calendar.Day, now time.Time) error {
	for d := range e.replica.stored {
		if d < first {
			delete(e.replica.stored, d)
		}
	}
	// tampered are the days whose stored key does not unwrap: no replica
	// can use it, and it is replaced.
	tampered := map[calendar.Day]bool{}
	err := e.putDayKeysLocked(ctx, first, last, tampered, true, now)
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	// A replica stored a key first. Load the stored keys, make the
	// others, until every day is stored: a round is lost only to a replica
	// that stored a key meanwhile, so the days to make shrink every
	// round. Then write the mark, once more: the replica's head (head.go)
	// tolerates one failed write, not one a round.
	for round := 0; errors.Is(err, store.ErrConflict); round++ {
		if round > int(last-first)+1 {
			return fmt.Errorf("enclave: storing day keys: %w", err)
		}
		var days []calendar.Day
		for d := first; d <= last; d++ {
			if !e.replica.stored[d] {
				days = append(days, d)
			}
		}
		if err := e.loadStoredDayKeysLocked(ctx, days, tampered); err != nil {
			return err
		}
		err = e.putDayKeysLocked(ctx, first, last, tampered, false, now)
	}
	if err != nil {
		return err
	}
	return e.putDayKeysLocked(ctx, first, last, tampered, true, now)
}

// putDayKeysLocked writes the keys of the days from first to last: those
// held as stored again, the others if none is stored (but the tampered),
// and the time mark of now if mark is set, or else only the keys not
// stored. The caller holds e.mu.
func (e *Enclave) putDayKeysLocked(ctx context.Context, first, last calendar.Day, tampered map[calendar.Day]bool, mark bool, now time.Time) error {
	var b store.Batch
	var made []calendar.Day
	for d := first; d <= last; d++ {
		stored := e.replica.stored[d]
		if stored && !mark {
			continue
		}
		wrapped, err := e.keys.DayKey(d)
		if err != nil {
			return fmt.Errorf("enclave: day key of %s: %w", d, err)
		}
		if !stored && !tampered[d] {
			b.MustNotExist(tableDayKeys, dayKeyKey(d))
		}
		b.Put(tableDayKeys, dayKeyKey(d), d, wrapped)
		made = append(made, d)
	}
	if mark {
		if err := e.putMark(ctx, &b, now); err != nil {
			return fmt.Errorf("enclave: sealing time mark: %w", err)
		}
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		return fmt.Errorf("enclave: storing day keys: %w", err)
	}
	for _, d := range made {
		e.replica.stored[d] = true
	}
	return nil
}

// loadStoredDayKeysLocked loads the stored keys of days, those that have
// one, and adds to tampered those whose key does not load. The caller
// holds e.mu.
func (e *Enclave) loadStoredDayKeysLocked(ctx context.Context, days []calendar.Day, tampered map[calendar.Day]bool) error {
	for _, d := range days {
		rec, err := e.store.Get(ctx, tableDayKeys, dayKeyKey(d))
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return fmt.Errorf("enclave: reading the day key of %s: %w", d, err)
		}
		if rec.Day != d {
			tampered[d] = true
			continue
		}
		if e.loadDayKeyLocked(rec); !e.replica.stored[d] {
			tampered[d] = true
		}
	}
	return nil
}
