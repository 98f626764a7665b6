// Package browsertest runs Debian's chromium, headless, through the
// DevTools protocol (github.com/chromedp/chromedp) for the tests of the web
// pages people use: the health authority's portal and the backend's
// transparency page. One browser serves a test binary; each test gets a
// tab in a browser context of its own (its own cookies). Tests skip when
// no chromium is installed, unless CONFTRACE_REQUIRE_CHROMIUM is set, as
// scripts/test.sh does after installing it.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TabTimeout bounds how long a test's tab lives.
const TabTimeout = 2 * time.Minute

// Path returns the path of Debian's chromium (or another Chrome) on the
// PATH, or "".
func Path() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// NeedChromium returns chromium's path, or skips the test without one
// (fails it under CONFTRACE_REQUIRE_CHROMIUM).
func NeedChromium(t testing.TB) string {
	t.Helper()
	path := Path()
	if path == "" {
		if os.Getenv("CONFTRACE_REQUIRE_CHROMIUM") != "" {
			t.Fatal("CONFTRACE_REQUIRE_CHROMIUM is set, but no chromium is on the PATH")
		}
		t.Skip("no chromium on the PATH: the browser tests need Debian's chromium (apt-get install chromium; scripts/test.sh installs it)")
	}
	return path
}

// Browser is a chromium that tests share, started at first use. Its zero
// value is ready; Close it from TestMain.
type Browser struct {
	once   sync.Once
	ctx    context.Context // a browser that runs
	cancel context.CancelFunc
	err    error
}

// Tab returns a new tab, in a browser context of its own, that ends with
// the test (or after TabTimeout).
func (b *Browser) Tab(t testing.TB) context.Context {
	t.Helper()
	path := NeedChromium(t)
	b.once.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.DisableGPU,
			chromedp.WindowSize(1280, 900))
		if os.Geteuid() == 0 {
			// Chromium refuses to run as root with its sandbox; CI runs
			// as root, in a throwaway machine, on pages of the tests only.
			opts = append(opts, chromedp.NoSandbox)
		}
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(alloc)
		b.ctx = ctx
		b.cancel = func() { cancel(); cancelAlloc() }
		// Start the browser now, so that every test's tab shares it.
		b.err = chromedp.Do(ctx)
	})
	if b.err != nil {
		t.Fatalf("starting %s: %v", path, b.err)
	}
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, TabTimeout)
	t.Cleanup(func() { cancelTimeout(); cancel() })
	return ctx
}

// Close stops the browser, if it was started.
func (b *Browser) Close() {
	if b.cancel != nil {
		b.cancel()
	}
}
