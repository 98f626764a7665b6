package enclave

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store/memstore"
)

// releasedKEK returns the key-encryption key e would release to a peer.
func releasedKEK(t *testing.T, e *Enclave) *[seal.KeySize]byte {
	t.Helper()
	var kek [seal.KeySize]byte
	if _, err := e.ReleaseKEK(func(k []byte) ([]byte, error) { copy(kek[:], k); return nil, nil }); err != nil {
		t.Fatal(err)
	}
	return &kek
}

// TestKEKFromPeer: a replica whose sealing key does not open the store
// (another machine, another build) is refused until it brings the key from
// a peer; then it answers like the peer, wraps the key with its own sealing
// key, and restarts without the peer. A key that is not the store's is
// refused and changes nothing.
func TestKEKFromPeer(t *testing.T) {
	v := newEnv(t, detailed)
	inf, c := encounter(v.now().Add(-time.Hour), 10, 50)
	v.mustUpload(inf)
	v.flushAll()
	want := v.check(c)

	other := v.config()
	rand.Read(other.SealingKey[:])
	if _, err := Open(context.Background(), other); !errors.Is(err, ErrNeedsPeer) {
		t.Fatalf("another sealing key without a peer: %v, want ErrNeedsPeer", err)
	}

	snapshot := v.snapshot()
	var wrong [seal.KeySize]byte
	rand.Read(wrong[:])
	bad := other
	bad.KEK = &wrong
	if _, err := Open(context.Background(), bad); err == nil {
		t.Fatal("a key-encryption key that is not the store's opened it")
	}
	if !sameRecords(snapshot, v.snapshot()) {
		t.Fatal("a refused key-encryption key changed the store")
	}

	other.KEK = releasedKEK(t, v.e)
	peer, err := Open(context.Background(), other)
	if err != nil {
		t.Fatalf("the released key-encryption key: %v", err)
	}
	v.e = peer
	if got := v.check(c); !equalExposure(got, want) {
		t.Fatalf("the replica answers %+v, the one that released its key %+v", got, want)
	}
	other.KEK = nil
	if v.e, err = Open(context.Background(), other); err != nil {
		t.Fatalf("a restart of the replica with its own sealing key: %v", err)
	}
	if got := v.check(c); !equalExposure(got, want) {
		t.Fatalf("after its restart the replica answers %+v, want %+v", got, want)
	}
	v.restart() // the first replica's sealing key still opens the store
	if got := v.check(c); !equalExposure(got, want) {
		t.Fatalf("the first replica answers %+v after the second joined, want %+v", got, want)
	}
}

// TestKEKWithoutSealingKey: a TEE without a sealing key (TDX) makes the key
// of a new store, and a restart of it needs a peer.
func TestKEKWithoutSealingKey(t *testing.T) {
	v := newEnv(t, detailed)
	cfg := v.config()
	cfg.SealingKey = [seal.KeySize]byte{}
	cfg.Store = memstore.New()
	t.Cleanup(func() { cfg.Store.Close() })
	e, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("no sealing key, new store: %v", err)
	}
	if _, err := Open(context.Background(), cfg); !errors.Is(err, ErrNeedsPeer) {
		t.Fatalf("no sealing key, a store with a key, no peer: %v, want ErrNeedsPeer", err)
	}
	cfg.KEK = releasedKEK(t, e)
	if _, err := Open(context.Background(), cfg); err != nil {
		t.Fatalf("no sealing key, the key from a peer: %v", err)
	}
}

// TestKEKCheckAltered: a check value the host altered is noticed by the
// sealing key's path too, not only when a peer's key is checked.
func TestKEKCheckAltered(t *testing.T) {
	v := newEnv(t, detailed)
	for _, r := range v.records(tableKEK) {
		if string(r.Key) == string(kekCheckKey) {
			r.Value = flip(r.Value)
			v.put(r)
		}
	}
	if _, err := Open(context.Background(), v.config()); err == nil {
		t.Fatal("an altered check value went unnoticed")
	}
}
