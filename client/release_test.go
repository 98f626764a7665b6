package client_test

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// governance makes the keys of a health authority and an auditor, and the
// set phones pin.
func governance(t testing.TB) ([]*release.Key, *release.Governance) {
	t.Helper()
	var keys []*release.Key
	gov := &release.Governance{}
	for _, name := range []string{"health-authority", "auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		gov.Members = append(gov.Members, k.Member())
	}
	return keys, gov
}

// signRelease has each of keys sign a statement of seq admitting the sim
// build of measurement under the policy doc.
func signRelease(t testing.TB, seq uint64, measurement, doc []byte, keys ...*release.Key) []byte {
	t.Helper()
	st := release.Statement{Sequence: seq, TEE: attest.Sim, Measurements: [][]byte{measurement}, PolicySHA256: sha256.Sum256(doc)}
	f, err := release.Sign(st, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		if f, err = release.Cosign(f, k); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// accepted records the release statements a client accepted.
type accepted struct {
	mu  sync.Mutex
	seq []uint64
}

func (a *accepted) record(st release.Statement) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq = append(a.seq, st.Sequence)
	return nil
}

func (a *accepted) all() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seq)
}

// An upgrade that the governance set signed (new code, new policy, a higher
// sequence number) is accepted by a phone that pinned the set, without
// re-pinning; going back to the older release is then refused.
func TestGovernanceFollowsSignedUpgrade(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	keys, gov := governance(t)
	clk := newClock()
	v1 := startBackend(t, localbackend.Config{Now: clk.Now, Governance: keys, ReleaseSequence: 1})
	f := newFront(t, v1.URL)
	var got accepted
	c, err := client.New(ctx, client.Config{Server: f.URL, Now: clk.Now, Governance: gov,
		Expectations: attest.Expectations{AllowSimulated: true}, ReleaseAccepted: got.record})
	if err != nil {
		t.Fatalf("New against release 1: %v", err)
	}
	d := newDevice(t, v1.URL)
	if _, err := c.CheckExposure(ctx, window(d, c.Policy(), clk.Now())); err != nil {
		t.Fatal(err)
	}

	// Release 2: another build, a shorter retention; both members signed.
	newer := policy.Default()
	newer.RetentionDays = 10
	build2 := sha256Sum("conftrace release 2")
	v2 := startBackend(t, localbackend.Config{Now: clk.Now, Authority: v1.Authority, Measurement: build2, Policy: &newer,
		Governance: keys, ReleaseSequence: 2})
	f.setTarget(t, v2.URL)
	if _, err := c.CheckExposure(ctx, window(d, c.Policy(), clk.Now())); err != nil {
		t.Fatalf("check after the upgrade: %v", err)
	}
	if id := c.Identity(); string(id.Measurement) != string(build2) || c.Policy().RetentionDays != 10 {
		t.Errorf("after the upgrade the client trusts measurement %x with retention %d days, want %x and 10", id.Measurement, c.Policy().RetentionDays, build2)
	}
	if st, ok := c.Release(); !ok || st.Sequence != 2 {
		t.Errorf("Release() = %+v, %t; want sequence 2", st, ok)
	}
	if s := got.all(); !slices.Equal(s, []uint64{1, 2}) {
		t.Errorf("the client reported accepting releases %v, want [1 2]", s)
	}

	// Back to release 1 (its statement is still validly signed): a
	// rollback, refused by this client and by a phone that remembered 2.
	f.setTarget(t, v1.URL)
	if _, err := c.CheckExposure(ctx, window(d, c.Policy(), clk.Now())); !errors.Is(err, release.ErrRollback) {
		t.Fatalf("check after a rollback to release 1: %v, want %v", err, release.ErrRollback)
	}
	if id := c.Identity(); string(id.Measurement) != string(build2) {
		t.Error("the client adopted the keys of the rolled-back release")
	}
	_, err = client.New(ctx, client.Config{Server: f.URL, Now: clk.Now, Governance: gov, MinReleaseSequence: 2,
		Expectations: attest.Expectations{AllowSimulated: true}})
	if !errors.Is(err, release.ErrRollback) {
		t.Fatalf("New by a phone that accepted release 2, against release 1: %v, want %v", err, release.ErrRollback)
	}
}

// What the operator cannot do on its own, with a phone pinned to the
// governance set: run a build no statement admits, change the policy,
// roll back, or start with a statement that not every member signed.
func TestGovernanceRefuses(t *testing.T) {
	t.Parallel()
	keys, gov := governance(t)
	ha := keys[0]
	others, _ := governance(t)
	now := time.Now()
	build := sha256Sum("the signed build")
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	longer := policy.Default()
	longer.RetentionDays = 60
	longerDoc, err := longer.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	signed := signRelease(t, 5, build, doc, keys...)
	for _, tc := range []struct {
		name         string
		measurement  []byte
		doc, release []byte
		min          uint64
		want         error
	}{
		{"the signed release", build, doc, signed, 5, nil},
		{"a foreign build", sha256Sum("a patched build"), doc, signed, 0, release.ErrCodeNotAdmitted},
		{"an unsigned policy change", build, longerDoc, signed, 0, release.ErrPolicyNotAdmitted},
		{"a rollback", build, doc, signRelease(t, 4, build, doc, keys...), 5, release.ErrRollback},
		{"the auditor's signature missing", build, doc, signRelease(t, 6, build, doc, ha), 0, release.ErrMissingSignature},
		{"another governance set", build, doc, signRelease(t, 6, build, doc, others...), 0, release.ErrMissingSignature},
		{"no statement", build, doc, nil, 0, release.ErrNoRelease},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, http.StatusOK, marshal(t, forgeBundleAt(t, tc.measurement, nil, tc.doc, now, now.Add(24*time.Hour), tc.release)))
			c, err := client.New(t.Context(), client.Config{Server: url, Governance: gov, MinReleaseSequence: tc.min,
				Expectations: attest.Expectations{AllowSimulated: true}})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if st, ok := c.Release(); !ok || st.Sequence != 5 {
					t.Errorf("Release() = %+v, %t; want sequence 5", st, ok)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: %v, want %v", err, tc.want)
			}
		})
	}
}

// A phone that pinned the policy it saw first refuses another, even from
// the same build.
func TestPolicyPin(t *testing.T) {
	t.Parallel()
	now := time.Now()
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	other := policy.Default()
	other.Answers = policy.AnswersDetailed
	otherDoc, err := other.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	pin := sha256.Sum256(doc)
	for _, tc := range []struct {
		doc  []byte
		want error
	}{{doc, nil}, {otherDoc, client.ErrPolicyNotPinned}} {
		url := serve(t, http.StatusOK, marshal(t, forgeBundleAt(t, testMeasurement, nil, tc.doc, now, now.Add(time.Hour), nil)))
		_, err := client.New(t.Context(), client.Config{Server: url, Expectations: expectations(), PolicySHA256: pin[:]})
		if !errors.Is(err, tc.want) {
			t.Errorf("policy %s: New: %v, want %v", tc.doc, err, tc.want)
		}
	}
}
