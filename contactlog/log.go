package contactlog

import (
	"bytes"
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/enid"
)

// KeySize is the size of a device key.
const KeySize = 32

// DefaultRetention is how long [Log.Prune] keeps sightings unless
// [Options.Retention] says otherwise: the 14 days of the exposure window.
const DefaultRetention = 14 * 24 * time.Hour

// Errors returned when a log file cannot be read.
var (
	// ErrCorrupt means the file is not a well-formed contact log: it is
	// truncated, extended, or not a contact log at all.
	ErrCorrupt = errors.New("contactlog: corrupt log file")
	// ErrTampered means the file is well-formed but fails authentication:
	// it was modified, or it was written under another device key (the
	// two are indistinguishable by design).
	ErrTampered = errors.New("contactlog: log file fails authentication (modified, or another device key)")
)

// The file format (version 2) is
//
//	magic (21 bytes) || version (1) || ciphertext length (8, big-endian) ||
//	nonce (12) || AES-256-GCM ciphertext, with its 16-byte tag, of
//	sighting count (4, big-endian) || count × sighting
//
// where everything before the nonce is the additional data. The length
// field lets a reader tell truncation (ErrCorrupt) from modification
// (ErrTampered).
const (
	fileMagic      = "conftrace-contactlog\n"
	fileVersion    = 2
	fileHeaderSize = len(fileMagic) + 1 + 8
	nonceSize      = 12
	tagSize        = 16
)

// Options configure a [Log]. The zero value (or nil) gives the defaults.
type Options struct {
	// Retention is how far back Prune keeps sightings; zero means
	// DefaultRetention.
	Retention time.Duration
}

// Log is a device's contact log: an encrypted file of sightings, mirrored in
// memory. It is safe for concurrent use by the goroutines of one process;
// a file must not be opened by two Logs at once.
//
// Every change rewrites the whole file atomically: the new content goes to a
// temporary file in the same directory, which is synced and then renamed
// over the log, and the directory is synced. A crash at any point leaves
// either the old or the new log, never a mix, and the format needs no
// recovery logic that an attacker could exploit to make a cut-down file
// look like a crash. At the sizes a phone sees (two weeks of encounters,
// thousands of sightings of 22 bytes) a rewrite is a few hundred kilobytes;
// batch a scan cycle's sightings into one Append. Each write uses a fresh
// random nonce, which is safe for far more writes (2^32) than a device
// makes.
//
// Encryption protects the log against anyone who reads the device's
// storage without the key and detects modification; it cannot detect an
// attacker who replaces the file with an older copy written under the same
// key.
type Log struct {
	path      string
	aead      cipher.AEAD
	retention time.Duration

	mu        sync.Mutex
	sightings []Sighting // sorted by Interval, then in order of arrival
}

// Open opens the log at path, creating an empty one if there is no file,
// and reads it into memory. key is the device key, which the app should
// keep in the platform keystore. A file that was modified or written under
// another key is refused with ErrTampered, a truncated or malformed one
// with ErrCorrupt, a file of a future format with ErrVersion. Temporary
// files left behind by a crash during a write are removed.
func Open(ctx context.Context, path string, key [KeySize]byte, opts *Options) (*Log, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("contactlog: open %s: %w", path, err)
	}
	retention := DefaultRetention
	if opts != nil && opts.Retention != 0 {
		if opts.Retention < 0 {
			return nil, fmt.Errorf("contactlog: negative retention %v", opts.Retention)
		}
		retention = opts.Retention
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("contactlog: %w", err) // unreachable: the key is 32 bytes
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("contactlog: %w", err)
	}
	l := &Log{path: path, aead: aead, retention: retention}

	atomicfile.RemoveTemps(path)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Write the empty log now, so that a path that cannot be written
		// fails here rather than at the first encounter.
		if err := l.save(nil); err != nil {
			return nil, err
		}
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("contactlog: %w", err)
	}
	if l.sightings, err = decodeFile(aead, data); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return l, nil
}

// Append adds sightings to the log and returns once they are durably on
// disk. If any sighting is invalid (ErrInvalid) or the write fails, nothing
// is added.
func (l *Log) Append(ctx context.Context, sightings ...Sighting) error {
	for i, s := range sightings {
		if err := s.check(); err != nil {
			return fmt.Errorf("%w (sighting %d)", err, i)
		}
	}
	if len(sightings) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("contactlog: append: %w", err)
	}
	next := make([]Sighting, 0, len(l.sightings)+len(sightings))
	next = append(append(next, l.sightings...), sightings...)
	slices.SortStableFunc(next, func(a, b Sighting) int { return cmp.Compare(a.Interval, b.Interval) })
	return l.replace(next)
}

// Sightings returns a copy of the sightings whose interval is in
// [from, to), ordered by interval.
func (l *Log) Sightings(from, to enid.Interval) []Sighting {
	l.mu.Lock()
	defer l.mu.Unlock()
	lo, hi := l.search(from), l.search(to)
	if lo >= hi {
		return nil
	}
	return slices.Clone(l.sightings[lo:hi])
}

// Len returns the number of sightings in the log.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sightings)
}

// Prune drops the sightings whose interval began more than the retention
// window before now, and returns once the log on disk no longer holds them.
func (l *Log) Prune(ctx context.Context, now time.Time) error {
	cutoff := enid.IntervalOf(now.Add(-l.retention))
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("contactlog: prune: %w", err)
	}
	i := l.search(cutoff)
	if i == 0 {
		return nil
	}
	return l.replace(slices.Clone(l.sightings[i:]))
}

// search returns the index of the first sighting at or after interval i.
func (l *Log) search(i enid.Interval) int {
	n, _ := slices.BinarySearchFunc(l.sightings, i, func(s Sighting, i enid.Interval) int {
		// Never report equality, so the search lands before the first
		// sighting of interval i.
		if s.Interval < i {
			return -1
		}
		return 1
	})
	return n
}

// replace writes next to disk and then makes it the log's content. The
// caller holds l.mu.
func (l *Log) replace(next []Sighting) error {
	if err := l.save(next); err != nil {
		return err
	}
	clear(l.sightings) // do not leave old encounters lying around in memory
	l.sightings = next
	return nil
}

// save atomically replaces the file with one holding sightings.
func (l *Log) save(sightings []Sighting) error {
	data, err := encodeFile(l.aead, sightings)
	if err != nil {
		return fmt.Errorf("contactlog: %w", err)
	}
	if err := atomicfile.Write(l.path, data, 0o600); err != nil {
		return fmt.Errorf("contactlog: write %s: %w", l.path, err)
	}
	return nil
}

func encodeFile(aead cipher.AEAD, sightings []Sighting) ([]byte, error) {
	plain, err := appendSightings(nil, sightings)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	ctLen := len(plain) + aead.Overhead()
	ad := make([]byte, 0, fileHeaderSize)
	ad = append(ad, fileMagic...)
	ad = append(ad, fileVersion)
	ad = binary.BigEndian.AppendUint64(ad, uint64(ctLen))
	nonce := make([]byte, nonceSize)
	rand.Read(nonce) // never fails: crypto/rand crashes the program instead
	out := make([]byte, 0, fileHeaderSize+nonceSize+ctLen)
	out = append(append(out, ad...), nonce...)
	return aead.Seal(out, nonce, plain, ad), nil
}

// decodeFile checks and decrypts a log file. Errors are ErrCorrupt,
// ErrVersion or ErrTampered, wrapped.
func decodeFile(aead cipher.AEAD, data []byte) ([]Sighting, error) {
	magicLen := min(len(data), len(fileMagic))
	if !bytes.Equal(data[:magicLen], []byte(fileMagic[:magicLen])) {
		return nil, fmt.Errorf("%w: not a contact log", ErrCorrupt)
	}
	if len(data) < fileHeaderSize+nonceSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCorrupt, len(data))
	}
	if v := data[len(fileMagic)]; v != fileVersion {
		return nil, fmt.Errorf("%w: log file version %d, want %d", ErrVersion, v, fileVersion)
	}
	ctLen := binary.BigEndian.Uint64(data[len(fileMagic)+1 : fileHeaderSize])
	have := uint64(len(data) - fileHeaderSize - nonceSize)
	if ctLen != have {
		return nil, fmt.Errorf("%w: header says %d bytes of ciphertext, file has %d (truncated or extended)", ErrCorrupt, ctLen, have)
	}
	if ctLen < tagSize {
		return nil, fmt.Errorf("%w: ciphertext shorter than its tag", ErrCorrupt)
	}
	ad, nonce, ct := data[:fileHeaderSize], data[fileHeaderSize:fileHeaderSize+nonceSize], data[fileHeaderSize+nonceSize:]
	plain, err := aead.Open(nil, nonce, ct, ad)
	if err != nil {
		return nil, ErrTampered
	}
	defer clear(plain)
	// The plaintext is authenticated, so its count is trusted; the
	// length check in parseSightings still bounds the allocation.
	sightings, rest, err := parseSightings(plain, math.MaxInt)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("%w: %d bytes after the sightings", ErrTrailing, len(rest))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	// Files this package writes are sorted; sorting again costs little and
	// keeps Sightings correct whatever wrote the file.
	slices.SortStableFunc(sightings, func(a, b Sighting) int { return cmp.Compare(a.Interval, b.Interval) })
	return sightings, nil
}
