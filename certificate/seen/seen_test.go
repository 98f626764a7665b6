package seen_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/certificate/seen"
)

var (
	key    = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	issued = time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
)

// cert returns a certificate with nonce byte n that expires after days.
func cert(t *testing.T, n byte, days int) certificate.Certificate {
	t.Helper()
	c, err := certificate.Sign(certificate.Certificate{
		Kind: certificate.Bluetooth, Order: 1, Date: issued.Truncate(24 * time.Hour),
		IssuedAt: issued, ExpiresAt: issued.AddDate(0, 0, days),
		Nonce: [certificate.NonceSize]byte(bytes.Repeat([]byte{n}, certificate.NonceSize)),
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAcceptOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seen")
	now := issued.Add(time.Hour)
	a, b := cert(t, 1, 14), cert(t, 2, 14)
	if err := seen.Accept(t.Context(), path, a, now); err != nil {
		t.Fatalf("first presentation: %v", err)
	}
	if err := seen.Accept(t.Context(), path, b, now); err != nil {
		t.Fatalf("another certificate: %v", err)
	}
	err := seen.Accept(t.Context(), path, a, now)
	if !errors.Is(err, certificate.ErrReplayed) || certificate.Reason(err) != "replayed" {
		t.Fatalf("second presentation: %v, want ErrReplayed", err)
	}
	// Another certificate with the same nonce is the same presentation.
	again := cert(t, 1, 2)
	if err := seen.Accept(t.Context(), path, again, now); !errors.Is(err, certificate.ErrReplayed) {
		t.Errorf("a certificate with a nonce seen before: %v, want ErrReplayed", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("conftrace seen certificates v1\n%x %d\n%x %d\n", a.Nonce, a.ExpiresAt.Unix(), b.Nonce, b.ExpiresAt.Unix())
	if string(got) != want {
		t.Errorf("record %q, want %q", got, want)
	}
}

// Entries of expired certificates are dropped: Verify refuses those anyway.
func TestAcceptDropsExpired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seen")
	short, long := cert(t, 1, 1), cert(t, 2, 14)
	for _, c := range []certificate.Certificate{short, long} {
		if err := seen.Accept(t.Context(), path, c, issued); err != nil {
			t.Fatal(err)
		}
	}
	later := issued.AddDate(0, 0, 2)
	if err := seen.Accept(t.Context(), path, cert(t, 3, 14), later); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if strings.Contains(string(got), fmt.Sprintf("%x", short.Nonce)) || !strings.Contains(string(got), fmt.Sprintf("%x", long.Nonce)) {
		t.Errorf("record %q: want the expired entry dropped and the other kept", got)
	}
}

// A record that is not one is refused, not taken as empty: that would
// accept every certificate again.
func TestAcceptRefusesDamagedRecord(t *testing.T) {
	c := cert(t, 0xab, 14)
	line := fmt.Sprintf("%x %d\n", c.Nonce, c.ExpiresAt.Unix())
	for name, content := range map[string]string{
		"empty":                  "",
		"another header":         "conftrace seen certificates v2\n",
		"no final line feed":     "conftrace seen certificates v1\n" + strings.TrimSuffix(line, "\n"),
		"uppercase hex":          "conftrace seen certificates v1\n" + strings.ToUpper(line[:64]) + line[64:],
		"a short nonce":          "conftrace seen certificates v1\n" + line[2:],
		"an expiry with a sign":  "conftrace seen certificates v1\n" + line[:65] + "+" + line[65:],
		"an empty line":          "conftrace seen certificates v1\n\n",
		"two spaces":             "conftrace seen certificates v1\n" + line[:64] + " " + line[64:],
		"a leading zero expiry":  "conftrace seen certificates v1\n" + line[:65] + "0" + line[65:],
		"garbage after an entry": "conftrace seen certificates v1\n" + line + "x\n",
	} {
		path := filepath.Join(t.TempDir(), "seen")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := seen.Accept(t.Context(), path, cert(t, 9, 14), issued); err == nil {
			t.Errorf("%s: a damaged record was accepted", name)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("%s: the damaged record was changed to %q", name, got)
		}
	}
}

// Verifiers sharing a record accept a certificate once between them.
func TestAcceptConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seen")
	c := cert(t, 1, 14)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 8 {
		wg.Go(func() {
			err := seen.Accept(t.Context(), path, c, issued)
			if err != nil && !errors.Is(err, certificate.ErrReplayed) {
				t.Error(err)
			}
			mu.Lock()
			if err == nil {
				accepted++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if accepted != 1 {
		t.Errorf("accepted %d times, want once", accepted)
	}
}

// FuzzAccept checks that a record of any content never makes Accept
// panic, and that a record Accept takes is rewritten in the one spelling,
// with the new certificate in it, and refuses it a second time.
func FuzzAccept(f *testing.F) {
	f.Add([]byte("conftrace seen certificates v1\n"))
	f.Add([]byte("conftrace seen certificates v1\n" + strings.Repeat("ab", 32) + " 1774360800\n"))
	f.Add([]byte("conftrace seen certificates v1\n" + strings.Repeat("09", 32) + " 1\n"))
	f.Add([]byte("conftrace seen certificates v1\n" + strings.Repeat("AB", 32) + " 1774360800\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, record []byte) {
		path := filepath.Join(t.TempDir(), "seen")
		if err := os.WriteFile(path, record, 0o600); err != nil {
			t.Fatal(err)
		}
		c := cert(t, 9, 14)
		if err := seen.Accept(t.Context(), path, c, issued); err != nil {
			return
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		entry := fmt.Sprintf("%x %d\n", c.Nonce, c.ExpiresAt.Unix())
		if !strings.HasPrefix(string(got), "conftrace seen certificates v1\n") || !strings.HasSuffix(string(got), entry) {
			t.Fatalf("record %q rewritten as %q", record, got)
		}
		if err := seen.Accept(t.Context(), path, c, issued); !errors.Is(err, certificate.ErrReplayed) {
			t.Fatalf("the certificate just accepted was accepted again: %v", err)
		}
	})
}
