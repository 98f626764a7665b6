// Package contactlog records, on a device, the encounters it has had with
// other devices, and encodes them for upload to the conftrace backend.
//
// An encounter is a [Tuple]: the Rolling Proximity Identifier (RPI, see
// package enid) this device was broadcasting, the RPI it heard from the other
// device, the interval in which they met, how long, and how strong the
// signal was (its attenuation). Both devices of an encounter log it, each
// from its own side: if A broadcasting a1 hears C broadcasting c1, A logs
// (a1, c1, …) while C logs (c1, a1, …), and [Tuple.Mirror] turns one into the
// other. The backend uses this to match reciprocally: an exposure is reported
// only when an infected device uploaded the mirror of a tuple the polling
// device holds, so a device cannot claim an exposure by replaying RPIs it
// merely heard.
//
// A [Log] keeps a device's tuples in one file, encrypted and authenticated
// with a 32-byte device key that the app keeps in the platform keystore: the
// log says who the user met and when, which is exactly what an attacker who
// copies the phone's storage or a backup must not learn, and a modified file
// must not silently change what the app uploads. An app opens the log once,
// appends tuples as its Bluetooth scans produce them (batching a scan
// cycle's tuples into one Append), prunes it daily, and reads a window of it
// for exposure polls and, with consent, for upload:
//
//	cl, err := contactlog.Open(ctx, path, deviceKey, nil)
//	...
//	err = cl.Append(ctx, tuples...)
//	err = cl.Prune(ctx, time.Now())
//	batch, err := contactlog.AppendBatch(nil, cl.Tuples(from, to))
//
// [AppendBatch] and [UnmarshalBatch] are the wire encoding of a list of
// tuples, used in requests to the backend. A batch is
//
//	version (1 byte, = 1) || count (4 bytes, big-endian) || count × tuple
//
// and a tuple is TupleSize (39) bytes:
//
//	own RPI (16) || heard RPI (16) || interval (4, big-endian) ||
//	duration in minutes (2, big-endian) || attenuation in dB (1)
//
// The count makes truncation detectable, and the fixed tuple size lets a
// receiver check the whole length before it allocates anything.
package contactlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/conftrace/conftrace/enid"
)

// TupleSize is the size of one encoded tuple.
const TupleSize = 16 + 16 + 4 + 2 + 1

// BatchVersion is the version byte that starts a batch.
const BatchVersion = 1

// batchHeaderSize is the version byte and the count.
const batchHeaderSize = 1 + 4

// MaxDuration is the longest duration, in minutes, a tuple can record. Both
// devices change RPI every 10 to 20 minutes, so one pair of RPIs cannot be
// heard together for long; an hour leaves room for late rotation while
// refusing nonsense. Longer encounters are several tuples.
const MaxDuration = 60

// Errors returned when decoding tuples and batches. Each is returned
// wrapped with details; test for them with errors.Is.
var (
	// ErrTruncated means the input ended before the encoding did.
	ErrTruncated = errors.New("contactlog: truncated input")
	// ErrTrailing means bytes followed the end of the encoding.
	ErrTrailing = errors.New("contactlog: trailing bytes")
	// ErrVersion means an encoding version this package does not know.
	ErrVersion = errors.New("contactlog: unsupported version")
	// ErrTooMany means a batch holds more tuples than the caller accepts.
	ErrTooMany = errors.New("contactlog: too many tuples")
	// ErrInvalid means a tuple field is out of range.
	ErrInvalid = errors.New("contactlog: invalid tuple")
)

// Tuple records one encounter, as seen by the device that logs it.
type Tuple struct {
	// Own is the RPI this device was broadcasting.
	Own enid.RPI
	// Heard is the RPI this device heard from the other device.
	Heard enid.RPI
	// Interval is the interval in which the encounter began.
	Interval enid.Interval
	// Duration is how long the devices were in range, in minutes, at most
	// MaxDuration.
	Duration uint16
	// Attenuation is the signal loss in dB (transmit power minus received
	// signal strength); lower means closer.
	Attenuation uint8
}

// Mirror returns the tuple the other device of the encounter logs: Own and
// Heard swapped, everything else equal.
func (t Tuple) Mirror() Tuple {
	t.Own, t.Heard = t.Heard, t.Own
	return t
}

func (t Tuple) check() error {
	if t.Duration > MaxDuration {
		return fmt.Errorf("%w: duration %d minutes exceeds %d", ErrInvalid, t.Duration, MaxDuration)
	}
	return nil
}

// AppendBinary appends the TupleSize-byte encoding of t to b. It fails only
// if t is invalid.
func (t Tuple) AppendBinary(b []byte) ([]byte, error) {
	if err := t.check(); err != nil {
		return b, err
	}
	b = append(b, t.Own[:]...)
	b = append(b, t.Heard[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(t.Interval))
	b = binary.BigEndian.AppendUint16(b, t.Duration)
	return append(b, t.Attenuation), nil
}

// MarshalBinary returns the TupleSize-byte encoding of t.
func (t Tuple) MarshalBinary() ([]byte, error) {
	return t.AppendBinary(make([]byte, 0, TupleSize))
}

// UnmarshalBinary decodes exactly one TupleSize-byte tuple into t. On error
// t is unchanged.
func (t *Tuple) UnmarshalBinary(data []byte) error {
	if len(data) < TupleSize {
		return fmt.Errorf("%w: tuple needs %d bytes, got %d", ErrTruncated, TupleSize, len(data))
	}
	if len(data) > TupleSize {
		return fmt.Errorf("%w: %d bytes after a tuple", ErrTrailing, len(data)-TupleSize)
	}
	u := decodeTuple(data)
	if err := u.check(); err != nil {
		return err
	}
	*t = u
	return nil
}

// decodeTuple decodes the first TupleSize bytes of b, which the caller has
// checked are there.
func decodeTuple(b []byte) Tuple {
	return Tuple{
		Own:         enid.RPI(b[0:16]),
		Heard:       enid.RPI(b[16:32]),
		Interval:    enid.Interval(binary.BigEndian.Uint32(b[32:36])),
		Duration:    binary.BigEndian.Uint16(b[36:38]),
		Attenuation: b[38],
	}
}

// AppendBatch appends the batch encoding of tuples to b.
func AppendBatch(b []byte, tuples []Tuple) ([]byte, error) {
	if uint64(len(tuples)) > math.MaxUint32 {
		return b, fmt.Errorf("%w: %d tuples do not fit a batch", ErrTooMany, len(tuples))
	}
	orig := b
	b = append(b, BatchVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tuples)))
	var err error
	for i, t := range tuples {
		if b, err = t.AppendBinary(b); err != nil {
			return orig, fmt.Errorf("%w (tuple %d)", err, i)
		}
	}
	return b, nil
}

// UnmarshalBatch decodes a batch holding at most maxTuples tuples. data
// must be exactly one batch: truncated input (ErrTruncated), trailing bytes
// (ErrTrailing), an unknown version (ErrVersion), a batch of more than
// maxTuples tuples (ErrTooMany) and an invalid tuple (ErrInvalid) are each
// refused with their own error. Nothing is allocated before the length is
// checked, so maxTuples bounds the memory an untrusted sender can make the
// caller use.
func UnmarshalBatch(data []byte, maxTuples int) ([]Tuple, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrTruncated)
	}
	if data[0] != BatchVersion {
		return nil, fmt.Errorf("%w: batch version %d, want %d", ErrVersion, data[0], BatchVersion)
	}
	if len(data) < batchHeaderSize {
		return nil, fmt.Errorf("%w: batch header needs %d bytes, got %d", ErrTruncated, batchHeaderSize, len(data))
	}
	count := binary.BigEndian.Uint32(data[1:5])
	if uint64(count) > uint64(max(maxTuples, 0)) {
		return nil, fmt.Errorf("%w: batch of %d tuples, limit %d", ErrTooMany, count, maxTuples)
	}
	// uint64 so that count × TupleSize cannot overflow on 32-bit platforms.
	need := uint64(batchHeaderSize) + uint64(count)*TupleSize
	if uint64(len(data)) < need {
		return nil, fmt.Errorf("%w: batch of %d tuples needs %d bytes, got %d", ErrTruncated, count, need, len(data))
	}
	if uint64(len(data)) > need {
		return nil, fmt.Errorf("%w: %d bytes after a batch of %d tuples", ErrTrailing, uint64(len(data))-need, count)
	}
	tuples := make([]Tuple, count)
	for i := range tuples {
		tuples[i] = decodeTuple(data[batchHeaderSize+i*TupleSize:])
		if err := tuples[i].check(); err != nil {
			return nil, fmt.Errorf("%w (tuple %d)", err, i)
		}
	}
	return tuples, nil
}
