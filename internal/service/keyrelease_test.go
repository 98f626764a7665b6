package service_test

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/keyrelease"
	"github.com/conftrace/conftrace/internal/service"
	"github.com/conftrace/conftrace/internal/store/sqlite"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// simTEE is a simulated TEE with a platform key of its own (and so a
// sealing key of its own, like another machine), playing build m (nil:
// this test binary).
func simTEE(t *testing.T, m []byte) *teesim.TEE {
	t.Helper()
	tt, err := teesim.New(teesim.Options{KeyFile: filepath.Join(t.TempDir(), "platform.key"), Measurement: m})
	if err != nil {
		t.Fatal(err)
	}
	return tt
}

// TestReplicaObtainsKEKFromPeer: a replica on another machine, over the
// same store, cannot open the store's key with its sealing key; it gets
// the key from a live replica of the same build and serves the same
// Oblivious HTTP keys. A replica of another build gets nothing.
func TestReplicaObtainsKEKFromPeer(t *testing.T) {
	ctx := t.Context()
	data := t.TempDir()
	p := policy.Default()
	first, err := service.Open(ctx, service.Config{DataDir: data, Policy: p, TEE: simTEE(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	srv := httptest.NewServer(first.Handler)
	defer srv.Close()

	if _, err := service.Open(ctx, service.Config{DataDir: data, Policy: p, TEE: simTEE(t, nil)}); !errors.Is(err, enclave.ErrNeedsPeer) {
		t.Fatalf("another machine without a peer: %v, want ErrNeedsPeer", err)
	}

	second, err := service.Open(ctx, service.Config{DataDir: data, Policy: p, TEE: simTEE(t, nil), Peer: keyrelease.HTTPPeer{URL: srv.URL}})
	if err != nil {
		t.Fatalf("with a peer: %v", err)
	}
	defer second.Close()
	if a, b := first.CurrentBundle().KeyConfigs, second.CurrentBundle().KeyConfigs; !bytes.Equal(a, b) {
		t.Errorf("the replicas serve different Oblivious HTTP keys")
	}

	other := bytes.Repeat([]byte{0xee}, 32)
	_, err = service.Open(ctx, service.Config{DataDir: data, Policy: p, TEE: simTEE(t, other), Peer: keyrelease.HTTPPeer{URL: srv.URL}})
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden: keyrelease: code not admitted") {
		t.Errorf("another build: %v, want a refusal", err)
	}
}

// TestKeyReleaseEndpointsServed: every replica serves key release on its
// public listener, beside the phones' endpoints.
func TestKeyReleaseEndpointsServed(t *testing.T) {
	ctx := t.Context()
	svc, err := service.Open(ctx, service.Config{DataDir: t.TempDir(), Policy: policy.Default(), TEE: simTEE(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	srv := httptest.NewServer(svc.Handler)
	defer srv.Close()
	n, err := keyrelease.HTTPPeer{URL: srv.URL}.Nonce(ctx)
	if err != nil || len(n) != keyrelease.NonceSize {
		t.Fatalf("nonce %x, %v", n, err)
	}
}

// upgradeRelease returns policy p naming gov, and a release statement
// with seq admitting build m under it, signed by keys.
func upgradeRelease(t *testing.T, p policy.Policy, gov []*release.Key, seq uint64, m []byte, keys ...*release.Key) (policy.Policy, []byte) {
	t.Helper()
	p.Governance = nil
	for _, k := range gov {
		p.Governance = append(p.Governance, policy.GovernanceMember{Name: k.Name, PublicKey: k.PublicKey()})
	}
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	f, err := release.Sign(release.Statement{Sequence: seq, TEE: attest.Sim, Measurements: [][]byte{m}, PolicySHA256: sha256.Sum256(doc)}, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		if f, err = release.Cosign(f, k); err != nil {
			t.Fatal(err)
		}
	}
	return p, f
}

// TestUpgradeObtainsKEK is the upgrade path: the running release hands
// the store's key to the next release, which its governance set signed
// with a later sequence and a changed policy; a build only one member
// signed gets nothing.
func TestUpgradeObtainsKEK(t *testing.T) {
	ctx := t.Context()
	var gov []*release.Key
	for _, name := range []string{"health-authority", "auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		gov = append(gov, k)
	}
	data := t.TempDir()
	oldBuild, newBuild := bytes.Repeat([]byte{0xa1}, 32), bytes.Repeat([]byte{0xb2}, 32)
	oldPolicy, oldRelease := upgradeRelease(t, policy.Default(), gov, 1, oldBuild, gov...)
	old, err := service.Open(ctx, service.Config{DataDir: data, Policy: oldPolicy, TEE: simTEE(t, oldBuild), Release: oldRelease})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	srv := httptest.NewServer(old.Handler)
	defer srv.Close()
	peer := keyrelease.HTTPPeer{URL: srv.URL}

	changed := policy.Default()
	changed.RetentionDays++
	newPolicy, newRelease := upgradeRelease(t, changed, gov, 2, newBuild, gov...)
	_, halfSigned := upgradeRelease(t, changed, gov, 2, newBuild, gov[0])
	_, err = service.Open(ctx, service.Config{DataDir: data, Policy: newPolicy, TEE: simTEE(t, newBuild), Release: halfSigned, Peer: peer})
	if err == nil || !strings.Contains(err.Error(), "not signed by every governance member") {
		t.Errorf("a release one member signed: %v, want a refusal", err)
	}

	next, err := service.Open(ctx, service.Config{DataDir: data, Policy: newPolicy, TEE: simTEE(t, newBuild), Release: newRelease, Peer: peer})
	if err != nil {
		t.Fatalf("the signed successor: %v", err)
	}
	next.Close()
}

// TestOlderCopyRefused: a replica pointed at an older copy of the store
// (what a host that restores a backup does, undeleting expired days and
// reviving used upload authorizations) is refused by the heads the live
// replica wrote since; pointed at the live store, it starts.
func TestOlderCopyRefused(t *testing.T) {
	ctx := t.Context()
	now := time.Now()
	clock := func() time.Time { return now }
	p := policy.Default()
	p.StoreFlushSeconds = 60
	live := t.TempDir()
	first, err := service.Open(ctx, service.Config{DataDir: live, Policy: p, TEE: simTEE(t, nil), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	srv := httptest.NewServer(first.Handler)
	defer srv.Close()
	flush := func() {
		now = now.Add(time.Minute)
		if err := first.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	older := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(live, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM INTO ?`, filepath.Join(older, sqlite.FileName)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	flush()

	peer := keyrelease.HTTPPeer{URL: srv.URL}
	_, err = service.Open(ctx, service.Config{DataDir: older, Policy: p, TEE: simTEE(t, nil), Now: clock, Peer: peer})
	if !errors.Is(err, enclave.ErrRolledBack) {
		t.Fatalf("over the older copy: %v, want ErrRolledBack", err)
	}
	second, err := service.Open(ctx, service.Config{DataDir: live, Policy: p, TEE: simTEE(t, nil), Now: clock, Peer: peer})
	if err != nil {
		t.Fatalf("over the live store: %v", err)
	}
	second.Close()
}
