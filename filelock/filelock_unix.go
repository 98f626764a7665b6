//go:build unix

// Package filelock takes advisory locks on files, so that two processes
// that read, change and replace the same file (the portal's users file, a
// certificate verifier's record) do not lose each other's change.
package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Supported reports whether Lock excludes other processes here.
const Supported = true

// Lock takes an exclusive advisory lock on path (created, mode 0600, if
// missing) and returns its release. It waits for another holder until ctx
// ends. The lock file stays: removing it would let two processes lock two
// different files.
func Lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("filelock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("filelock: %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("filelock: waiting for the lock on %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
