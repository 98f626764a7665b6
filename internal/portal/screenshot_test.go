package portal

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/browsertest"
)

// Screenshot widths: a phone's (an iPhone 12 to 15's CSS width) and a
// desktop's.
var widths = []struct {
	name  string
	width int64
}{{"phone", 390}, {"desktop", 1280}}

// TestScreenshots walks through every page at phone and desktop widths,
// checks what a person relies on there (a language, one main heading, a
// label for every field, nothing wider than the screen), and saves a
// full-page PNG of each. Run
//
//	go test ./internal/portal -run TestScreenshots -screenshots DIR
//
// to keep them in DIR (as NN-page-WIDTH.png); without -screenshots they go
// to a temporary directory.
func TestScreenshots(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	dir := *screenshotDir
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOptions{})
	other := attest.Expectations{Measurements: [][]byte{bytes.Repeat([]byte{7}, 32)}, AllowSimulated: true}
	refused := newHarness(t, harnessOptions{expect: &other})
	traceFile := filepath.Join(t.TempDir(), "patient.csv")
	if err := os.WriteFile(traceFile, badCSV(time.Now().Add(-time.Hour).Truncate(time.Minute)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, w := range widths {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			s := &shooter{t: t, dir: dir, width: w.width, suffix: w.name}
			b := h.tabFor(t)
			b.do(chromedp.EmulateViewport(w.width, 800))
			b.open("/signin")
			s.shoot(b, "signin")
			b.signIn("alice", "not the password")
			s.shoot(b, "signin-wrong-password")
			b.signIn("alice", staffPassword)
			s.shoot(b, "result")
			ph := newPhone(t, h.lb)
			b.submit(chromedp.SetValue(chromedp.ID("code"), ph.code), chromedp.Click(chromedp.ID("positive")),
				chromedp.Click(chromedp.CSS(`#page-result button[type="submit"]`)))
			s.shoot(b, "confirm")
			b.submit(chromedp.Click(chromedp.ID("sign")))
			s.shoot(b, "answer")
			b.open("/trace")
			s.shoot(b, "trace")
			b.submit(chromedp.SetUploadFiles(chromedp.ID("trace"), []string{traceFile}), chromedp.Click(chromedp.ID("consent")),
				chromedp.Click(chromedp.CSS(`#page-trace form button[type="submit"]`)))
			s.shoot(b, "trace-errors")
			b.open("/audit")
			s.shoot(b, "audit")
			b.open("/backend")
			s.shoot(b, "backend")
			b.open("/result")
			b.do(chromedp.SetAttributeValue(chromedp.CSS(`#page-result input[name="csrf"]`), "value", "forged"))
			b.submit(chromedp.SetValue(chromedp.ID("code"), ph.code), chromedp.Click(chromedp.ID("negative")),
				chromedp.Click(chromedp.CSS(`#page-result button[type="submit"]`)))
			s.shoot(b, "form-refused")
			b.submit(chromedp.Click(chromedp.CSS(`.signout button`)))
			b.signIn("root", adminPassword)
			s.shoot(b, "users")

			r := refused.tabFor(t)
			r.do(chromedp.EmulateViewport(w.width, 800))
			r.signIn("alice", staffPassword)
			s.shoot(r, "backend-refused")
		})
	}
}

// shooter checks and saves the pages of one width.
type shooter struct {
	t      *testing.T
	dir    string
	width  int64
	suffix string
	n      int
}

// pageChecks is what every page must satisfy, as JavaScript returning
// the list of what it does not.
const pageChecks = `(() => {
	const bad = [];
	if (document.documentElement.lang !== 'en') bad.push('no lang="en"');
	const h1 = document.querySelectorAll('h1').length;
	if (h1 !== 1) bad.push(h1 + ' h1 elements');
	for (const el of document.querySelectorAll('input, select, textarea')) {
		if (el.type === 'hidden') continue;
		if (!el.labels || el.labels.length === 0) bad.push('no label for ' + (el.id || el.name));
	}
	if (document.documentElement.scrollWidth > window.innerWidth) bad.push('wider than the screen: ' + document.documentElement.scrollWidth + 'px');
	return bad;
})()`

func (s *shooter) shoot(b *tab, name string) {
	s.t.Helper()
	s.n++
	bad, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](pageChecks))
	if err != nil {
		s.t.Fatal(err)
	}
	for _, p := range bad {
		s.t.Errorf("%s at %d px: %s", name, s.width, p)
	}
	img, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || int64(cfg.Width) != s.width {
		s.t.Errorf("%s: screenshot %d px wide (%v), want %d", name, cfg.Width, err, s.width)
	}
	file := filepath.Join(s.dir, filepathName(s.n, name, s.suffix))
	if err := os.WriteFile(file, img, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func filepathName(n int, page, width string) string {
	return fmt.Sprintf("%02d-%s-%s.png", n, page, width)
}
