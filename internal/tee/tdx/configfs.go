package tdx

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
)

// dirClient gives go-configfs-tsm access to a configfs-tsm tree mounted at
// root. The library names every path under /sys/kernel/config/tsm; dirClient
// maps those paths under root, so that the mount point is configurable.
type dirClient struct{ root string }

var _ configfsi.Client = dirClient{}

func (c dirClient) local(p string) (string, error) {
	rel, ok := strings.CutPrefix(path.Clean(p), configfsi.TsmPrefix)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return "", fmt.Errorf("tee/tdx: path %q is outside configfs-tsm", p)
	}
	return filepath.Join(c.root, filepath.FromSlash(rel)), nil
}

func (c dirClient) MkdirTemp(dir, pattern string) (string, error) {
	local, err := c.local(dir)
	if err != nil {
		return "", err
	}
	name, err := os.MkdirTemp(local, pattern)
	if err != nil {
		return "", err
	}
	return path.Join(dir, filepath.Base(name)), nil
}

func (c dirClient) ReadFile(name string) ([]byte, error) {
	local, err := c.local(name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(local)
}

func (c dirClient) ReadDir(dir string) ([]os.DirEntry, error) {
	local, err := c.local(dir)
	if err != nil {
		return nil, err
	}
	return os.ReadDir(local)
}

func (c dirClient) WriteFile(name string, contents []byte) error {
	local, err := c.local(name)
	if err != nil {
		return err
	}
	// configfs attributes exist already; the mode only matters if they do not.
	return os.WriteFile(local, contents, 0o200)
}

// RemoveAll removes a report entry. configfs entries are removed with
// rmdir, never by deleting their attribute files first.
func (c dirClient) RemoveAll(name string) error {
	local, err := c.local(name)
	if err != nil {
		return err
	}
	return os.Remove(local)
}
