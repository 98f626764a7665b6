package contactlog

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
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

func all(l *Log) []Tuple { return l.Tuples(0, math.MaxUint32) }

// newLogFile writes a log with a few tuples and returns its path and tuples.
func newLogFile(t *testing.T) (string, []Tuple) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "contacts.log")
	ts := randomTuples(7, 3)
	for i := range ts {
		ts[i].Interval = enid.Interval(2642976 + i)
	}
	if err := openT(t, path, nil).Append(t.Context(), ts...); err != nil {
		t.Fatal(err)
	}
	return path, ts
}

func TestLogRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.log")
	l := openT(t, path, nil)
	if l.Len() != 0 {
		t.Fatalf("a new log holds %d tuples", l.Len())
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Open did not create the file: %v", err)
	}
	ts := randomTuples(8, 50)
	slices.SortStableFunc(ts, func(a, b Tuple) int { return int(int64(a.Interval) - int64(b.Interval)) })
	if err := l.Append(t.Context(), ts[:20]...); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context(), ts[20:]...); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context()); err != nil {
		t.Fatalf("appending nothing: %v", err)
	}
	if got := all(l); !slices.Equal(got, ts) {
		t.Errorf("in memory: got %d tuples, want the %d appended", len(got), len(ts))
	}
	re := openT(t, path, nil)
	if got := all(re); !slices.Equal(got, ts) {
		t.Errorf("after reopening: got %d tuples, want the %d appended", len(got), len(ts))
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tu := range ts {
		if bytes.Contains(data, tu.Own[:8]) || bytes.Contains(data, tu.Heard[:8]) {
			t.Fatal("the file holds an RPI in the clear")
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("log file mode %v is readable by others", fi.Mode().Perm())
	}
}

func TestLogWindow(t *testing.T) {
	l := openT(t, filepath.Join(t.TempDir(), "contacts.log"), nil)
	mk := func(i enid.Interval, att uint8) Tuple { return Tuple{Interval: i, Attenuation: att} }
	// Appended out of order; two tuples share interval 20.
	in := []Tuple{mk(30, 1), mk(10, 2), mk(20, 3), mk(40, 4), mk(20, 5)}
	if err := l.Append(t.Context(), in...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, to enid.Interval
		want     []uint8 // attenuations, which identify the tuples
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
		for _, tu := range l.Tuples(tt.from, tt.to) {
			got = append(got, tu.Attenuation)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Tuples(%d, %d) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
	// The result is a copy.
	got := l.Tuples(0, math.MaxUint32)
	got[0].Attenuation = 99
	if l.Tuples(10, 11)[0].Attenuation != 2 {
		t.Error("changing the result of Tuples changed the log")
	}
}

func TestLogPrune(t *testing.T) {
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) Tuple { return Tuple{Interval: enid.IntervalOf(now.Add(-d))} }
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
			ts := []Tuple{at(20 * 24 * time.Hour), at(14*24*time.Hour - time.Minute), at(24 * time.Hour), at(0)}
			if err := l.Append(t.Context(), ts...); err != nil {
				t.Fatal(err)
			}
			if err := l.Prune(t.Context(), now); err != nil {
				t.Fatal(err)
			}
			want := ts[len(ts)-tt.keep:]
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
	if err := l.Append(t.Context(), at(15*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := l.Prune(t.Context(), now); err != nil || l.Len() != 0 || openT(t, path, nil).Len() != 0 {
		t.Errorf("pruning everything: err %v, %d tuples left", err, l.Len())
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
		t.Errorf("after a wrong-key open the log holds %d tuples, want 3", got)
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
	path, ts := newLogFile(t)
	// What the interrupted write was producing: the log with more tuples.
	more, err := encodeFile(testAEAD(t), append(slices.Clone(ts), randomTuples(9, 5)...))
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
	if got := all(l); !slices.Equal(got, ts) {
		t.Errorf("after a crash the log holds %v, want the old content %v", got, ts)
	}
	if _, err := os.Stat(temp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale temporary file is still there (%v)", err)
	}
	if _, err := os.Stat(unrelated); err != nil {
		t.Errorf("Open removed another file's temporary: %v", err)
	}
	if err := l.Append(t.Context(), randomTuples(10, 1)...); err != nil {
		t.Fatalf("appending after a crash: %v", err)
	}
	if got := openT(t, path, nil).Len(); got != len(ts)+1 {
		t.Errorf("after a crash and an append: %d tuples, want %d", got, len(ts)+1)
	}
}

func TestLogFailedWriteChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "contacts.log")
	l := openT(t, path, nil)
	before := randomTuples(11, 2)
	before[0].Interval, before[1].Interval = 1000, 2000 // both old enough to prune
	if err := l.Append(t.Context(), before...); err != nil {
		t.Fatal(err)
	}
	// With the directory gone, the write fails before the rename.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(t.Context(), randomTuples(12, 1)...); err == nil {
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
	bad := randomTuples(13, 3)
	bad[1].Duration = MaxDuration + 1
	if err := l.Append(t.Context(), bad...); !errors.Is(err, ErrInvalid) {
		t.Errorf("appending an invalid tuple: %v, want ErrInvalid", err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Append(canceled, randomTuples(14, 1)...); !errors.Is(err, context.Canceled) {
		t.Errorf("appending with a canceled context: %v, want context.Canceled", err)
	}
	if err := l.Prune(canceled, time.Now()); !errors.Is(err, context.Canceled) {
		t.Errorf("pruning with a canceled context: %v, want context.Canceled", err)
	}
	if l.Len() != 0 || openT(t, path, nil).Len() != 0 {
		t.Error("a refused Append added tuples")
	}
}

func TestLogConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.log")
	l := openT(t, path, nil)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i, tu := range randomTuples(uint64(100+w), each) {
				if err := l.Append(t.Context(), tu); err != nil {
					t.Errorf("worker %d append %d: %v", w, i, err)
				}
				l.Tuples(0, enid.Interval(i))
				l.Len()
			}
		})
	}
	wg.Wait()
	var want []Tuple
	for w := range workers {
		want = append(want, randomTuples(uint64(100+w), each)...)
	}
	for _, ll := range []*Log{l, openT(t, path, nil)} {
		got := all(ll)
		if len(got) != workers*each {
			t.Fatalf("%d tuples after %d concurrent appends", len(got), workers*each)
		}
		// Arrival order within an interval depends on scheduling, so
		// compare as sets.
		cmpT := func(a, b Tuple) int { return bytes.Compare(a.Own[:], b.Own[:]) }
		slices.SortFunc(got, cmpT)
		w := slices.Clone(want)
		slices.SortFunc(w, cmpT)
		if !slices.Equal(got, w) {
			t.Fatal("concurrent appends lost or changed tuples")
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

// FuzzDecodeFile feeds the log file decoder arbitrary files. With sealed
// set, the input is taken as a plaintext and sealed under the test key
// first, so that the fuzzer also reaches the decoder behind the
// authentication check.
func FuzzDecodeFile(f *testing.F) {
	aead := testAEAD(f)
	for _, n := range []int{0, 2} {
		file, err := encodeFile(aead, randomTuples(uint64(n), n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(file, false)
		f.Add(file[:len(file)-3], false)
		plain, _ := AppendBatch(nil, randomTuples(uint64(n), n))
		f.Add(plain, true)
	}
	f.Add([]byte(fileMagic), false)
	f.Add([]byte{BatchVersion, 0, 0, 0, 9}, true)
	f.Fuzz(func(t *testing.T, data []byte, sealed bool) {
		if sealed {
			nonce := make([]byte, nonceSize)
			ad := append([]byte(fileMagic), fileVersion, 0, 0, 0, 0, 0, 0, 0, 0)
			ctLen := uint64(len(data) + tagSize)
			for i := range 8 {
				ad[len(fileMagic)+1+i] = byte(ctLen >> (56 - 8*i))
			}
			data = aead.Seal(append(slices.Clone(ad), nonce...), nonce, data, ad)
		}
		ts, err := decodeFile(aead, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decodeFile error %v is none of ErrCorrupt, ErrTampered, ErrVersion", err)
			}
			return
		}
		again, err := encodeFile(aead, ts)
		if err != nil {
			t.Fatalf("re-encoding a decoded log: %v", err)
		}
		back, err := decodeFile(aead, again)
		if err != nil || !slices.Equal(back, ts) {
			t.Fatalf("decoded log did not round-trip: %v", err)
		}
	})
}
