package gpsindex

import (
	"os"
	"strings"
	"testing"
)

// TestHugePages checks that the advice leaves the contents as they were,
// whatever the kernel does with it, and reports what it did.
func TestHugePages(t *testing.T) {
	b := make([]byte, 9<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>13)
	}
	hugePages(b)
	for i := range b {
		if b[i] != byte(i*7+i>>13) {
			t.Fatalf("byte %d changed", i)
		}
	}
	if mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		t.Logf("transparent huge pages: %s", strings.TrimSpace(string(mode)))
	}
}
