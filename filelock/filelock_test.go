package filelock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestLockExcludes: a second Lock waits while the first is held, gives up
// when its context ends, and succeeds once the first is released.
func TestLockExcludes(t *testing.T) {
	if !Supported {
		t.Skip("no advisory locks on this platform")
	}
	path := filepath.Join(t.TempDir(), "file.lock")
	unlock, err := Lock(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held: %v, want it to wait until its context ends", err)
	}
	unlock()
	again, err := Lock(t.Context(), path)
	if err != nil {
		t.Fatalf("Lock after the release: %v", err)
	}
	again()
}

func TestLockUnwritableDirectory(t *testing.T) {
	if _, err := Lock(t.Context(), filepath.Join(t.TempDir(), "missing", "file.lock")); Supported && err == nil {
		t.Error("Lock in a missing directory succeeded")
	}
}
