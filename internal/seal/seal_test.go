package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"sync"
	"testing"

	"github.com/conftrace/conftrace/internal/calendar"
)

func newKeyring(t testing.TB, kek [KeySize]byte, days ...calendar.Day) *Keyring {
	t.Helper()
	k, err := NewKeyring(kek)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range days {
		if _, err := k.DayKey(d); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func mustSeal(t testing.TB, k *Keyring, day calendar.Day, table string, key, pt []byte) []byte {
	t.Helper()
	s, err := k.Seal(day, table, key, pt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpenRoundTrip(t *testing.T) {
	const day = calendar.Day(18362)
	k := newKeyring(t, GenerateKEK(), day)
	for _, tc := range []struct {
		name, table string
		key, pt     []byte
	}{
		{"typical", "tuples", []byte("upload-1"), bytes.Repeat([]byte{0xab}, 100)},
		{"empty plaintext", "tokens", []byte{1, 2, 3}, nil},
		{"empty key and table", "", nil, []byte("x")},
		{"binary key", "t", []byte{0, 0xff, 0, 0xfe}, []byte("payload")},
		{"large", "gps", []byte("k"), bytes.Repeat([]byte{7}, 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSeal(t, k, day, tc.table, tc.key, tc.pt)
			if len(s) != len(tc.pt)+Overhead {
				t.Errorf("sealed size %d, want plaintext + %d", len(s), Overhead)
			}
			if len(tc.pt) >= 16 && bytes.Contains(s, tc.pt[:16]) {
				t.Error("sealed bytes contain the plaintext")
			}
			got, err := k.Open(day, tc.table, tc.key, s)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.pt) {
				t.Error("Open returned different bytes")
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	k := newKeyring(t, GenerateKEK(), 5)
	a := mustSeal(t, k, 5, "t", []byte("k"), []byte("same"))
	b := mustSeal(t, k, 5, "t", []byte("k"), []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("sealing the same record twice gave the same bytes: equal plaintexts would be visible to the host")
	}
}

// TestOpenRefusesMisplaced covers every way the host can move a sealed
// record: each must fail with ErrTampered, never open.
func TestOpenRefusesMisplaced(t *testing.T) {
	const day = calendar.Day(100)
	kek := GenerateKEK()
	k := newKeyring(t, kek, day, day+1)
	other := newKeyring(t, GenerateKEK(), day)
	key := []byte{0x01, 0x02}
	sealed := mustSeal(t, k, day, "tuples", key, []byte("secret tuples"))

	for _, tc := range []struct {
		name   string
		k      *Keyring
		day    calendar.Day
		table  string
		key    []byte
		sealed []byte
	}{
		{"other table", k, day, "tokens", key, sealed},
		{"table prefix", k, day, "tuple", key, sealed},
		{"other key", k, day, "tuples", []byte{0x01, 0x03}, sealed},
		{"key prefix", k, day, "tuples", []byte{0x01}, sealed},
		{"empty key", k, day, "tuples", nil, sealed},
		{"table and key boundary moved", k, day, "tuples\x00\x00\x00\x02", nil, sealed},
		{"other day", k, day + 1, "tuples", key, sealed},
		{"other KEK, same day", other, day, "tuples", key, sealed},
		{"truncated", k, day, "tuples", key, sealed[:len(sealed)-1]},
		{"tag only", k, day, "tuples", key, sealed[len(sealed)-16:]},
		{"empty", k, day, "tuples", key, nil},
		{"extended", k, day, "tuples", key, append(bytes.Clone(sealed), 0)},
		{"version changed", k, day, "tuples", key, append([]byte{2}, sealed[1:]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := tc.k.Open(tc.day, tc.table, tc.key, tc.sealed)
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Open = %q, %v; want ErrTampered", pt, err)
			}
		})
	}

	// The same day in a fresh keyring with a fresh day key (a day key the
	// host swapped for another) is refused too.
	fresh := newKeyring(t, kek, day)
	if _, err := fresh.Open(day, "tuples", key, sealed); !errors.Is(err, ErrTampered) {
		t.Errorf("Open under another key for the same day = %v, want ErrTampered", err)
	}
}

func TestOpenRefusesFlippedBits(t *testing.T) {
	k := newKeyring(t, GenerateKEK(), 1)
	sealed := mustSeal(t, k, 1, "t", []byte("k"), []byte("twelve bytes"))
	for i := range len(sealed) * 8 {
		bad := bytes.Clone(sealed)
		bad[i/8] ^= 1 << (i % 8)
		if _, err := k.Open(1, "t", []byte("k"), bad); !errors.Is(err, ErrTampered) {
			t.Fatalf("bit %d flipped: Open = %v, want ErrTampered", i, err)
		}
	}
}

func TestTamperedErrorNamesRecord(t *testing.T) {
	k := newKeyring(t, GenerateKEK(), 1)
	sealed := mustSeal(t, k, 1, "tuples", []byte{0xca, 0xfe}, []byte("x"))
	_, err := k.Open(1, "tokens", []byte{0xca, 0xfe}, sealed)
	if err == nil {
		t.Fatal("Open succeeded")
	}
	for _, want := range []string{"tokens", "cafe"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestForget(t *testing.T) {
	k := newKeyring(t, GenerateKEK(), 10, 11)
	old := mustSeal(t, k, 10, "t", []byte("k"), []byte("old"))
	kept := mustSeal(t, k, 11, "t", []byte("k"), []byte("kept"))
	wrapped, err := k.DayKey(10)
	if err != nil {
		t.Fatal(err)
	}
	k.Forget(10)

	if _, err := k.Open(10, "t", []byte("k"), old); !errors.Is(err, ErrDayDeleted) {
		t.Errorf("Open after Forget = %v, want ErrDayDeleted", err)
	}
	if _, err := k.Seal(10, "t", []byte("k"), []byte("new")); !errors.Is(err, ErrDayDeleted) {
		t.Errorf("Seal after Forget = %v, want ErrDayDeleted", err)
	}
	if _, err := k.DayKey(10); !errors.Is(err, ErrDayDeleted) {
		t.Errorf("DayKey after Forget = %v, want ErrDayDeleted (a new key would silently replace the deleted day)", err)
	}
	if err := k.Load(10, wrapped); !errors.Is(err, ErrDayDeleted) {
		t.Errorf("Load after Forget = %v, want ErrDayDeleted (a restored backup must not revive the day)", err)
	}
	if got, err := k.Open(11, "t", []byte("k"), kept); err != nil || string(got) != "kept" {
		t.Errorf("other day after Forget: %q, %v", got, err)
	}
	if days := k.Days(); len(days) != 1 || days[0] != 11 {
		t.Errorf("Days = %v, want [11]", days)
	}
}

func TestNoDayKey(t *testing.T) {
	k := newKeyring(t, GenerateKEK(), 1)
	sealed := mustSeal(t, k, 1, "t", []byte("k"), []byte("x"))
	restarted := newKeyring(t, GenerateKEK())
	if _, err := restarted.Open(1, "t", []byte("k"), sealed); !errors.Is(err, ErrNoDayKey) {
		t.Errorf("Open without the day key = %v, want ErrNoDayKey", err)
	}
	if _, err := restarted.Seal(2, "t", []byte("k"), []byte("x")); !errors.Is(err, ErrNoDayKey) {
		t.Errorf("Seal without DayKey = %v, want ErrNoDayKey", err)
	}
	if errors.Is(ErrNoDayKey, ErrDayDeleted) || errors.Is(ErrNoDayKey, ErrTampered) {
		t.Error("sentinels are not distinct")
	}
}

// TestDayKeyPersistence is the restart path: a new keyring with the same
// KEK loads the persisted wrapped day keys and opens old records.
func TestDayKeyPersistence(t *testing.T) {
	kek := GenerateKEK()
	k := newKeyring(t, kek)
	w1, err := k.DayKey(7)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := k.DayKey(7)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w1, w2) {
		t.Error("DayKey returned different wrapped keys for the same day key")
	}
	w1[0] ^= 0xff // the caller's copy is its own
	w3, _ := k.DayKey(7)
	if !bytes.Equal(w2, w3) {
		t.Error("changing a returned wrapped key changed the keyring's")
	}
	sealed := mustSeal(t, k, 7, "t", []byte("k"), []byte("survives restart"))

	restarted := newKeyring(t, kek)
	if err := restarted.Load(7, w2); err != nil {
		t.Fatal(err)
	}
	got, err := restarted.Open(7, "t", []byte("k"), sealed)
	if err != nil || string(got) != "survives restart" {
		t.Fatalf("Open after reload: %q, %v", got, err)
	}
	if w, _ := restarted.DayKey(7); !bytes.Equal(w, w2) {
		t.Error("DayKey after Load did not return the loaded wrapped key")
	}
}

// TestLoadReplaces is the replica race: two replicas made keys for the same
// day; the loser loads the winner's key and can then open its records.
func TestLoadReplaces(t *testing.T) {
	kek := GenerateKEK()
	winner, loser := newKeyring(t, kek), newKeyring(t, kek)
	w, _ := winner.DayKey(3)
	if _, err := loser.DayKey(3); err != nil {
		t.Fatal(err)
	}
	sealed := mustSeal(t, winner, 3, "t", []byte("k"), []byte("x"))
	if _, err := loser.Open(3, "t", []byte("k"), sealed); !errors.Is(err, ErrTampered) {
		t.Fatalf("loser opened the winner's record with its own key: %v", err)
	}
	if err := loser.Load(3, w); err != nil {
		t.Fatal(err)
	}
	if _, err := loser.Open(3, "t", []byte("k"), sealed); err != nil {
		t.Errorf("after Load: %v", err)
	}
}

func TestLoadRefusesTampered(t *testing.T) {
	kek := GenerateKEK()
	k := newKeyring(t, kek)
	w, _ := k.DayKey(9)
	wrappedKEK, err := WrapKEK(kek, kek)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(w)
	flipped[len(flipped)/2] ^= 0x10

	for _, tc := range []struct {
		name    string
		kek     [KeySize]byte
		day     calendar.Day
		wrapped []byte
	}{
		{"flipped bit", kek, 9, flipped},
		{"other day", kek, 10, w},
		{"other KEK", GenerateKEK(), 9, w},
		{"truncated", kek, 9, w[:len(w)-1]},
		{"extended", kek, 9, append(bytes.Clone(w), 0)},
		{"empty", kek, 9, nil},
		{"a wrapped KEK is not a day key", kek, 9, wrappedKEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newKeyring(t, tc.kek)
			if err := r.Load(tc.day, tc.wrapped); !errors.Is(err, ErrTampered) {
				t.Fatalf("Load = %v, want ErrTampered", err)
			}
			if len(r.Days()) != 0 {
				t.Error("a refused key was added to the keyring")
			}
		})
	}
}

func TestKEKWrap(t *testing.T) {
	sk := GenerateKEK() // any 32 random bytes stand in for the TEE sealing key
	kek := GenerateKEK()
	w, err := WrapKEK(sk, kek)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(w, kek[:8]) {
		t.Error("wrapped KEK contains the KEK")
	}
	got, err := UnwrapKEK(sk, w)
	if err != nil {
		t.Fatal(err)
	}
	if got != kek {
		t.Fatal("UnwrapKEK returned another key")
	}

	dayKey, _ := newKeyring(t, sk).DayKey(0)
	flipped := bytes.Clone(w)
	flipped[5] ^= 1
	for _, tc := range []struct {
		name    string
		sk      [KeySize]byte
		wrapped []byte
	}{
		{"wrong sealing key", GenerateKEK(), w},
		{"flipped bit", sk, flipped},
		{"truncated", sk, w[:20]},
		{"empty", sk, nil},
		{"a day key is not a KEK", sk, dayKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := UnwrapKEK(tc.sk, tc.wrapped); !errors.Is(err, ErrTampered) {
				t.Fatalf("UnwrapKEK = %v, want ErrTampered", err)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	k := newKeyring(t, GenerateKEK())
	var wg sync.WaitGroup
	wrapped := make([][]byte, 8)
	for i := range wrapped {
		wg.Go(func() {
			w, err := k.DayKey(42)
			if err != nil {
				t.Error(err)
				return
			}
			wrapped[i] = w
			key := []byte{byte(i)}
			for range 50 {
				s, err := k.Seal(42, "t", key, key)
				if err != nil {
					t.Error(err)
					return
				}
				if pt, err := k.Open(42, "t", key, s); err != nil || !bytes.Equal(pt, key) {
					t.Errorf("Open: %v", err)
					return
				}
			}
			k.Days()
		})
	}
	wg.Wait()
	for _, w := range wrapped[1:] {
		if !bytes.Equal(w, wrapped[0]) {
			t.Fatal("concurrent DayKey calls created different keys for one day")
		}
	}
}

// FuzzOpen checks that Open never panics and opens nothing but the exact
// record that was sealed for that place.
func FuzzOpen(f *testing.F) {
	k := newKeyring(f, GenerateKEK(), 1)
	valid := mustSeal(f, k, 1, "t", []byte("k"), []byte("plaintext"))
	f.Add(valid, "t", []byte("k"), uint32(1))
	f.Add(valid[:Overhead], "t", []byte("k"), uint32(1))
	f.Add([]byte{1}, "", []byte{}, uint32(0))
	f.Add(bytes.Repeat([]byte{1}, 64), "t", []byte("k"), uint32(1))
	f.Fuzz(func(t *testing.T, sealed []byte, table string, key []byte, day uint32) {
		pt, err := k.Open(calendar.Day(day), table, key, sealed)
		isValid := calendar.Day(day) == 1 && table == "t" && string(key) == "k" && bytes.Equal(sealed, valid)
		if isValid {
			if err != nil || string(pt) != "plaintext" {
				t.Fatalf("valid record: %q, %v", pt, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("opened forged input as %q", pt)
		}
		if day == 1 && !errors.Is(err, ErrTampered) {
			t.Fatalf("err = %v, want ErrTampered", err)
		}
	})
}

// FuzzLoad checks that Load never panics and accepts only a wrapped key
// that DayKey produced for that day.
func FuzzLoad(f *testing.F) {
	kek := GenerateKEK()
	valid, _ := newKeyring(f, kek).DayKey(1)
	f.Add(valid, uint32(1))
	f.Add(valid[:wrappedKeySize-1], uint32(1))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, wrapped []byte, day uint32) {
		k := newKeyring(t, kek)
		err := k.Load(calendar.Day(day), wrapped)
		if day == 1 && bytes.Equal(wrapped, valid) {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		if !errors.Is(err, ErrTampered) {
			t.Fatalf("Load = %v, want ErrTampered", err)
		}
	})
}

// FuzzUnwrapKEK checks that UnwrapKEK never panics and accepts only what
// WrapKEK produced under that sealing key.
func FuzzUnwrapKEK(f *testing.F) {
	sk, kek := GenerateKEK(), GenerateKEK()
	valid, err := WrapKEK(sk, kek)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[1:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, wrapped []byte) {
		got, err := UnwrapKEK(sk, wrapped)
		if bytes.Equal(wrapped, valid) {
			if err != nil || got != kek {
				t.Fatalf("valid wrapped KEK: %v", err)
			}
			return
		}
		if !errors.Is(err, ErrTampered) {
			t.Fatalf("UnwrapKEK = %v, want ErrTampered", err)
		}
	})
}

const benchSize = 1 << 10

// BenchmarkBaselineGCM is plain AES-256-GCM of 1 KiB with a fixed nonce:
// the floor that Seal and Open are measured against.
func BenchmarkBaselineGCM(b *testing.B) {
	key := GenerateKEK()
	blk, _ := aes.NewCipher(key[:])
	a, _ := cipher.NewGCM(blk)
	nonce := make([]byte, a.NonceSize())
	pt := make([]byte, benchSize)
	out := make([]byte, 0, benchSize+a.Overhead())
	b.SetBytes(benchSize)
	for b.Loop() {
		out = a.Seal(out[:0], nonce, pt, []byte("additional data of a record"))
	}
}

func BenchmarkSeal(b *testing.B) {
	k := newKeyring(b, GenerateKEK(), 1)
	pt := make([]byte, benchSize)
	key := []byte("an upload id....")
	b.SetBytes(benchSize)
	for b.Loop() {
		if _, err := k.Seal(1, "tuples", key, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k := newKeyring(b, GenerateKEK(), 1)
	key := []byte("an upload id....")
	sealed := mustSeal(b, k, 1, "tuples", key, make([]byte, benchSize))
	b.SetBytes(benchSize)
	for b.Loop() {
		if _, err := k.Open(1, "tuples", key, sealed); err != nil {
			b.Fatal(err)
		}
	}
}
