package enclave

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/store"
)

// ownMark returns the record of the running enclave's time mark.
func (v *env) ownMark() store.Record {
	v.t.Helper()
	rec, err := v.store.Get(context.Background(), tableClock, markKeyOf(v.e.heads.id))
	if err != nil {
		v.t.Fatal(err)
	}
	return rec
}

// TestHeadCountsWrites: each write the clock makes raises the run's head
// by one, and a failed write does not.
func TestHeadCountsWrites(t *testing.T) {
	v := newEnv(t)
	start := v.e.Heads()[v.e.heads.id]
	for range 3 {
		v.flushDue(v.flushEvery())
	}
	if got := v.e.Heads()[v.e.heads.id]; got != start+3 {
		t.Fatalf("after 3 flushes the head is %d, want %d", got, start+3)
	}
	v.faults.set(faults{apply: true})
	v.clock.Advance(v.flushEvery())
	if err := v.e.FlushDue(context.Background()); err == nil {
		t.Fatal("a flush to a failing store succeeded")
	}
	v.faults.set(faults{})
	v.flushDue(0)
	if got, err := v.e.readHead(context.Background(), v.e.heads.id); err != nil || got != start+4 {
		t.Fatalf("stored head %d, %v after a failed and a good flush; want %d", got, err, start+4)
	}
	if err := v.e.CheckOwnHead(context.Background()); err != nil {
		t.Fatalf("CheckOwnHead over the store it wrote: %v", err)
	}
}

// TestRollbackUnderARunningReplica: a host that puts back an older copy
// of the store (here, of the run's mark, which a whole older copy holds)
// under a running enclave is caught at its next flush, before the flush
// could write a newer head over the copy, or at its next maintenance,
// and the enclave writes nothing more; so is a deleted mark.
func TestRollbackUnderARunningReplica(t *testing.T) {
	rollBacks := map[string]func(v *env, old store.Record){
		"older copy":   func(v *env, old store.Record) { v.put(old) },
		"mark deleted": func(v *env, old store.Record) { v.del(tableClock, old.Key) },
	}
	detectors := map[string]func(v *env) error{
		"at the next flush": func(v *env) error {
			v.clock.Advance(v.flushEvery())
			return v.e.FlushDue(context.Background())
		},
		"at maintenance": func(v *env) error { return v.e.CheckOwnHead(context.Background()) },
	}
	for name, rollBack := range rollBacks {
		for when, detect := range detectors {
			t.Run(name+" "+when, func(t *testing.T) {
				v := newEnv(t)
				v.flushDue(v.flushEvery())
				old := v.ownMark()
				v.flushDue(v.flushEvery())
				rollBack(v, old)
				before := v.snapshot()
				if err := detect(v); !errors.Is(err, ErrRolledBack) {
					t.Fatalf("after the rollback: %v, want ErrRolledBack", err)
				}
				v.clock.Advance(v.flushEvery())
				if err := v.e.FlushDue(context.Background()); !errors.Is(err, ErrRolledBack) {
					t.Errorf("the next flush: %v, want ErrRolledBack", err)
				}
				if err := v.e.Expire(context.Background()); !errors.Is(err, ErrRolledBack) {
					t.Errorf("the next expiry: %v, want ErrRolledBack", err)
				}
				if !sameRecords(before, v.snapshot()) {
					t.Errorf("the enclave wrote to a rolled-back store")
				}
			})
		}
	}
}

// TestHeadAdoptsAWriteThatCommitted: a write whose outcome was an error
// but which committed (a connection lost after the commit) leaves the
// next head in the store; the next write takes it and goes on.
func TestHeadAdoptsAWriteThatCommitted(t *testing.T) {
	v := newEnv(t)
	v.flushDue(v.flushEvery())
	n := v.e.Heads()[v.e.heads.id]
	sealed, err := v.e.sealMark(v.now(), n+1)
	if err != nil {
		t.Fatal(err)
	}
	v.put(store.Record{Table: tableClock, Key: markKeyOf(v.e.heads.id), Day: store.NoDay, Value: sealed})
	v.flushDue(v.flushEvery())
	if got := v.e.Heads()[v.e.heads.id]; got != n+2 {
		t.Errorf("head %d after a write that committed unseen and the next, want %d", got, n+2)
	}
}

// TestCheckHeads: a replica that starts over an older copy of the store is
// refused by the heads a live replica wrote; over the real store it
// starts.
func TestCheckHeads(t *testing.T) {
	v := newEnv(t)
	v.flushDue(v.flushEvery())
	old := v.ownMark()
	v.flushDue(v.flushEvery())
	heads := v.e.Heads()
	if len(heads) != 1 {
		t.Fatalf("heads %v: want this run's", heads)
	}

	v.restart() // a second replica over the same store
	if err := v.e.CheckHeads(context.Background(), heads); err != nil {
		t.Fatalf("over the live store: %v", err)
	}
	v.put(old)
	if err := v.e.CheckHeads(context.Background(), heads); !errors.Is(err, ErrRolledBack) {
		t.Errorf("over an older copy: %v, want ErrRolledBack", err)
	}
	v.del(tableClock, old.Key)
	if err := v.e.CheckHeads(context.Background(), heads); !errors.Is(err, ErrRolledBack) {
		t.Errorf("with the mark deleted: %v, want ErrRolledBack", err)
	}
}

// TestLegacyTimeMark: a store written before each run had its own mark
// holds one shared mark, which still sets the clock.
func TestLegacyTimeMark(t *testing.T) {
	v := newEnv(t)
	ahead := v.now().Add(48 * time.Hour)
	sealed, err := v.e.SealSecret(markName, binary.BigEndian.AppendUint64(nil, uint64(ahead.Unix())))
	if err != nil {
		t.Fatal(err)
	}
	v.put(store.Record{Table: tableClock, Key: markKey, Day: store.NoDay, Value: sealed})
	v.restart()
	if got := v.e.Now(); got.Before(ahead) {
		t.Errorf("after a restart over a legacy mark of %s the clock reads %s", ahead, got)
	}
}
