// Package tsm is the part of the confidential-VM TEEs (tdx, snp) that talks
// to Linux's configfs-tsm report interface through
// github.com/google/go-configfs-tsm: opening it at a configurable mount
// point, checking which guest driver provides it, and requesting a report.
package tsm

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
)

// DefaultRoot is where Linux mounts configfs-tsm.
const DefaultRoot = configfsi.TsmPrefix

// Open returns a client for the configfs-tsm tree at root (or c, when not
// nil, which tests use for go-configfs-tsm's fake) after checking that the
// guest driver named want provides it. vm names the kind of VM in messages;
// errors wrap notFound.
func Open(root string, c configfsi.Client, want, vm string, notFound error) (configfsi.Client, error) {
	if c == nil {
		dir := filepath.Join(root, "report")
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%w: no configfs-tsm at %s (not running in %s confidential VM?)", notFound, dir, vm)
		}
		c = dirClient{root: root}
	}
	p, err := ReadOption(c, root, "provider", notFound)
	if err != nil {
		return nil, err
	}
	if got := strings.TrimSpace(string(p)); got != want {
		return nil, fmt.Errorf("%w: configfs-tsm at %s is provided by %q, not %q (not running in %s confidential VM?)", notFound, root, got, want, vm)
	}
	return c, nil
}

// ReadOption reads an attribute of a fresh configfs-tsm report entry;
// errors wrap notFound.
func ReadOption(c configfsi.Client, root, name string, notFound error) ([]byte, error) {
	r, err := report.Create(c, &report.Request{})
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open a configfs-tsm report under %s: %v", notFound, root, err)
	}
	defer r.Destroy()
	b, err := r.ReadOption(name)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read configfs-tsm %s under %s: %v", notFound, name, root, err)
	}
	return b, nil
}

// Get requests a report. The host's quoting service may take a while; if
// ctx ends first, Get returns ctx's error and the request finishes in the
// background. A report made by another driver than want is refused with an
// error wrapping notFound.
func Get(ctx context.Context, c configfsi.Client, req *report.Request, want string, notFound error) (*report.Response, error) {
	type result struct {
		resp *report.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := report.Get(c, req)
		done <- result{resp, err}
	}()
	var res result
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res = <-done:
	}
	if res.err != nil {
		return nil, fmt.Errorf("configfs-tsm report: %w", res.err)
	}
	if got := strings.TrimSpace(res.resp.Provider); got != want {
		return nil, fmt.Errorf("%w: configfs-tsm report made by %q, not %q", notFound, got, want)
	}
	return res.resp, nil
}

// dirClient gives go-configfs-tsm access to a configfs-tsm tree mounted at
// root. The library names every path under /sys/kernel/config/tsm; dirClient
// maps those paths under root, so that the mount point is configurable.
type dirClient struct{ root string }

var _ configfsi.Client = dirClient{}

func (c dirClient) local(p string) (string, error) {
	rel, ok := strings.CutPrefix(path.Clean(p), configfsi.TsmPrefix)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return "", fmt.Errorf("tee/tsm: path %q is outside configfs-tsm", p)
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
