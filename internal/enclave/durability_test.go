package enclave

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
)

// TestNothingAcknowledgedUntilDurable: when the store cannot write, every
// flow fails without acknowledging, indexing or using anything up, and
// succeeds once the store is back, as if the failed attempt had never
// happened.
func TestNothingAcknowledgedUntilDurable(t *testing.T) {
	v := newEnv(t, bothRules)
	ctx := context.Background()
	token := v.authorize()
	secret := newSecret()
	result := v.signResult(secret, api.Positive)
	inf, contact := encounter(v.now().Add(-time.Hour), 10, 50)
	startAt := v.now().Add(-2 * time.Hour).Truncate(time.Minute)
	trace := v.signTrace(walk(startAt, 30, 46.5, 6.5, 0.00001))
	phone := walk(startAt, 30, 46.5+metersNorth(2), 6.5, 0.00001)

	v.faults.set(faults{apply: true})
	_, err := v.upload(token, inf)
	wantInternal(t, "upload while the store fails", err)
	if n, m := v.e.index.Len(), v.e.oneSided.Len(); n != 0 || m != 0 {
		t.Errorf("an upload that was not stored indexed %d sightings and %d one-sided identifiers", n, m)
	}
	_, err = v.e.SubmitResult(ctx, result)
	wantInternal(t, "result while the store fails", err)
	_, err = v.e.SubmitTrace(ctx, trace)
	wantInternal(t, "trace while the store fails", err)
	if r := v.checkTrace(phone); r.Exposed {
		t.Error("a trace that was not stored matches")
	}
	v.faults.set(faults{})
	if _, err := v.e.SubmitResult(ctx, result); err != nil {
		t.Fatalf("the same result once the store is back: %v", err)
	}
	v.faults.set(faults{apply: true})
	pr, err := v.poll(secret)
	wantInternal(t, "first positive poll while the store fails", err)
	if pr.UploadAuthorization != nil {
		t.Error("a poll handed out an authorization that was not stored")
	}
	if err := v.e.Expire(ctx); err != nil {
		t.Errorf("Expire with nothing to expire touched the store: %v", err)
	}

	v.faults.set(faults{})
	if _, err := v.upload(token, inf); err != nil {
		t.Fatalf("upload once the store is back: %v", err)
	}
	if r := v.check(contact); dayOf(t, r, when(contact)).Minutes != 10 {
		t.Error("the upload does not match")
	}
	if _, err := v.e.SubmitTrace(ctx, trace); err != nil {
		t.Fatalf("trace once the store is back: %v", err)
	}
	if r := v.checkTrace(phone); !r.Exposed {
		t.Error("the trace does not match")
	}
	if pr, err := v.poll(secret); err != nil || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("poll once the store is back: %+v, %v", pr, err)
	}
}

// TestOpenFailsOnUnreadableStore: a start that cannot read the store
// fails, rather than serve with an empty index and tell exposed devices
// they were not exposed.
func TestOpenFailsOnUnreadableStore(t *testing.T) {
	v := newEnv(t)
	inf, _ := encounter(v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf)
	v.submitTrace(walk(v.now().Add(-2*time.Hour).Truncate(time.Minute), 10, 46.5, 6.5, 0))
	for _, tc := range []struct {
		name string
		f    faults
	}{
		{"days", faults{days: true}},
		{"day keys", faults{scans: map[string]bool{tableDayKeys: true}}},
		{"uploads", faults{scans: map[string]bool{tableUploads: true}}},
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
