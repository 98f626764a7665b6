package transparency_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/browsertest"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// The browser tests drive Debian's chromium, headless, through the
// DevTools protocol, as the portal's do (internal/portal): they skip when
// no chromium is installed, unless CONFTRACE_REQUIRE_CHROMIUM is set
// (scripts/test.sh installs it and sets it).

var screenshotDir = flag.String("screenshots", "", "TestScreenshots writes PNGs of the page, at phone and desktop widths, to this `directory`")

// theBrowser is shared by the package's tests; TestMain closes it.
var theBrowser browsertest.Browser

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	theBrowser.Close()
	os.Exit(code)
}

// tab returns a new tab of the shared browser, with a viewport width px
// wide, that ends with the test.
func tab(t *testing.T, width int64) context.Context {
	t.Helper()
	ctx := theBrowser.Tab(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 800)); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// Names that would be markup if the page did not escape them.
const (
	hostileAuthority = `<script>alert("lab")</script>`
	hostileKeyServer = `"><img src=x onerror=alert(1)>`
)

// clock is the backend's clock, which the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// startBackend starts a real backend in this process (the simulated TEE,
// a sealed store) whose policy names hostile names, an operator contact
// and statistics, under a release statement of a governance set, and
// lets three days close so that it released their statistics.
func startBackend(t *testing.T) *localbackend.Backend {
	t.Helper()
	lab, err := authority.GenerateKey(hostileAuthority)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.AnswerReleaseMillis = 0
	p.GAENExportKeys = []policy.ExportKey{{Name: hostileKeyServer, PublicKey: der}}
	p.OperatorContact = "https://health.example/contact"
	p.Statistics = policy.NewStatistics(1000)
	var members []*release.Key
	for _, name := range []string{"health-office", "auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, k)
	}
	c := &clock{t: time.Now().Add(-3 * 24 * time.Hour)}
	lb, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Authority: lab, Policy: &p, Now: c.now,
		Governance: members, ReleaseSequence: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	for range 3 {
		c.advance(24 * time.Hour)
		if err := lb.Service.Maintain(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return lb
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.Join(strings.Fields(s), " ")
}

func evaluate[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

func TestBrowserPage(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	lb := startBackend(t)
	ctx := tab(t, 1280)
	if err := chromedp.Do(ctx, chromedp.Navigate(lb.URL+"/")); err != nil {
		t.Fatal(err)
	}
	if got := text(t, ctx, "#simulated"); !strings.Contains(got, "Simulated TEE: no protection.") {
		t.Errorf("simulation banner: %q", got)
	}
	if got, want := text(t, ctx, "#measurement"), hex.EncodeToString(lb.TEE.Measurement()); got != want {
		t.Errorf("measurement %q, want %q", got, want)
	}
	if got := text(t, ctx, "#host-warning"); !strings.Contains(got, "could alter it") || !strings.Contains(got, "conftrace verify") {
		t.Errorf("the page does not say that the host could alter it: %q", got)
	}
	if got := text(t, ctx, "#authorities"); !strings.Contains(got, hostileAuthority+", Ed25519 key "+hex.EncodeToString(lb.Authority.PublicKey())) {
		t.Errorf("authorities: %q", got)
	}
	if got := text(t, ctx, "#gaen-keys"); !strings.Contains(got, hostileKeyServer+":") {
		t.Errorf("GAEN export keys: %q", got)
	}
	// The hostile names are text, not elements: the page has no script
	// and no image at all.
	if n := evaluate[int](t, ctx, `document.querySelectorAll('script, img').length`); n != 0 {
		t.Errorf("%d script or img elements on the page", n)
	}
	if got := evaluate[string](t, ctx, `document.querySelector('#operator a').href`); got != "https://health.example/contact" {
		t.Errorf("operator contact links to %q", got)
	}
	want := "--server " + lb.URL + " --tee sim --measurement " + hex.EncodeToString(lb.TEE.Measurement()) + " --allow-simulated"
	if got := text(t, ctx, "#verify-command"); !strings.Contains(got, want) {
		t.Errorf("verify command %q lacks %q", got, want)
	}
	if got := text(t, ctx, "#statistics-rule"); !strings.Contains(got, "ε = 1 per count and per day") {
		t.Errorf("statistics rule: %q", got)
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll('#statistics svg[role="img"]').length`); n == 0 {
		t.Errorf("no statistics chart after three closed days: %q", text(t, ctx, "#statistics"))
	}
	// The style sheet applied, so the Content Security Policy's hash
	// matches it: the header has its colour.
	if got := evaluate[string](t, ctx, `getComputedStyle(document.querySelector('header.top')).backgroundColor`); got != "rgb(8, 58, 115)" {
		t.Errorf("header background %q: the style sheet was not applied", got)
	}
	// Keyboard users reach the skip link first, and it leads to main.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	if got := evaluate[string](t, ctx, `document.activeElement.className + ' ' + document.activeElement.getAttribute('href')`); got != "skip #main" {
		t.Errorf("the first Tab focuses %q, want the skip link", got)
	}
}

// Screenshot widths: a phone's (an iPhone 12 to 15's CSS width) and a
// desktop's.
var widths = []struct {
	name  string
	width int64
}{{"phone", 390}, {"desktop", 1280}}

// pageChecks is what the page must satisfy, as JavaScript returning the
// list of what it does not.
const pageChecks = `(() => {
	const bad = [];
	if (document.documentElement.lang !== 'en') bad.push('no lang="en"');
	const h1 = document.querySelectorAll('h1').length;
	if (h1 !== 1) bad.push(h1 + ' h1 elements');
	for (const sel of ['header', 'nav', 'main', 'footer']) {
		if (document.querySelectorAll(sel).length !== 1) bad.push('not one ' + sel + ' landmark');
	}
	for (const s of document.querySelectorAll('section')) {
		const h = s.querySelector('h2');
		if (!h || s.getAttribute('aria-labelledby') !== h.id) bad.push('section ' + s.id + ' is not labelled by its heading');
	}
	for (const svg of document.querySelectorAll('svg')) {
		if (svg.getAttribute('role') !== 'img' || !svg.getAttribute('aria-label')) bad.push('an unlabelled chart');
	}
	if (document.documentElement.scrollWidth > window.innerWidth) bad.push('wider than the screen: ' + document.documentElement.scrollWidth + 'px');
	return bad;
})()`

// TestScreenshots checks the page at phone and desktop widths (a language,
// one main heading, landmarks, labelled sections and charts, nothing wider
// than the screen) and saves a full-page PNG of each. Run
//
//	go test ./internal/transparency -run TestScreenshots -screenshots DIR
//
// to keep them in DIR (as transparency-WIDTH.png); without -screenshots
// they go to a temporary directory.
func TestScreenshots(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	dir := *screenshotDir
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lb := startBackend(t)
	for _, w := range widths {
		t.Run(w.name, func(t *testing.T) {
			ctx := tab(t, w.width)
			if err := chromedp.Do(ctx, chromedp.Navigate(lb.URL+"/")); err != nil {
				t.Fatal(err)
			}
			for _, p := range evaluate[[]string](t, ctx, pageChecks) {
				t.Errorf("at %d px: %s", w.width, p)
			}
			img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := png.DecodeConfig(bytes.NewReader(img))
			if err != nil || int64(cfg.Width) != w.width {
				t.Errorf("screenshot %d px wide (%v), want %d", cfg.Width, err, w.width)
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("transparency-%s.png", w.name)), img, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}
