// Package seal encrypts the records that the backend keeps on untrusted
// storage, so that only the same attested code can read them back and any
// change the host makes to them is detected.
//
// Keys form a small hierarchy:
//
//   - The TEE sealing key (from the TEE; only the same measured code on the
//     same platform obtains it) wraps the key-encryption key with [WrapKEK].
//     The wrapped KEK is stored on the untrusted disk; [UnwrapKEK] recovers
//     it at start. On confidential VMs without a sealing key the KEK reaches
//     the backend in some other attested way (for instance from a peer
//     replica); this package only needs its 32 bytes.
//   - The key-encryption key (KEK, from [GenerateKEK]) wraps one random data
//     key per [calendar.Day]. A [Keyring] holds the KEK and the unwrapped day keys.
//   - Each day key seals the records of its day with [Keyring.Seal] and
//     opens them with [Keyring.Open].
//
// Everything is AES-256-GCM with random nonces. The additional data of a
// record binds a format version, the table name, the record key and the day,
// so a record that the host moves to another key, table or day fails to
// open with [ErrTampered], as does a record with any bit changed.
//
// A day key must be durable before anything sealed under it is
// acknowledged, or a crash could leave acknowledged records that nothing can
// open. The expected flow, under the caller's own lock for the day, is:
// look the wrapped key up in the store and [Keyring.Load] it; if the store
// has none, call [Keyring.DayKey] and persist the wrapped form with a
// put-if-absent; if another replica persisted its own key for the day
// first, Load that one instead (Load replaces the key held for the day);
// only then seal and persist records of the day.
//
// Retention deletes a day by deleting its wrapped key everywhere and calling
// [Keyring.Forget]: without the key, the day's records are unreadable,
// backups included. Opening a record of a forgotten day fails with
// [ErrDayDeleted].
//
// What sealing does NOT detect: rollback. The host may replace a record by
// an older sealed version of the same record (same table, key and day), or
// restore a whole backup, including day keys that retention has since
// deleted and upload authorizations that have since been consumed. Every
// such old record opens, because it is authentic; it is just not current.
// The enclave can narrow this with a monotonic counter that the host cannot
// reset (a TEE or hardware counter, or a quorum of attested replicas),
// bound into a sealed manifest of the store's state, and by refusing days
// older than retention by its own trusted clock; that is for the caller,
// not this package.
//
// Go cannot reliably erase key material: the garbage collector may have
// copied it, and the AES key schedule lives inside crypto/aes. Forget drops
// every reference this package holds to the day's key; the guarantee that a
// deleted day is unrecoverable rests on deleting the wrapped key from
// storage, not on wiping memory.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/conftrace/conftrace/internal/calendar"
)

// KeySize is the size in bytes of the TEE sealing key, the key-encryption
// key and the day keys.
const KeySize = 32

// Errors that Open, Load and UnwrapKEK return. Test for them with
// errors.Is; the returned errors add context such as the table and key.
var (
	// ErrTampered means the sealed bytes were not produced by this code for
	// this place: they were modified, truncated, moved to another table,
	// key or day, or sealed under another key.
	ErrTampered = errors.New("seal: sealed data is corrupt, tampered with or misplaced")
	// ErrDayDeleted means the day's key was forgotten (retention): its
	// records can no longer be opened, and no new key is made for it.
	ErrDayDeleted = errors.New("seal: the day's data key was deleted")
	// ErrNoDayKey means the keyring holds no key for the day: it was never
	// created with DayKey nor loaded with Load.
	ErrNoDayKey = errors.New("seal: no data key loaded for the day")
)

// version is the format version of every wrapped key and sealed record this
// package writes. It is the first byte of the output and part of the
// additional data, so a future format cannot be confused with this one.
const version = 1

// Overhead is how many bytes Seal adds to a plaintext: a format version
// byte, the random nonce and the GCM tag.
const Overhead = 1 + 12 + 16

// wrappedKeySize is the size of a wrapped KEK or day key.
const wrappedKeySize = Overhead + KeySize

// Labels that start the additional data, one per kind of sealed object, so
// that no kind of object can be passed off as another.
const (
	labelKEK    = "conftrace/seal kek\x00"
	labelDayKey = "conftrace/seal day key\x00"
	labelRecord = "conftrace/seal record\x00"
)

// GenerateKEK returns a new random key-encryption key.
func GenerateKEK() [KeySize]byte {
	var k [KeySize]byte
	rand.Read(k[:]) // never fails since Go 1.24
	return k
}

// WrapKEK encrypts kek under the TEE sealing key, for storage on the
// untrusted disk.
func WrapKEK(sealingKey, kek [KeySize]byte) ([]byte, error) {
	a, err := newAEAD(sealingKey[:])
	if err != nil {
		return nil, err
	}
	return sealWith(a, kek[:], kekAD()), nil
}

// UnwrapKEK recovers the key-encryption key that WrapKEK wrapped. It returns
// an error wrapping ErrTampered if wrapped was changed or was wrapped under
// another sealing key (another measurement or another platform): the two
// cannot be told apart.
func UnwrapKEK(sealingKey [KeySize]byte, wrapped []byte) ([KeySize]byte, error) {
	var kek [KeySize]byte
	a, err := newAEAD(sealingKey[:])
	if err != nil {
		return kek, err
	}
	if len(wrapped) != wrappedKeySize {
		return kek, fmt.Errorf("seal: wrapped key-encryption key is %d bytes, want %d: %w", len(wrapped), wrappedKeySize, ErrTampered)
	}
	k, err := openWith(a, wrapped, kekAD())
	if err != nil {
		return kek, fmt.Errorf("seal: cannot unwrap the key-encryption key (wrong sealing key, or tampered): %w", err)
	}
	copy(kek[:], k)
	clear(k)
	return kek, nil
}

// A Keyring holds the key-encryption key and the unwrapped day keys, and
// seals and opens records with them. It is safe for concurrent use.
type Keyring struct {
	kek cipher.AEAD

	mu        sync.RWMutex
	days      map[calendar.Day]dayKey
	forgotten map[calendar.Day]bool
}

// dayKey is one day's data key: ready to use, and wrapped for storage.
type dayKey struct {
	aead    cipher.AEAD
	wrapped []byte
}

// NewKeyring returns a keyring that wraps day keys under kek. It holds no
// day keys until DayKey or Load adds them.
func NewKeyring(kek [KeySize]byte) (*Keyring, error) {
	a, err := newAEAD(kek[:])
	if err != nil {
		return nil, err
	}
	return &Keyring{kek: a, days: make(map[calendar.Day]dayKey), forgotten: make(map[calendar.Day]bool)}, nil
}

// DayKey makes sure the keyring has a key for day, creating a random one if
// it has none, and returns the key wrapped under the KEK for the caller to
// persist. It returns the same bytes on every call for the same key. The
// caller must make the wrapped key durable before acknowledging anything
// sealed under it. For a forgotten day it returns an error wrapping
// ErrDayDeleted.
func (k *Keyring) DayKey(day calendar.Day) ([]byte, error) {
	k.mu.RLock()
	dk, ok := k.days[day]
	k.mu.RUnlock()
	if ok {
		return slices.Clone(dk.wrapped), nil
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	if k.forgotten[day] {
		return nil, fmt.Errorf("seal: day key for %s: %w", day, ErrDayDeleted)
	}
	if dk, ok := k.days[day]; ok { // created while we waited for the lock
		return slices.Clone(dk.wrapped), nil
	}
	raw := make([]byte, KeySize)
	rand.Read(raw)
	a, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	wrapped := sealWith(k.kek, raw, dayKeyAD(day))
	clear(raw)
	k.days[day] = dayKey{aead: a, wrapped: wrapped}
	return slices.Clone(wrapped), nil
}

// Load unwraps a day key that DayKey returned (in this or an earlier run)
// and makes it the keyring's key for day, replacing any key it held for the
// day. It returns an error wrapping ErrTampered if wrapped was changed, was
// wrapped for another day or under another KEK, and one wrapping
// ErrDayDeleted if the day was forgotten.
func (k *Keyring) Load(day calendar.Day, wrapped []byte) error {
	if len(wrapped) != wrappedKeySize {
		return fmt.Errorf("seal: wrapped day key for %s is %d bytes, want %d: %w", day, len(wrapped), wrappedKeySize, ErrTampered)
	}
	raw, err := openWith(k.kek, wrapped, dayKeyAD(day))
	if err != nil {
		return fmt.Errorf("seal: cannot unwrap the day key for %s: %w", day, err)
	}
	a, err := newAEAD(raw)
	clear(raw)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.forgotten[day] {
		return fmt.Errorf("seal: day key for %s: %w", day, ErrDayDeleted)
	}
	k.days[day] = dayKey{aead: a, wrapped: slices.Clone(wrapped)}
	return nil
}

// Forget drops the key for day, for retention. Afterwards Seal, Open,
// DayKey and Load for the day fail with ErrDayDeleted. The caller deletes
// the wrapped key from storage; that is what makes the day unrecoverable.
func (k *Keyring) Forget(day calendar.Day) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.days, day)
	k.forgotten[day] = true
}

// Days returns the days the keyring holds keys for, in ascending order.
func (k *Keyring) Days() []calendar.Day {
	k.mu.RLock()
	defer k.mu.RUnlock()
	days := make([]calendar.Day, 0, len(k.days))
	for d := range k.days {
		days = append(days, d)
	}
	slices.Sort(days)
	return days
}

// Seal encrypts plaintext as the record stored under key in table, for day.
// The result opens only with Open and the same day, table and key. The
// keyring must hold the day's key (see DayKey and Load).
//
// Each day key seals with random 96-bit nonces, so it must not seal more
// than 2^32 records; at conftrace's scale a day sees far fewer.
func (k *Keyring) Seal(day calendar.Day, table string, key, plaintext []byte) ([]byte, error) {
	a, err := k.dayAEAD(day)
	if err != nil {
		return nil, fmt.Errorf("seal: sealing %s record %s: %w", table, keyString(key), err)
	}
	return sealWith(a, plaintext, recordAD(day, table, key)), nil
}

// Open decrypts a record that Seal sealed for the same day, table and key.
// It returns an error wrapping ErrTampered if the record was changed or
// belongs elsewhere, ErrDayDeleted if the day was forgotten, and
// ErrNoDayKey if the keyring holds no key for the day.
func (k *Keyring) Open(day calendar.Day, table string, key, sealed []byte) ([]byte, error) {
	a, err := k.dayAEAD(day)
	if err != nil {
		return nil, fmt.Errorf("seal: opening %s record %s: %w", table, keyString(key), err)
	}
	pt, err := openWith(a, sealed, recordAD(day, table, key))
	if err != nil {
		return nil, fmt.Errorf("seal: opening %s record %s of %s: %w", table, keyString(key), day, err)
	}
	return pt, nil
}

func (k *Keyring) dayAEAD(day calendar.Day) (cipher.AEAD, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if dk, ok := k.days[day]; ok {
		return dk.aead, nil
	}
	if k.forgotten[day] {
		return nil, fmt.Errorf("%s: %w", day, ErrDayDeleted)
	}
	return nil, fmt.Errorf("%s: %w", day, ErrNoDayKey)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	a, err := cipher.NewGCMWithRandomNonce(b)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return a, nil
}

// sealWith returns version || nonce || ciphertext || tag. The version byte
// is authenticated through ad, which always contains it.
func sealWith(a cipher.AEAD, plaintext, ad []byte) []byte {
	out := make([]byte, 1, Overhead+len(plaintext))
	out[0] = version
	return a.Seal(out, nil, plaintext, ad)
}

func openWith(a cipher.AEAD, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%d bytes is too short: %w", len(sealed), ErrTampered)
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("unknown format version %d: %w", sealed[0], ErrTampered)
	}
	pt, err := a.Open(nil, nil, sealed[1:], ad)
	if err != nil {
		return nil, ErrTampered
	}
	return pt, nil
}

func kekAD() []byte {
	return append([]byte(labelKEK), version)
}

func dayKeyAD(day calendar.Day) []byte {
	ad := make([]byte, 0, len(labelDayKey)+1+4)
	ad = append(ad, labelDayKey...)
	ad = append(ad, version)
	return binary.BigEndian.AppendUint32(ad, uint32(day))
}

// recordAD encodes the record's place unambiguously: the table and key are
// length-prefixed.
func recordAD(day calendar.Day, table string, key []byte) []byte {
	ad := make([]byte, 0, len(labelRecord)+1+4+4+len(table)+4+len(key))
	ad = append(ad, labelRecord...)
	ad = append(ad, version)
	ad = binary.BigEndian.AppendUint32(ad, uint32(day))
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(table)))
	ad = append(ad, table...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(key)))
	return append(ad, key...)
}

// keyString names a record key in errors without flooding them.
func keyString(key []byte) string {
	const shown = 16
	if len(key) > shown {
		return hex.EncodeToString(key[:shown]) + "…"
	}
	return hex.EncodeToString(key)
}
