package enclave

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
)

// TestNothingAcknowledgedUntilDurable: when the store cannot write, the
// flows that write when they are asked (results, traces) fail without
// acknowledging or indexing anything, and succeed once the store is back.
// An upload, which the journal writes on the clock, is taken whatever the
// store does; a flush that fails writes and loses nothing, and is made
// again once the store is back.
func TestNothingAcknowledgedUntilDurable(t *testing.T) {
	v := newEnv(t, bothRules, detailed)
	ctx := context.Background()
	secret := newSecret()
	result := v.signResult(secret, api.Positive)
	inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
	startAt := v.now().Add(-2 * time.Hour).Truncate(time.Minute)
	trace := v.signTrace(walk(startAt, 30, 46.5, 6.5, 0.00001))
	phone := walk(startAt, 30, 46.5+metersNorth(2), 6.5, 0.00001)

	v.faults.set(faults{apply: true})
	_, err := v.e.SubmitResult(ctx, result)
	wantInternal(t, "result while the store fails", err)
	if pr, err := v.poll(secret); err != nil || pr.Result != api.Pending {
		t.Errorf("poll of a result that was not stored: %+v, %v; want pending", pr, err)
	}
	_, err = v.e.SubmitTrace(ctx, trace)
	wantInternal(t, "trace while the store fails", err)
	if r := v.checkTrace(phone); r.Exposed {
		t.Error("a trace that was not stored matches")
	}
	// Expire stores the day keys of the window every time.
	if err := v.e.Expire(ctx); !errors.Is(err, errInjected) {
		t.Errorf("Expire while the store fails: %v, want the store's error", err)
	}

	v.faults.set(faults{})
	if _, err := v.e.SubmitResult(ctx, result); err != nil {
		t.Fatalf("the same result once the store is back: %v", err)
	}
	if _, err := v.e.SubmitTrace(ctx, trace); err != nil {
		t.Fatalf("trace once the store is back: %v", err)
	}
	if r := v.checkTrace(phone); !r.Exposed {
		t.Error("the trace does not match")
	}

	v.faults.set(faults{apply: true})
	pr, err := v.poll(secret)
	if err != nil || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("first positive poll while the store fails: %+v, %v; want an authorization (polls do not use the store)", pr, err)
	}
	up, err := v.upload(pr.UploadAuthorization, inf)
	if err != nil || up.Durable {
		t.Fatalf("upload while the store fails: %+v, %v; want it taken, not durable", up, err)
	}
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("a taken upload does not match at once")
	}
	v.clock.Advance(v.nextFlush().Sub(v.now()))
	if err := v.e.FlushDue(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("flush while the store fails: %v, want the store's error", err)
	}
	if pr, err := v.poll(secret); err != nil || !pr.UploadPending || pr.Uploaded {
		t.Fatalf("poll after a failed flush: %+v, %v; want the upload pending", pr, err)
	}

	v.faults.set(faults{})
	if err := v.e.FlushDue(ctx); err != nil {
		t.Fatalf("the same flush once the store is back: %v", err)
	}
	// The failed flush wrote nothing: one flush's rows are in the store.
	if n := len(v.records(tableJournal)); n != v.pol.StoreFlushRows {
		t.Errorf("%d journal rows, want one flush's %d", n, v.pol.StoreFlushRows)
	}
	if pr, err := v.poll(secret); err != nil || !pr.Uploaded {
		t.Fatalf("poll after the flush: %+v, %v; want uploaded", pr, err)
	}
	v.restart()
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("the upload written by the retried flush is lost at restart")
	}
}

// TestOpenFailsOnUnreadableStore: a start that cannot read the store
// fails, rather than serve with an empty index or no results and tell
// exposed devices they were not exposed.
func TestOpenFailsOnUnreadableStore(t *testing.T) {
	v := newEnv(t)
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf)
	v.flushAll()
	v.submitTrace(walk(v.now().Add(-2*time.Hour).Truncate(time.Minute), 10, 46.5, 6.5, 0))
	for _, tc := range []struct {
		name string
		f    faults
	}{
		{"days", faults{days: true}},
		{"day keys", faults{scans: map[string]bool{tableDayKeys: true}}},
		{"results", faults{scans: map[string]bool{tableResults: true}}},
		{"the journal", faults{scans: map[string]bool{tableJournal: true}}},
		{"imported keys", faults{scans: map[string]bool{tableGAENKeys: true}}},
		{"traces", faults{scans: map[string]bool{tableTraces: true}}},
	} {
		v.faults.set(tc.f)
		if _, err := Open(context.Background(), v.config()); !errors.Is(err, errInjected) {
			t.Errorf("Open when the store cannot list %s: %v, want the store's error", tc.name, err)
		}
	}
	v.faults.set(faults{apply: true})
	v.clock.Advance(time.Duration(v.pol.RetentionDays) * 24 * time.Hour)
	if err := v.e.Expire(context.Background()); !errors.Is(err, errInjected) {
		t.Errorf("Expire when the store cannot delete: %v, want the store's error", err)
	}
	v.faults.set(faults{})
	v.restart()
}
