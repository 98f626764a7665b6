package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
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

func TestCreateNeverReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	if err := Create(p, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Create(p, []byte("second"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an existing file: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "first" {
		t.Fatalf("file holds %q after a refused Create, want first", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("%d files in the directory, want only the key (temporary files left behind)", len(entries))
	}
}

// Readers racing a Create see no file or the whole file, never a part.
func TestCreateIsWholeOrNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<12)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(p)
			if err == nil && !bytes.Equal(b, data) {
				t.Errorf("a reader saw %d bytes of %d", len(b), len(data))
				return
			}
		}
	})
	err := Create(p, data, 0o600)
	close(done)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
}
