package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	if err := Write(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "new" {
		t.Fatalf("read %q, %v; want new", got, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	// A crash mid-write leaves a temporary file: the target is intact and
	// RemoveTemps clears the leftover.
	leftover := p + TempInfix + "123"
	if err := os.WriteFile(leftover, []byte("ne"), 0o600); err != nil {
		t.Fatal(err)
	}
	RemoveTemps(p)
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatal("temporary file survived RemoveTemps")
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatal("RemoveTemps touched the target")
	}
	if err := Write(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}
