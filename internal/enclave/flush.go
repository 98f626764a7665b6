package enclave

// The journal's flushes (journal.go says what they write and what the host
// learns from them). A flush is a group commit in three steps:
//
//  1. under e.mu, it decides its size and takes the next rows of the
//     pending records, and nothing else (planFlush);
//  2. without e.mu, it seals those rows, the filler and the time mark, and
//     commits them to the store, fsync included (writeFlush);
//  3. under e.mu again, it marks the records whose last chunk it wrote
//     durable and drops them (finishFlush).
//
// So an exchange, a poll or an upload never waits for a commit: it waits
// at most for steps 1 and 3, which touch memory only. Records queued while
// a flush commits go to the next one. Flushes are made one at a time, in
// order, under journal.flushing, which Expire takes too: a record a flush
// is sealing is never forgotten, nor its day key destroyed, under it. A
// flush that fails changes nothing: the next one takes the same rows.

import (
	"context"
	"slices"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// maxCatchUp bounds the flushes one FlushDue makes when the clock jumped
// (the simulated clock of the demo moves a day at a time).
const maxCatchUp = 24 * 60

// flushRule is the policy's rule for how many rows a flush writes: floor
// rows, or floor·2^k for a class k of at most classes, held for hold
// flushes (journal.go).
type flushRule struct {
	floor, classes, hold int
}

// ruleOf returns the flush rule of a valid policy.
func ruleOf(p policy.Policy) flushRule {
	s := flushRule{floor: p.StoreFlushRows, hold: max(p.StoreFlushHold, 1)}
	for s.floor > 0 && p.StoreFlushMaxRows > s.floor<<s.classes {
		s.classes++
	}
	return s
}

// rows returns the size of a flush of class k.
func (s flushRule) rows(k int) int { return s.floor << k }

// most returns the size of the largest flush.
func (s flushRule) most() int { return s.rows(s.classes) }

// need returns the class that pending rows need: the largest whose flush
// they fill, so that no flush above the floor carries filler of its own;
// what is left waits for the next flush.
func (s flushRule) need(pending int) int {
	k := 0
	for k < s.classes && s.rows(k+1) <= pending {
		k++
	}
	return k
}

// flushHistory is what the rule remembers of past flushes: how many were
// written, and until which count each class is held.
type flushHistory struct {
	count     uint64
	heldUntil []uint64
}

// class returns the class of the next flush: the one it needs, or a
// larger one that one of the last s.hold flushes needed.
func (h *flushHistory) class(s flushRule, need int) int {
	for k := min(len(h.heldUntil)-1, s.classes); k > need; k-- {
		if h.heldUntil[k] > h.count {
			return k
		}
	}
	return need
}

// wrote counts a flush written that needed class need.
func (h *flushHistory) wrote(s flushRule, need int) {
	if len(h.heldUntil) != s.classes+1 {
		h.heldUntil = make([]uint64, s.classes+1)
	}
	h.heldUntil[need] = h.count + uint64(s.hold)
	h.count++
}

// flushesFor returns how many flushes, from the next, write pending rows
// if nothing else is queued before them and none fails.
func (s flushRule) flushesFor(h flushHistory, pending int) int {
	h.heldUntil = slices.Clone(h.heldUntil)
	n := 0
	// The flushes of the largest class, all alike, at once.
	if full := (pending - 1) / s.most(); full > 0 {
		h.count += uint64(full - 1)
		h.wrote(s, s.classes)
		n, pending = full, pending-full*s.most()
	}
	for ; pending > 0; n++ {
		need := s.need(pending)
		pending -= s.rows(h.class(s, need))
		h.wrote(s, need)
	}
	return n
}

// flushPlan is one flush: decided under e.mu, written without it.
type flushPlan struct {
	day  calendar.Day // the flush's day: its rows are stored under the next
	mark time.Time    // the time mark it carries
	rows int          // its size: real rows, then filler
	need int          // the class its pending rows needed
	// real are the rows of pending records it writes, in order; after it,
	// pending[:done] are written whole and sent chunks of pending[done].
	real []plannedRow
	done int
	sent int
}

// plannedRow is chunk c of record r.
type plannedRow struct {
	r journalRecord
	c int
}

// FlushDue makes every flush the clock says is due: one a period, each of
// the size the policy's rule gives (journal.go), real rows or filler, with
// the time mark. The service calls it often (every second); the demo calls
// it when it moves the clock. It also logs, at most once a flush, that the
// host's clock is behind the enclave's (clock.go). It returns once the
// flushes are durable; exchanges go on meanwhile.
func (e *Enclave) FlushDue(ctx context.Context) error {
	j := e.journal
	j.flushing.Lock()
	defer j.flushing.Unlock()
	e.mu.Lock()
	e.reportLag()
	e.mu.Unlock()
	e.releaseStatistics(ctx) // once a day: statsrelease.go
	every := time.Duration(e.policy.StoreFlushSeconds) * time.Second
	now := e.now()
	first, _ := e.window(now)
	for n := 0; ; n++ {
		e.mu.Lock()
		due := j.nextFlush
		switch {
		case due.After(now):
			e.mu.Unlock()
			return nil
		case n == maxCatchUp:
			// Far behind (a clock that jumped): resume the schedule from
			// now rather than write a backlog of filler.
			j.nextFlush = now.Add(every)
			e.mu.Unlock()
			return nil
		}
		// Moved on before the commit, so that an upload made meanwhile
		// is told the flush after this one.
		j.nextFlush = due.Add(every)
		// A missed flush of a day past the window is skipped: its rows
		// would be deleted at once, and its day key may be gone already.
		var f *flushPlan
		if day := calendar.DayOf(due); day >= first {
			f = e.planFlush(day, now)
		}
		e.mu.Unlock()
		if f == nil {
			continue
		}
		if err := e.commitFlush(ctx, f); err != nil {
			e.mu.Lock()
			j.nextFlush = due
			e.mu.Unlock()
			return err
		}
	}
}

// FlushNow makes one flush now, off the schedule: the backend calls it when
// it stops, so that what arrived since the last flush is not lost with its
// memory. It writes one flush by the same rule whatever is pending, so
// that stopping tells the host nothing more than a flush on the clock.
func (e *Enclave) FlushNow(ctx context.Context) error {
	j := e.journal
	j.flushing.Lock()
	defer j.flushing.Unlock()
	now := e.now()
	e.mu.Lock()
	f := e.planFlush(calendar.DayOf(now), now)
	e.mu.Unlock()
	return e.commitFlush(ctx, f)
}

// planFlush decides one flush of day carrying the time mark of now: its
// size, and the rows of pending records it writes. It changes nothing but
// j.committing, which commitFlush resets. The caller holds j.flushing and
// e.mu.
func (e *Enclave) planFlush(day calendar.Day, now time.Time) *flushPlan {
	j := e.journal
	s := ruleOf(e.policy)
	need := s.need(j.rows)
	f := &flushPlan{day: day, mark: now, rows: s.rows(j.history.class(s, need)), need: need}
	f.real = make([]plannedRow, 0, min(f.rows, j.rows))
	i, sent := 0, j.sent
	for len(f.real) < f.rows && i < len(j.pending) {
		// A copy: an upload may grow j.pending while the flush seals.
		r := j.pending[i]
		f.real = append(f.real, plannedRow{r, sent})
		if sent++; sent == chunks(r) {
			i, sent = i+1, 0
		}
	}
	f.done, f.sent = i, sent
	j.committing = len(f.real)
	return f
}

// commitFlush writes f and, once it is durable, marks what it wrote. The
// caller holds j.flushing, not e.mu.
func (e *Enclave) commitFlush(ctx context.Context, f *flushPlan) error {
	err := e.writeFlush(ctx, f)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.journal.committing = 0
	if err != nil {
		return err
	}
	e.finishFlush(f)
	return nil
}

// writeFlush seals f's rows, its filler and its time mark, and commits
// them in one batch. It runs without e.mu: the records it reads do not
// change, and j.flushing keeps retention off them and their day keys.
func (e *Enclave) writeFlush(ctx context.Context, f *flushPlan) error {
	var b store.Batch
	b.Ops = make([]store.Op, 0, f.rows+1)
	for _, p := range f.real {
		if err := e.putJournalRow(&b, f.day, p.r, p.c); err != nil {
			return e.internal("sealing journal row", err)
		}
	}
	for n := len(f.real); n < f.rows; n++ {
		if err := e.putJournalRow(&b, f.day, journalRecord{kind: journalFiller, day: f.day}, 0); err != nil {
			return e.internal("sealing journal filler", err)
		}
	}
	if err := e.putMark(ctx, &b, f.mark); err != nil {
		return e.internal("sealing time mark", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		return e.internal("flushing journal", err)
	}
	return nil
}

// finishFlush marks durable the records whose last chunk f wrote and drops
// them. Records queued since f was planned are behind them. The caller
// holds j.flushing and e.mu.
func (e *Enclave) finishFlush(f *flushPlan) {
	j := e.journal
	for _, r := range j.pending[:f.done] {
		clear(r.data)
		if r.durable != nil {
			r.durable()
		}
	}
	j.pending = slices.Delete(j.pending, 0, f.done)
	j.sent = f.sent
	j.rows -= len(f.real)
	j.history.wrote(ruleOf(e.policy), f.need)
	e.lagReported = false
}
