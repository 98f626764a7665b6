package api

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
	"unicode"
)

// Test codes.
//
// A test code is 17 characters of Crockford's base32 alphabet (the digits
// and the letters but I, L, O and U), shown in four groups:
//
//	ABCD-EFGH-JKMN-PQRS1
//
// The first 16 characters encode, 5 bits each and most significant first,
// the first 80 bits of SHA-256("conftrace test code v2" || 0x00 || secret).
// The 17th is a check character over them: with vᵢ the values of the
// characters, the c that makes v₀·α^16 + v₁·α^15 + … + v₁₅·α + c = 0 in
// GF(32) = GF(2)[α]/(α⁵+α²+1). A mistyped code is thus refused rather
// than taken for somebody else's: every change of one character to another
// value, and every swap of two different characters, is caught.
//
// What 80 bits buy. The backend hands the result of a test, and a positive
// result's upload authorization, to whoever shows a secret whose code is
// the test's code. Anyone who sees a code (the test site, the health
// authority, someone looking over a shoulder) and wants to poll its result
// as if they were its owner must find such a secret offline (any secret
// will do; the owner's own, 256 bits, is out of reach): on average 2^80 ≈
// 1.2×10^24 SHA-256 evaluations, since the 80 bits are a random function of
// the secret. The hash input (23-byte label, 32-byte secret) is 55 bytes,
// a single SHA-256 compression, the unit GPU benchmarks count. Assuming a
// GPU computes 2×10^10 SHA-256 a second (the order of hashcat's SHA2-256
// figure for a current high-end GPU), that is 6×10^13 GPU-seconds, about
// 1.9 million GPU-years, per code. Against n codes at once the cost is
// divided by n (a million codes: about 2 GPU-years for one of them, not
// chosen). The 50-bit codes of version 1 took 2^50/(2×10^10) s ≈ 16 hours,
// under a GPU-day. The same 80 bits make two honest tests sharing a code
// unlikely: about n²/2^81 for n tests, 4×10^-7 for a billion.
const (
	// TestCodeBits is the number of bits of the secret's hash that a test
	// code carries.
	TestCodeBits = 80
	// TestCodeLength is the number of characters of a test code, the
	// check character included and the dashes not.
	TestCodeLength = TestCodeBits/5 + 1
	// TestCodeAlphabet is Crockford's base32 alphabet, in the order of the
	// values 0 to 31.
	TestCodeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)

var testCodeEncoding = base32.NewEncoding(TestCodeAlphabet).WithPadding(base32.NoPadding)

// testCodeValue maps an upper-case code character, or one of the letters
// Crockford's alphabet reads as a digit (I and L as 1, O as 0), to its
// value; -1 for anything else.
var testCodeValue = func() (v [128]int8) {
	for i := range v {
		v[i] = -1
	}
	for i, c := range TestCodeAlphabet {
		v[c] = int8(i)
	}
	v['I'], v['L'], v['O'] = 1, 1, 0
	return v
}()

// TestCode returns the code the device shows the test site for a test
// secret, in canonical form: 17 characters in groups of 4, 4, 4 and 5,
// carrying [TestCodeBits] bits (see there for what they cost an attacker).
// The code is all the health authority learns; only the holder of the
// secret can poll the result or upload.
func TestCode(secret []byte) string {
	h := sha256.Sum256(append([]byte("conftrace test code v2\x00"), secret...))
	s := testCodeEncoding.EncodeToString(h[:TestCodeBits/8])
	var v [TestCodeLength - 1]byte
	for i := range s {
		v[i] = byte(testCodeValue[s[i]])
	}
	return formatTestCode(s + string(TestCodeAlphabet[testCodeCheck(v[:])]))
}

// testCodeCheck returns the value of the check character for the values of
// the other characters: the c that makes
//
//	v₀·α^16 + v₁·α^15 + … + v₁₅·α + c = 0
//
// in GF(32) = GF(2)[α]/(α⁵+α²+1), by Horner's rule. The 17 weights α^16…α^0 are distinct and
// nonzero (α has order 31), so every change of one character to another
// value, and every swap of two different characters (adjacent or not,
// the check character included), changes the sum and is refused. Other
// errors pass with probability 1/32.
func testCodeCheck(v []byte) byte {
	var s byte
	for _, x := range v {
		s = gf32MulAlpha(s ^ x)
	}
	return s
}

// gf32MulAlpha multiplies by α in GF(2)[α]/(α⁵+α²+1).
func gf32MulAlpha(x byte) byte {
	x <<= 1
	if x&0x20 != 0 {
		x ^= 0x25
	}
	return x
}

// formatTestCode groups the 17 characters of a code as 4-4-4-5.
func formatTestCode(s string) string {
	return s[:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:]
}

// NormalizeTestCode accepts a test code as people type it and returns its
// canonical form (upper case, groups of 4, 4, 4 and 5 characters). It
// ignores dashes and white space anywhere and case, and reads I and L as
// 1 and O as 0, as Crockford's base32 does. It refuses codes of the wrong
// length, characters outside the alphabet (U among them) and codes whose
// check character does not match, which catches every single mistyped
// character and every swap of two characters.
func NormalizeTestCode(code string) (string, error) {
	var c [TestCodeLength]byte
	var v [TestCodeLength]byte
	n := 0
	for _, r := range code {
		if r == '-' || unicode.IsSpace(r) {
			continue
		}
		if n == len(c) {
			n++
			break
		}
		u := r
		if 'a' <= u && u <= 'z' {
			u -= 'a' - 'A'
		}
		if u >= 128 || testCodeValue[u] < 0 {
			if u == 'U' {
				return "", fmt.Errorf("api: test code %s: %q is not a code character (codes have no U)", quoteTestCode(code), r)
			}
			return "", fmt.Errorf("api: test code %s: %q is not a code character (codes use 0-9 and A-Z without I, L, O, U)", quoteTestCode(code), r)
		}
		v[n] = byte(testCodeValue[u])
		c[n] = TestCodeAlphabet[v[n]]
		n++
	}
	if n != TestCodeLength {
		more := ""
		if n > TestCodeLength {
			more = "more than "
		}
		return "", fmt.Errorf("api: test code %s: %s%d characters, want %d (not counting dashes)", quoteTestCode(code), more, min(n, TestCodeLength), TestCodeLength)
	}
	if testCodeCheck(v[:TestCodeLength-1]) != v[TestCodeLength-1] {
		return "", fmt.Errorf("api: test code %s: check character does not match; a character is mistyped", quoteTestCode(code))
	}
	return formatTestCode(string(c[:])), nil
}

// quoteTestCode quotes what someone typed for an error message, cut short
// if it is long.
func quoteTestCode(s string) string {
	const most = 40
	if len(s) > most {
		s = strings.ToValidUTF8(s[:most], "") + "…"
	}
	return fmt.Sprintf("%q", s)
}
