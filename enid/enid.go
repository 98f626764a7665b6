// Package enid derives the rotating Bluetooth identifiers of Exposure
// Notification, exactly as the Google/Apple Exposure Notification (GAEN)
// cryptography specification v1.2 defines them, so that keys and identifiers
// interoperate with existing GAEN apps and key servers.
//
// Every day a device makes a fresh random Temporary Exposure Key ([TEK]).
// From it the device derives, for each 10-minute [Interval] of the day, a
// Rolling Proximity Identifier ([RPI]) that it broadcasts over Bluetooth and
// that nobody without the TEK can link to the device or to the device's other
// RPIs. Next to each RPI it broadcasts Associated Encrypted Metadata (AEM): a
// few bytes such as the transmit power, encrypted so that only holders of the
// TEK can read them. When a user tests positive, publishing (or uploading to
// the conftrace backend) the TEKs of the infectious days lets anyone holding
// the TEKs recompute every RPI the device broadcast.
//
// The spec defines the derivation as
//
//	RPIK = HKDF-SHA256(TEK, salt = none, info = "EN-RPIK", 16 bytes)
//	RPI  = AES-128(RPIK, "EN-RPI" || 0x00 × 6 || LE32(interval))
//	AEMK = HKDF-SHA256(TEK, salt = none, info = "EN-AEMK", 16 bytes)
//	AEM  = AES-128-CTR(AEMK, IV = RPI, metadata)
//
// A phone app makes one [Key] per day and asks it for the RPI of the current
// interval:
//
//	now := time.Now()
//	key, err := enid.NewKey(enid.NewTEK(), enid.IntervalOf(now).RollingStart(), enid.RollingPeriod)
//	...
//	rpi := key.RPI(enid.IntervalOf(now))
//	aem := key.EncryptMetadata(rpi, metadata)
//
// A backend or health-authority tool that receives a TEK with its rolling
// start and period makes the same [Key] and derives all its RPIs at once with
// [Key.AppendRPIs], which costs one HKDF and one AES block per interval and
// allocates nothing per identifier.
//
// The TEK is the only secret: keep it in the device's protected storage and
// release it only with the user's consent.
package enid

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// IntervalLength is the time each RPI is broadcast for: the length of an
// [Interval].
const IntervalLength = 10 * time.Minute

// intervalSeconds is IntervalLength in the unit the spec counts in.
const intervalSeconds = int64(IntervalLength / time.Second)

// RollingPeriod is the number of intervals in a day (144): the default and
// the maximum number of intervals a TEK is valid for.
const RollingPeriod = 144

// TEK is a Temporary Exposure Key: the random daily secret from which all of
// a day's identifiers are derived.
type TEK [16]byte

// RPIK is a Rolling Proximity Identifier Key, derived from a [TEK].
type RPIK [16]byte

// AEMK is an Associated Encrypted Metadata Key, derived from a [TEK].
type AEMK [16]byte

// RPI is a Rolling Proximity Identifier: the 16 bytes a device broadcasts
// during one interval.
type RPI [16]byte

// Interval is an ENIntervalNumber: the number of 10-minute intervals since
// the Unix epoch (1970-01-01 00:00 UTC).
type Interval uint32

// Errors returned by [NewKey].
var (
	// ErrRollingPeriod means a rolling period outside 1..RollingPeriod.
	ErrRollingPeriod = errors.New("enid: rolling period out of range")
	// ErrIntervalRange means a key would be valid past the last
	// representable interval.
	ErrIntervalRange = errors.New("enid: interval out of range")
)

// NewTEK returns a fresh random TEK from crypto/rand.
func NewTEK() TEK {
	var t TEK
	rand.Read(t[:]) // never fails: crypto/rand crashes the program instead
	return t
}

// RPIK derives the key that generates the TEK's RPIs.
func (t TEK) RPIK() RPIK {
	return RPIK(derive(t, "EN-RPIK"))
}

// AEMK derives the key that encrypts the TEK's metadata.
func (t TEK) AEMK() AEMK {
	return AEMK(derive(t, "EN-AEMK"))
}

func derive(t TEK, info string) [16]byte {
	k, err := hkdf.Key(sha256.New, t[:], nil, info, 16)
	if err != nil {
		// Only reachable if the output length exceeded 255 hash blocks.
		panic("enid: hkdf: " + err.Error())
	}
	return [16]byte(k)
}

// IntervalOf returns the interval that contains t. Times before 1970 map to
// interval 0 and times past the last interval (about year 83,000) to the
// last one.
func IntervalOf(t time.Time) Interval {
	s := t.Unix()
	if s < 0 {
		return 0
	}
	if s/intervalSeconds > math.MaxUint32 {
		return math.MaxUint32
	}
	return Interval(s / intervalSeconds)
}

// Time returns the start of the interval.
func (i Interval) Time() time.Time {
	return time.Unix(int64(i)*intervalSeconds, 0).UTC()
}

// RollingStart returns the first interval of the UTC day that contains i:
// the rolling start of a TEK generated during i.
func (i Interval) RollingStart() Interval {
	return i - i%RollingPeriod
}

// Key is a TEK together with the intervals it is valid for and its derived
// ciphers, so that deriving many identifiers costs one HKDF in total. A Key
// is safe for concurrent use.
type Key struct {
	tek    TEK
	start  Interval
	period int
	rpi    cipher.Block

	aemOnce sync.Once // AEMK is derived on first use: most users never need it
	aem     cipher.Block
}

// NewKey returns the key for tek, valid for period intervals from start.
// period must be in 1..RollingPeriod; GAEN keys cover a day, so most callers
// pass start = some interval's RollingStart and period = RollingPeriod, but
// keys released early in their day have a shorter period.
func NewKey(tek TEK, start Interval, period int) (*Key, error) {
	if period < 1 || period > RollingPeriod {
		return nil, fmt.Errorf("%w: %d is not in 1..%d", ErrRollingPeriod, period, RollingPeriod)
	}
	if uint64(start)+uint64(period) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: a key starting at %d cannot last %d intervals", ErrIntervalRange, start, period)
	}
	rpik := tek.RPIK()
	b, err := aes.NewCipher(rpik[:])
	if err != nil {
		return nil, fmt.Errorf("enid: %w", err) // unreachable: the key is 16 bytes
	}
	return &Key{tek: tek, start: start, period: period, rpi: b}, nil
}

// TEK returns the key's TEK.
func (k *Key) TEK() TEK { return k.tek }

// Start returns the first interval the key is valid for (its rolling start
// interval number).
func (k *Key) Start() Interval { return k.start }

// Period returns the number of intervals the key is valid for (its rolling
// period).
func (k *Key) Period() int { return k.period }

// End returns the first interval after the key's validity.
func (k *Key) End() Interval { return k.start + Interval(k.period) }

// Contains reports whether the key is valid during interval i.
func (k *Key) Contains(i Interval) bool { return i >= k.start && i < k.End() }

// RPI returns the identifier of interval i. It does not check that the key
// is valid during i: matching tolerates clock skew between devices, so
// callers decide how far outside the validity to look.
func (k *Key) RPI(i Interval) RPI {
	var r RPI
	k.rpiInto(&r, i)
	return r
}

// PutRPI writes the identifier of interval i into r, as RPI returns it.
// RPI's result goes through the heap (the block cipher's interface makes
// its buffer escape): a caller deriving thousands, into memory it owns
// already, saves an allocation each.
func (k *Key) PutRPI(r *RPI, i Interval) { k.rpiInto(r, i) }

// rpiInto writes the RPI of i into r, building the padded block in place so
// that no temporary buffer escapes to the heap.
func (k *Key) rpiInto(r *RPI, i Interval) {
	copy(r[:6], "EN-RPI")
	clear(r[6:12])
	binary.LittleEndian.PutUint32(r[12:], uint32(i))
	k.rpi.Encrypt(r[:], r[:])
}

// AppendRPIs appends the RPIs of every interval the key is valid for, in
// order from Start, to dst and returns the extended slice. If dst has room
// for Period more RPIs it allocates nothing.
func (k *Key) AppendRPIs(dst []RPI) []RPI {
	dst = slices.Grow(dst, k.period)
	n := len(dst)
	dst = dst[:n+k.period]
	for j := range k.period {
		k.rpiInto(&dst[n+j], k.start+Interval(j))
	}
	return dst
}

func (k *Key) aemBlock() cipher.Block {
	k.aemOnce.Do(func() {
		aemk := k.tek.AEMK()
		b, err := aes.NewCipher(aemk[:])
		if err != nil {
			panic("enid: " + err.Error()) // unreachable: the key is 16 bytes
		}
		k.aem = b
	})
	return k.aem
}

// EncryptMetadata returns the AEM that is broadcast with rpi: metadata
// encrypted with the key's AEMK. GAEN v1.2 metadata is 4 bytes (version,
// transmit power, two reserved bytes); any length is accepted.
func (k *Key) EncryptMetadata(rpi RPI, metadata []byte) []byte {
	return k.AppendAEM(nil, rpi, metadata)
}

// AppendAEM appends to dst metadata encrypted with the key's AEMK under
// rpi, as [Key.EncryptMetadata] returns it, and returns the extended
// slice. AES-CTR is its own inverse, so given an AEM it appends the
// metadata. If dst has room for the metadata rounded up to whole 16-byte
// AES blocks, it allocates nothing: that room past the result is its
// scratch space, left zeroed. To encrypt or decrypt in place, pass
// metadata[:0] as dst.
func (k *Key) AppendAEM(dst []byte, rpi RPI, metadata []byte) []byte {
	// AES-CTR by hand rather than with cipher.NewCTR, whose stream costs
	// an allocation of half a kilobyte and more time than the block
	// itself. The keystream is made in place in dst's spare room, because
	// a buffer passed to a cipher.Block escapes to the heap.
	n, start := len(metadata), len(dst)
	blocks := (n + aes.BlockSize - 1) / aes.BlockSize
	dst = slices.Grow(dst, blocks*aes.BlockSize)
	out := dst[start : start+blocks*aes.BlockSize]
	block := k.aemBlock()
	// The counter starts at the RPI and counts as a 128-bit big-endian
	// integer, as cipher.NewCTR counts. It is copied in whole: two 8-byte
	// stores that the cipher then read as one 16-byte load would stall
	// the store-to-load forwarding, which cost as much again as the block.
	ctr := rpi
	for off := 0; off < n; off += aes.BlockSize {
		// Read before ks is written: metadata may be dst itself.
		var m [aes.BlockSize]byte
		mn := copy(m[:], metadata[off:])
		ks := out[off : off+aes.BlockSize]
		copy(ks, ctr[:])
		block.Encrypt(ks, ks)
		for i := range mn {
			ks[i] ^= m[i]
		}
		for i := len(ctr) - 1; i >= 0; i-- {
			ctr[i]++
			if ctr[i] != 0 {
				break
			}
		}
	}
	// Past the metadata lies keystream, which must not linger.
	clear(out[n:])
	return dst[:start+n]
}

// DecryptMetadata returns the metadata of an AEM heard with rpi. AES-CTR is
// not authenticated: a wrong key or a damaged AEM yields wrong metadata, not
// an error, so callers must sanity-check the fields they use.
func (k *Key) DecryptMetadata(rpi RPI, aem []byte) []byte {
	// CTR mode is its own inverse.
	return k.AppendAEM(nil, rpi, aem)
}
