package enclave

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
)

// The key-encryption key's records, all in tableKEK under store.NoDay:
// the KEK wrapped with the sealing key of the replica that made it, the
// wraps of replicas that obtained it from a peer (each under its sealing
// key's identifier), and a check value by which a KEK that came from a
// peer is recognized as this store's.
var (
	kekRecordKey   = []byte("kek")
	kekCheckKey    = []byte("check")
	kekWrapPrefix  = "wrap/"
	kekCheckLabel  = []byte("conftrace kek check v1")
	sealingIDLabel = []byte("conftrace sealing key id v1")
)

// ErrNeedsPeer means the store's key-encryption key exists but this
// TEE cannot unwrap it (another build, another machine, or no sealing key
// at all, as on TDX): it must obtain the key from a live replica that
// holds it (docs/key-release.md).
var ErrNeedsPeer = errors.New("enclave: the store's key-encryption key does not open here; obtain it from a live replica (conftraced --peer URL)")

// kekCheck is the check value of kek: a MAC under it, which tells whether
// a key is this store's without revealing anything about it.
func kekCheck(kek [seal.KeySize]byte) []byte {
	m := hmac.New(sha256.New, kek[:])
	m.Write(kekCheckLabel)
	return m.Sum(nil)
}

// wrapKey is the record key of the KEK wrapped with sealingKey.
func wrapKey(sealingKey [seal.KeySize]byte) []byte {
	m := hmac.New(sha256.New, sealingKey[:])
	m.Write(sealingIDLabel)
	return fmt.Appendf(nil, "%s%x", kekWrapPrefix, m.Sum(nil)[:16])
}

// loadKEK returns the store's key-encryption key: the one a peer released
// (given, when not nil), checked against the store; or the one this TEE's
// sealing key unwraps; or, on a store that has none, a new one. A zero
// sealingKey means the TEE has none. Every path leaves the check value
// and, where there is a sealing key, this TEE's wrap in the store.
func (e *Enclave) loadKEK(ctx context.Context, sealingKey [seal.KeySize]byte, given *[seal.KeySize]byte) ([seal.KeySize]byte, error) {
	hasSK := sealingKey != [seal.KeySize]byte{}
	check, err := e.getKEKRecord(ctx, kekCheckKey)
	if err != nil {
		return [seal.KeySize]byte{}, err
	}
	if given != nil {
		return e.acceptKEK(ctx, *given, check, sealingKey, hasSK)
	}
	if hasSK {
		kek, ok, err := e.unwrapKEK(ctx, sealingKey)
		switch {
		case err != nil:
			return kek, err
		case ok:
			return kek, e.completeKEK(ctx, kek, check, sealingKey, nil)
		}
	}
	if check != nil {
		return [seal.KeySize]byte{}, ErrNeedsPeer
	}
	if legacy, err := e.getKEKRecord(ctx, kekRecordKey); err != nil || legacy != nil {
		return [seal.KeySize]byte{}, errors.Join(err, ErrNeedsPeer)
	}
	kek := seal.GenerateKEK()
	var wrapAt []byte
	if hasSK {
		wrapAt = kekRecordKey
	}
	if err := e.completeKEK(ctx, kek, nil, sealingKey, wrapAt); err != nil {
		return [seal.KeySize]byte{}, err
	}
	if hasSK {
		e.log.Info("created a new key-encryption key")
	} else {
		e.log.Warn("created a new key-encryption key that no sealing key wraps: it lives as long as a replica holding it runs")
	}
	return kek, nil
}

// acceptKEK takes kek from a peer if the store's check value says it is
// this store's, or if the store has no key yet.
func (e *Enclave) acceptKEK(ctx context.Context, kek [seal.KeySize]byte, check []byte, sealingKey [seal.KeySize]byte, hasSK bool) ([seal.KeySize]byte, error) {
	if check == nil {
		if legacy, err := e.getKEKRecord(ctx, kekRecordKey); err != nil || legacy != nil {
			return [seal.KeySize]byte{}, errors.Join(err, errors.New("enclave: the store has a key-encryption key but no check value to recognize a released one by: open it once with the sealing key that made it"))
		}
	} else if !hmac.Equal(check, kekCheck(kek)) {
		return [seal.KeySize]byte{}, errors.New("enclave: the key-encryption key the peer released is not this store's")
	}
	var wrapAt []byte
	if hasSK {
		switch mine, ok, err := e.unwrapKEK(ctx, sealingKey); {
		case err != nil:
			return [seal.KeySize]byte{}, err
		case ok && mine != kek:
			return [seal.KeySize]byte{}, errors.New("enclave: the key-encryption key the peer released differs from the one this TEE's sealing key opens")
		case !ok && check == nil:
			wrapAt = kekRecordKey
		case !ok:
			wrapAt = wrapKey(sealingKey)
		}
	}
	if err := e.completeKEK(ctx, kek, check, sealingKey, wrapAt); err != nil {
		return [seal.KeySize]byte{}, err
	}
	e.log.Info("key-encryption key obtained from a peer")
	return kek, nil
}

// completeKEK writes what the store lacks of kek: its check value, if
// check is nil, and its wrap with sealingKey under wrapAt, if not nil. It
// fails if check is not kek's. The first of several replicas to make a
// store's key wins; the others fail with a conflict and must ask it.
func (e *Enclave) completeKEK(ctx context.Context, kek [seal.KeySize]byte, check []byte, sealingKey [seal.KeySize]byte, wrapAt []byte) error {
	if check != nil && !hmac.Equal(check, kekCheck(kek)) {
		return errors.New("enclave: the store's key-encryption key and its check value disagree: the host altered one")
	}
	var b store.Batch
	if check == nil {
		b.MustNotExist(tableKEK, kekCheckKey)
		b.Put(tableKEK, kekCheckKey, store.NoDay, kekCheck(kek))
	}
	if wrapAt != nil {
		wrapped, err := seal.WrapKEK(sealingKey, kek)
		if err != nil {
			return fmt.Errorf("enclave: wrapping key-encryption key: %w", err)
		}
		b.MustNotExist(tableKEK, wrapAt)
		b.Put(tableKEK, wrapAt, store.NoDay, wrapped)
	}
	if len(b.Ops) == 0 {
		return nil
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("enclave: another replica stored a key-encryption key at the same time: %w", ErrNeedsPeer)
		}
		return fmt.Errorf("enclave: storing key-encryption key: %w", err)
	}
	return nil
}

// unwrapKEK opens the KEK with sealingKey: the wrap of the replica that
// made it, or this TEE's own. ok is false when the store has no wrap that
// sealingKey opens; an error is a failure to read.
func (e *Enclave) unwrapKEK(ctx context.Context, sealingKey [seal.KeySize]byte) (kek [seal.KeySize]byte, ok bool, err error) {
	for _, key := range [][]byte{kekRecordKey, wrapKey(sealingKey)} {
		w, err := e.getKEKRecord(ctx, key)
		if err != nil || w == nil {
			if err != nil {
				return kek, false, err
			}
			continue
		}
		if kek, err := seal.UnwrapKEK(sealingKey, w); err == nil {
			return kek, true, nil
		}
	}
	return kek, false, nil
}

// getKEKRecord returns the value of one record of tableKEK, or nil.
func (e *Enclave) getKEKRecord(ctx context.Context, key []byte) ([]byte, error) {
	rec, err := e.store.Get(ctx, tableKEK, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("enclave: reading key-encryption key: %w", err)
	}
	return rec.Value, nil
}

// ReleaseKEK calls release with the key-encryption key and returns what it
// returns: the key sealed to a replica that attested (package
// keyrelease). release must not keep the key.
func (e *Enclave) ReleaseKEK(release func(kek []byte) ([]byte, error)) ([]byte, error) {
	kek := e.kek
	defer clear(kek[:])
	return release(kek[:])
}
