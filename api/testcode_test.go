package api

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestTestCodeVectors pins the codes of fixed secrets: a change of the
// derivation strands every test registered before it.
func TestTestCodeVectors(t *testing.T) {
	seq := make([]byte, TestSecretSize)
	for i := range seq {
		seq[i] = byte(i)
	}
	for _, v := range []struct {
		secret []byte
		code   string
	}{
		{make([]byte, TestSecretSize), "3537-A1M5-YNC3-K4KSD"},
		{seq, "9MNZ-4GHN-4F3P-AE86A"},
		{bytes.Repeat([]byte{1}, TestSecretSize), "K63P-2S4X-0Z92-H4QMB"},
	} {
		if got := TestCode(v.secret); got != v.code {
			t.Errorf("TestCode(%x) = %q, want %q", v.secret, got, v.code)
		}
		if got := referenceTestCode(v.secret); got != v.code {
			t.Errorf("reference code of %x = %q, want %q", v.secret, got, v.code)
		}
	}
}

// referenceTestCode derives a code as the documentation says, without the
// package's encoder and check: bits taken one by one, the check as a sum
// of explicit powers of α.
func referenceTestCode(secret []byte) string {
	h := sha256.Sum256(append([]byte("conftrace test code v2\x00"), secret...))
	var v [17]byte
	for i := range 16 {
		for b := range 5 {
			bit := 5*i + b
			v[i] = v[i]<<1 | h[bit/8]>>(7-bit%8)&1
		}
	}
	for i := range 16 {
		v[16] ^= gf32Mul(v[i], gf32Pow(16-i))
	}
	var s strings.Builder
	for i, x := range v {
		if i == 4 || i == 8 || i == 12 {
			s.WriteByte('-')
		}
		s.WriteByte("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[x])
	}
	return s.String()
}

// gf32Mul multiplies in GF(2)[α]/(α⁵+α²+1), bit by bit.
func gf32Mul(a, b byte) byte {
	var r uint16
	for i := range 5 {
		if b>>i&1 != 0 {
			r ^= uint16(a) << i
		}
	}
	for i := 9; i >= 5; i-- {
		if r>>i&1 != 0 {
			r ^= 0x25 << (i - 5)
		}
	}
	return byte(r)
}

func gf32Pow(k int) byte {
	r := byte(1)
	for range k {
		r = gf32Mul(r, 2)
	}
	return r
}

// TestTestCodeCheckWeights checks what the typo guarantees rest on: α has
// order 31, so the 17 weights of the check are distinct and nonzero.
func TestTestCodeCheckWeights(t *testing.T) {
	seen := map[byte]int{}
	x := byte(1)
	for k := range 31 {
		if j, ok := seen[x]; ok {
			t.Fatalf("α^%d = α^%d", k, j)
		}
		seen[x] = k
		if x != gf32Pow(k) {
			t.Fatalf("α^%d: multiplying by α gives %d, the field %d", k, x, gf32Pow(k))
		}
		x = gf32MulAlpha(x)
	}
	if x != 1 {
		t.Fatalf("α^31 = %d, want 1", x)
	}
}

func testSecrets(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	s := make([][]byte, n)
	for i := range s {
		s[i] = make([]byte, TestSecretSize)
		for j := range s[i] {
			s[i][j] = byte(r.Uint32())
		}
	}
	return s
}

// TestTestCodeFormat checks the documented length, grouping and alphabet,
// the derivation, and that codes are canonical.
func TestTestCodeFormat(t *testing.T) {
	if TestCodeBits < 80 || TestCodeLength != 17 || len(TestCodeAlphabet) != 32 || strings.ContainsAny(TestCodeAlphabet, "ILOU") {
		t.Fatalf("constants: %d bits, %d characters, alphabet %q", TestCodeBits, TestCodeLength, TestCodeAlphabet)
	}
	seen := map[string]bool{}
	for _, s := range testSecrets(1000) {
		c := TestCode(s)
		if len(c) != 20 || c[4] != '-' || c[9] != '-' || c[14] != '-' {
			t.Fatalf("code %q is not grouped 4-4-4-5", c)
		}
		if strings.Trim(strings.ReplaceAll(c, "-", ""), TestCodeAlphabet) != "" {
			t.Fatalf("code %q has characters outside %q", c, TestCodeAlphabet)
		}
		if ref := referenceTestCode(s); c != ref {
			t.Fatalf("TestCode(%x) = %q, the documented derivation gives %q", s, c, ref)
		}
		if got, err := NormalizeTestCode(c); err != nil || got != c {
			t.Fatalf("NormalizeTestCode(%q) = %q, %v; a code must be canonical", c, got, err)
		}
		if seen[c] {
			t.Fatalf("two secrets with code %q", c)
		}
		seen[c] = true
	}
}

// TestNormalizeTestCode checks codes as people type them and the messages
// of refusals.
func TestNormalizeTestCode(t *testing.T) {
	const c = "K63P-2S4X-0Z92-H4QMB"
	for _, typed := range []string{
		c,
		"K63P2S4X0Z92H4QMB",
		"k63p-2s4x-0z92-h4qmb",
		" k63p 2s4x 0z92 h4qmb\n",
		"K6-3P2S4X0Z-92H4-QMB-",
		"K63P-2S4X-oz92-H4QMB",   // O for 0
		"K63P-2S4X-0Z92-H4QMB\t", // pasted
		"--K63P 2S4X - 0Z92 H4QMB",
	} {
		if got, err := NormalizeTestCode(typed); err != nil || got != c {
			t.Errorf("NormalizeTestCode(%q) = %q, %v; want %q", typed, got, err, c)
		}
	}
	// I and L read as 1.
	withOne := "ABCD-EFGH-JKMN-PQRS1"
	for _, typed := range []string{"ABCD-EFGH-JKMN-PQRSI", "abcd-efgh-jkmn-pqrsl", "ABCD-EFGH-JKMN-PQRSi"} {
		if got, err := NormalizeTestCode(typed); err != nil || got != withOne {
			t.Errorf("NormalizeTestCode(%q) = %q, %v; want %q", typed, got, err, withOne)
		}
	}
	for _, bad := range []struct{ code, want string }{
		{"", "0 characters, want 17"},
		{"----", "0 characters, want 17"},
		{"K63P-2S4X-0Z92-H4QM", "16 characters, want 17"},
		{"K63P-2S4X-0Z92-H4QMBB", "more than 17 characters, want 17"},
		{"ABCDE-FGHIJ", "10 characters, want 17"},
		{"K63P-2S4X-0Z92-H4QM!", `'!' is not a code character`},
		{"K63P-2S4X-0Z92-H4QMU", `'U' is not a code character (codes have no U)`},
		{"K63P-2S4X-0Z92-H4QMu", `'u' is not a code character (codes have no U)`},
		{"K63P-2S4X-0Z92-H4QMÉ", `'É' is not a code character`},
		{"K63P-2S4X-0Z92-H4QM\x00", `'\x00' is not a code character`},
		{"K63P_2S4X_0Z92_H4QMB", `'_' is not a code character`},
		{"K63P-2S4X-0Z92-H4QMA", "check character does not match"},
		{"K63P-2S4X-0Z92-4HQMB", "check character does not match"},
		{strings.Repeat("A", 1000), "more than 17 characters"},
	} {
		_, err := NormalizeTestCode(bad.code)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("NormalizeTestCode(%q) = %v; want an error with %q", bad.code, err, bad.want)
		} else if len(err.Error()) > 200 {
			t.Errorf("NormalizeTestCode of %d bytes: error of %d bytes", len(bad.code), len(err.Error()))
		}
	}
}

// confusable reports whether typing b for the code character c reads
// back as c: the same letter in lower case, or I, L (either case) for 1 and
// O (either case) for 0.
func confusable(c, b byte) bool {
	switch {
	case b == c || 'A' <= c && c <= 'Z' && b == c+'a'-'A':
		return true
	case c == '1':
		return strings.IndexByte("IiLl", b) >= 0
	case c == '0':
		return b == 'O' || b == 'o'
	}
	return false
}

// TestTestCodeTypos checks that every single-character substitution of a
// code is refused unless it reads back as the same code (a confusable
// letter, lower case), and that every swap of two different characters
// is refused.
func TestTestCodeTypos(t *testing.T) {
	for _, s := range testSecrets(200) {
		code := TestCode(s)
		bare := []byte(strings.ReplaceAll(code, "-", ""))
		for i := range bare {
			for b := byte(0); b < 0x80; b++ {
				typo := bytes.Clone(bare)
				typo[i] = b
				got, err := NormalizeTestCode(string(typo))
				switch {
				case err == nil && got != code:
					t.Fatalf("%q, a typo of %q, normalizes to the other code %q", typo, code, got)
				case err == nil && !confusable(bare[i], b):
					t.Fatalf("%q, a typo of %q, is accepted", typo, code)
				case err != nil && confusable(bare[i], b):
					t.Fatalf("%q, %q as typed, is refused: %v", typo, code, err)
				}
			}
		}
		for i := range bare {
			for j := i + 1; j < len(bare); j++ {
				if bare[i] == bare[j] {
					continue
				}
				typo := bytes.Clone(bare)
				typo[i], typo[j] = typo[j], typo[i]
				if got, err := NormalizeTestCode(string(typo)); err == nil {
					t.Fatalf("%q, %q with characters %d and %d swapped, is accepted as %q", typo, code, i, j, got)
				}
			}
		}
		// Dashes sit anywhere, so a swap with a dash is no error...
		swapped := code[:3] + "-" + code[3:4] + code[5:]
		if got, err := NormalizeTestCode(swapped); err != nil || got != code {
			t.Fatalf("NormalizeTestCode(%q) = %q, %v; want %q", swapped, got, err, code)
		}
		// ...and a dropped or doubled character is.
		for i := range bare {
			dropped := string(bare[:i]) + string(bare[i+1:])
			doubled := string(bare[:i+1]) + string(bare[i:])
			for _, typo := range []string{dropped, doubled} {
				if _, err := NormalizeTestCode(typo); err == nil || !strings.Contains(err.Error(), "characters, want 17") {
					t.Fatalf("NormalizeTestCode(%q), a typo of %q: %v, want a length error", typo, code, err)
				}
			}
		}
	}
}

// FuzzNormalizeTestCode checks that whatever NormalizeTestCode accepts it
// returns in canonical form, that the canonical form round-trips (also
// typed in lower case, without dashes or with spaces), and that the code
// of any secret is canonical.
func FuzzNormalizeTestCode(f *testing.F) {
	f.Add("K63P-2S4X-0Z92-H4QMB")
	f.Add("k63p 2s4x oz92 h4qmb")
	f.Add("ABCD-EFGH-JKMN-PQRSI")
	f.Fuzz(func(t *testing.T, typed string) {
		roundTrip := func(code string) {
			t.Helper()
			if len(code) != 20 || code[4] != '-' || code[9] != '-' || code[14] != '-' || strings.Trim(strings.ReplaceAll(code, "-", ""), TestCodeAlphabet) != "" {
				t.Fatalf("%q is not in canonical form", code)
			}
			bare := strings.ReplaceAll(code, "-", "")
			for _, again := range []string{code, strings.ToLower(code), bare, strings.Join(strings.Split(bare, ""), " ")} {
				if got, err := NormalizeTestCode(again); err != nil || got != code {
					t.Fatalf("NormalizeTestCode(%q) = %q, %v; want %q", again, got, err, code)
				}
			}
		}
		roundTrip(TestCode([]byte(typed)))
		if code, err := NormalizeTestCode(typed); err == nil {
			roundTrip(code)
		}
	})
}
