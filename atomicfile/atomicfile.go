// Package atomicfile writes files so that a crash, or a reader at the wrong
// moment, sees either the old content or the new, never a mix. Devices keep
// their keys, contact logs and test state with [Write]; keys that must never
// be replaced are made with [Create].
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// TempInfix marks the temporary files of a replace in progress:
// path + TempInfix + random digits.
const TempInfix = ".tmp-"

// Write replaces path with data: it writes a temporary file in the same
// directory (rename is atomic only within one file system), syncs it,
// renames it over path and syncs the directory so that the rename itself is
// durable. perm applies to a newly created file.
func Write(path string, data []byte, perm fs.FileMode) error {
	dir, tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: %w", err)
	}
	return syncDir(dir)
}

// Create makes path with data, failing with an error that wraps
// fs.ErrExist if path already exists: it never replaces a file. Other
// processes see either no file or all of data, never a part of it (the data
// is written and synced under a temporary name, then linked into place),
// so two processes racing to create the same key file both end up reading
// the winner's. perm applies to the new file.
func Create(path string, data []byte, perm fs.FileMode) error {
	dir, tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// Unlike rename, link refuses to replace an existing path.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("atomicfile: %s already exists; not replacing it: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("atomicfile: %w", err)
	}
	return syncDir(dir)
}

// writeTemp writes data, synced, to a new temporary file next to path and
// returns the directory and the file's name. On error it leaves nothing.
func writeTemp(path string, data []byte, perm fs.FileMode) (dir, name string, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+TempInfix+"*")
	if err != nil {
		return "", "", fmt.Errorf("atomicfile: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil && runtime.GOOS != "windows" {
		return "", "", fmt.Errorf("atomicfile: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return "", "", fmt.Errorf("atomicfile: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", "", fmt.Errorf("atomicfile: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("atomicfile: %w", err)
	}
	return dir, f.Name(), nil
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		// Windows cannot sync a directory; its rename is durable once the
		// call returns.
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: syncing %s: %w", dir, err)
	}
	return nil
}

// RemoveTemps deletes the temporary files that a crash during Write left
// next to path. Failing to remove them is harmless, so errors are ignored.
func RemoveTemps(path string) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), base+TempInfix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
