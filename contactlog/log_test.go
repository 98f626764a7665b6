package contactlog

import (
	"bytes"
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/enid"
)

var testKey = [KeySize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 31: 0xff}

func openT(t *testing.T, path string, opts *Options) *Log {
	t.Helper()
	l, err := Open(t.Context(), path, testKey, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func all(l *Log) []Sighting { return l.Sightings(0, math.MaxUint32) }

// newLogFile writes a log with a few sightings and returns its path and
// sightings.
func newLogFile(t *testing.T) (string, []Sighting) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "contacts.log")
	ss := randomSightings(7, 3)
	for i := range ss {
		ss[i].Interval = enid.Interval(2642976 + i)
	}
	if err := openT(t, path, nil).Append(t.Context(), ss...); err != nil {
		t.Fatal(err)
	}
	return path, ss
}

func TestLogRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.log")
	l := openT(t, path, nil)
	if l.Len() != 0 {
		t.Fatalf("a new log holds %d sightings", l.Len())
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Open did not create the file: %v", err)
	}
	ss := randomSightings(8, 50)
	slices.SortStableFunc(ss, func(a, b Sighting) int { return cmp.Compare(a.Interval, b.Interval) })
	if err := l.Append(t.Context(), ss[:20]...); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context(), ss[20:]...); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context()); err != nil {
		t.Fatalf("appending nothing: %v", err)
	}
	if got := all(l); !slices.Equal(got, ss) {
		t.Errorf("in memory: got %d sightings, want the %d appended", len(got), len(ss))
	}
	re := openT(t, path, nil)
	if got := all(re); !slices.Equal(got, ss) {
		t.Errorf("after reopening: got %d sightings, want the %d appended", len(got), len(ss))
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if bytes.Contains(data, s.Heard[:8]) {
			t.Fatal("the file holds an RPI in the clear")
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("log file mode %v is readable by others", fi.Mode().Perm())
	}
}

func TestLogWindow(t *testing.T) {
	l := openT(t, filepath.Join(t.TempDir(), "contacts.log"), nil)
	mk := func(i enid.Interval, att uint8) Sighting { return Sighting{Interval: i, Minutes: 1, Attenuation: att} }
	// Appended out of order; two sightings share interval 20.
	in := []Sighting{mk(30, 1), mk(10, 2), mk(20, 3), mk(40, 4), mk(20, 5)}
	if err := l.Append(t.Context(), in...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, to enid.Interval
		want     []uint8 // attenuations, which identify the sightings
	}{
		{0, math.MaxUint32, []uint8{2, 3, 5, 1, 4}},
		{20, 30, []uint8{3, 5}},
		{20, 31, []uint8{3, 5, 1}},
		{11, 20, nil},
		{21, 30, nil},
		{40, 41, []uint8{4}},
		{41, 100, nil},
		{30, 20, nil},
		{20, 20, nil},
	}
	for _, tt := range tests {
		var got []uint8
		for _, s := range l.Sightings(tt.from, tt.to) {
			got = append(got, s.Attenuation)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Sightings(%d, %d) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
	// The result is a copy.
	got := l.Sightings(0, math.MaxUint32)
	got[0].Attenuation = 99
	if l.Sightings(10, 11)[0].Attenuation != 2 {
		t.Error("changing the result of Sightings changed the log")
	}
}

func TestLogPrune(t *testing.T) {
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) Sighting { return Sighting{Interval: enid.IntervalOf(now.Add(-d)), Minutes: 1} }
	tests := []struct {
		name string
		opts *Options
		keep int
	}{
		{"default 14 days", nil, 3},
		{"zero means default", &Options{}, 3},
		{"2 days", &Options{Retention: 48 * time.Hour}, 2},
		{"30 days", &Options{Retention: 30 * 24 * time.Hour}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "contacts.log")
			l := openT(t, path, tt.opts)
			ss := []Sighting{ago(20 * 24 * time.Hour), ago(14*24*time.Hour - time.Minute), ago(24 * time.Hour), ago(0)}
			if err := l.Append(t.Context(), ss...); err != nil {
				t.Fatal(err)
			}
			if err := l.Prune(t.Context(), now); err != nil {
				t.Fatal(err)
			}
			want := ss[len(ss)-tt.keep:]
			if got := all(l); !slices.Equal(got, want) {
				t.Errorf("after Prune: %v, want %v", got, want)
			}
			if got := all(openT(t, path, tt.opts)); !slices.Equal(got, want) {
				t.Errorf("after Prune and reopen: %v, want %v", got, want)
			}
		})
	}
	// Pruning an old log entirely leaves a working empty log.
	path := filepath.Join(t.TempDir(), "contacts.log")
	l := openT(t, path, nil)
	if err := l.Append(t.Context(), ago(15*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := l.Prune(t.Context(), now); err != nil || l.Len() != 0 || openT(t, path, nil).Len() != 0 {
		t.Errorf("pruning everything: err %v, %d sightings left", err, l.Len())
	}
}

func TestLogWrongKey(t *testing.T) {
	path, _ := newLogFile(t)
	other := testKey
	other[0] ^= 1
	l, err := Open(t.Context(), path, other, nil)
	if !errors.Is(err, ErrTampered) || l != nil {
		t.Fatalf("opening with another key: %v, want ErrTampered", err)
	}
	// The refusal must leave the file alone so that the right key still
	// reads it.
	if got := openT(t, path, nil).Len(); got != 3 {
		t.Errorf("after a wrong-key open the log holds %d sightings, want 3", got)
	}
}

func TestLogFlippedByte(t *testing.T) {
	path, _ := newLogFile(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range orig {
		for _, mask := range []byte{0x01, 0x80} {
			data := slices.Clone(orig)
			data[i] ^= mask
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(t.Context(), path, testKey, nil)
			if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("byte %d of %d flipped with %#x: Open returned %v, want ErrTampered, ErrCorrupt or ErrVersion", i, len(orig), mask, err)
			}
		}
	}
}

func TestLogTruncatedOrExtended(t *testing.T) {
	path, _ := newLogFile(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases [][]byte
	for n := range len(orig) {
		cases = append(cases, orig[:n])
	}
	cases = append(cases, append(slices.Clone(orig), 0), append(slices.Clone(orig), orig...))
	for _, data := range cases {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(t.Context(), path, testKey, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("file of %d bytes (of %d): Open returned %v, want ErrCorrupt", len(data), len(orig), err)
		}
	}
}

func TestLogOpenErrors(t *testing.T) {
	dir := t.TempDir()
	aead := testAEAD(t)
	future, err := encodeFile(aead, nil)
	if err != nil {
		t.Fatal(err)
	}
	future[len(fileMagic)] = fileVersion + 1
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		data []byte // file content; nil means no file
		ctx  context.Context
		opts *Options
		want error
	}{
		{"other file", []byte("just some text that is not a log at all, long enough"), t.Context(), nil, ErrCorrupt},
		{"empty file", []byte{}, t.Context(), nil, ErrCorrupt},
		{"future version", future, t.Context(), nil, ErrVersion},
		{"canceled", nil, canceled, nil, context.Canceled},
		{"negative retention", nil, t.Context(), &Options{Retention: -time.Hour}, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint(i))
			if tt.data != nil {
				if err := os.WriteFile(path, tt.data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l, err := Open(tt.ctx, path, testKey, tt.opts)
			if err == nil || l != nil {
				t.Fatalf("Open succeeded, want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Open: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := Open(t.Context(), filepath.Join(dir, "missing", "contacts.log"), testKey, nil); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

// TestLogCrashDuringWrite simulates a crash in the middle of a write: a
// partial temporary file is left next to the log, and the rename never
// happened.
func TestLogCrashDuringWrite(t *testing.T) {
	path, ss := newLogFile(t)
	// What the interrupted write was producing: the log with more sightings.
	more, err := encodeFile(testAEAD(t), append(slices.Clone(ss), randomSightings(9, 5)...))
	if err != nil {
		t.Fatal(err)
	}
	temp := path + atomicfile.TempInfix + "123456"
	if err := os.WriteFile(temp, more[:len(more)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	unrelated := filepath.Join(filepath.Dir(path), "other.tmp-1")
	if err := os.WriteFile(unrelated, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l := openT(t, path, nil)
	if got := all(l); !slices.Equal(got, ss) {
		t.Errorf("after a crash the log holds %v, want the old content %v", got, ss)
	}
	if _, err := os.Stat(temp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale temporary file is still there (%v)", err)
	}
	if _, err := os.Stat(unrelated); err != nil {
		t.Errorf("Open removed another file's temporary: %v", err)
	}
	if err := l.Append(t.Context(), randomSightings(10, 1)...); err != nil {
		t.Fatalf("appending after a crash: %v", err)
	}
	if got := openT(t, path, nil).Len(); got != len(ss)+1 {
		t.Errorf("after a crash and an append: %d sightings, want %d", got, len(ss)+1)
	}
}

func TestLogFailedWriteChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "contacts.log")
	l := openT(t, path, nil)
	before := randomSightings(11, 2)
	before[0].Interval, before[1].Interval = 1000, 2000 // both old enough to prune
	if err := l.Append(t.Context(), before...); err != nil {
		t.Fatal(err)
	}
	// With the directory gone, the write fails before the rename.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context(), randomSightings(12, 1)...); err == nil {
		t.Fatal("Append succeeded without a directory to write in")
	}
	if err := l.Prune(t.Context(), time.Now()); err == nil {
		t.Fatal("Prune succeeded without a directory to write in")
	}
	if got := all(l); !slices.Equal(got, before) {
		t.Errorf("after failed writes the log holds %v, want %v", got, before)
	}
}

func TestLogAppendErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.log")
	l := openT(t, path, nil)
	for _, m := range []uint8{0, MaxMinutes + 1} {
		bad := randomSightings(13, 3)
		bad[1].Minutes = m
		if err := l.Append(t.Context(), bad...); !errors.Is(err, ErrInvalid) {
			t.Errorf("appending a sighting of %d minutes: %v, want ErrInvalid", m, err)
		}
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Append(canceled, randomSightings(14, 1)...); !errors.Is(err, context.Canceled) {
		t.Errorf("appending with a canceled context: %v, want context.Canceled", err)
	}
	if err := l.Prune(canceled, time.Now()); !errors.Is(err, context.Canceled) {
		t.Errorf("pruning with a canceled context: %v, want context.Canceled", err)
	}
	if l.Len() != 0 || openT(t, path, nil).Len() != 0 {
		t.Error("a refused Append added sightings")
	}
}

func TestLogConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.log")
	l := openT(t, path, nil)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i, s := range randomSightings(uint64(100+w), each) {
				if err := l.Append(t.Context(), s); err != nil {
					t.Errorf("worker %d append %d: %v", w, i, err)
				}
				l.Sightings(0, enid.Interval(i))
				l.Len()
			}
		})
	}
	wg.Wait()
	var want []Sighting
	for w := range workers {
		want = append(want, randomSightings(uint64(100+w), each)...)
	}
	for _, ll := range []*Log{l, openT(t, path, nil)} {
		got := all(ll)
		if len(got) != workers*each {
			t.Fatalf("%d sightings after %d concurrent appends", len(got), workers*each)
		}
		// Arrival order within an interval depends on scheduling, so
		// compare as sets.
		byHeard := func(a, b Sighting) int { return bytes.Compare(a.Heard[:], b.Heard[:]) }
		slices.SortFunc(got, byHeard)
		w := slices.Clone(want)
		slices.SortFunc(w, byHeard)
		if !slices.Equal(got, w) {
			t.Fatal("concurrent appends lost or changed sightings")
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), atomicfile.TempInfix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func testAEAD(t testing.TB) cipher.AEAD {
	b, err := aes.NewCipher(testKey[:])
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sealFile builds a log file of the given version around plain, following
// the documented layout rather than encodeFile, with an all-zero nonce.
func sealFile(aead cipher.AEAD, version byte, plain []byte) []byte {
	ad := append([]byte(fileMagic), version)
	ad = binary.BigEndian.AppendUint64(ad, uint64(len(plain)+tagSize))
	nonce := make([]byte, nonceSize)
	return aead.Seal(append(slices.Clone(ad), nonce...), nonce, plain, ad)
}

// sightingsPlain is the documented plaintext of a version 2 log file.
func sightingsPlain(t testing.TB, ss []Sighting) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(ss)))
	for _, s := range ss {
		var err error
		if b, err = s.AppendBinary(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestLogFileFormat(t *testing.T) {
	aead := testAEAD(t)
	ss := randomSightings(15, 3)
	file, err := encodeFile(aead, ss)
	if err != nil {
		t.Fatal(err)
	}
	ctLen := 4 + len(ss)*SightingSize + tagSize
	header := binary.BigEndian.AppendUint64([]byte("conftrace-contactlog\n\x02"), uint64(ctLen))
	if !bytes.HasPrefix(file, header) || len(file) != len(header)+nonceSize+ctLen {
		t.Fatalf("file of %d bytes starts %q, want %d bytes starting %q", len(file), file[:min(len(file), len(header))], len(header)+nonceSize+ctLen, header)
	}
	nonce := file[len(header) : len(header)+nonceSize]
	plain, err := aead.Open(nil, nonce, file[len(header)+nonceSize:], header)
	if err != nil {
		t.Fatalf("the file does not open as documented: %v", err)
	}
	if want := sightingsPlain(t, ss); !bytes.Equal(plain, want) {
		t.Errorf("plaintext %x, want %x", plain, want)
	}
	// And a file written from the documentation reads back.
	got, err := decodeFile(aead, sealFile(aead, 2, sightingsPlain(t, ss)))
	if err != nil || !slices.Equal(got, ss) {
		t.Errorf("decodeFile of a file built from the documented layout: %v, %v", got, err)
	}
}

// TestLogVersion1 checks that a log of the old format, whose plaintext was
// a batch of (own RPI, heard RPI) tuples, is refused as a version it does
// not know, not as corrupt or tampered, and is left alone.
func TestLogVersion1(t *testing.T) {
	// An old batch: version 1, count (4), one 39-byte tuple of 10 minutes.
	batch := append([]byte{1, 0, 0, 0, 1}, make([]byte, 39)...)
	batch[5+37] = 10
	old := sealFile(testAEAD(t), 1, batch)
	path := filepath.Join(t.TempDir(), "contacts.log")
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(t.Context(), path, testKey, nil)
	if !errors.Is(err, ErrVersion) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTampered) || l != nil {
		t.Fatalf("opening a version 1 log: %v, want ErrVersion alone", err)
	}
	if data, err := os.ReadFile(path); err != nil || !bytes.Equal(data, old) {
		t.Errorf("refusing a version 1 log changed the file (%v)", err)
	}
}

// FuzzDecodeFile feeds the log file decoder arbitrary files. With sealed
// set, the input is taken as a plaintext and sealed under the test key
// first, so that the fuzzer also reaches the decoder behind the
// authentication check.
func FuzzDecodeFile(f *testing.F) {
	aead := testAEAD(f)
	for _, n := range []int{0, 2} {
		file, err := encodeFile(aead, randomSightings(uint64(n), n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(file, false)
		f.Add(file[:len(file)-3], false)
		f.Add(sightingsPlain(f, randomSightings(uint64(n), n)), true)
	}
	f.Add(sealFile(aead, 1, append([]byte{1, 0, 0, 0, 1}, make([]byte, 39)...)), false)
	f.Add([]byte(fileMagic), false)
	f.Add([]byte{0, 0, 0, 9}, true)
	f.Fuzz(func(t *testing.T, data []byte, sealed bool) {
		if sealed {
			data = sealFile(aead, fileVersion, data)
		}
		ss, err := decodeFile(aead, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decodeFile error %v is none of ErrCorrupt, ErrTampered, ErrVersion", err)
			}
			return
		}
		if !slices.IsSortedFunc(ss, func(a, b Sighting) int { return cmp.Compare(a.Interval, b.Interval) }) {
			t.Fatal("decoded sightings are not sorted by interval")
		}
		again, err := encodeFile(aead, ss)
		if err != nil {
			t.Fatalf("re-encoding a decoded log: %v", err)
		}
		back, err := decodeFile(aead, again)
		if err != nil || !slices.Equal(back, ss) {
			t.Fatalf("decoded log did not round-trip: %v", err)
		}
	})
}
