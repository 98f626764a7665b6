package portal

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/browsertest"
)

// The browser tests drive Debian's chromium, headless, through the
// DevTools protocol: one browser for the whole package, a fresh browser
// context (its own cookies) for each test. They skip when no chromium is
// installed, unless CONFTRACE_REQUIRE_CHROMIUM is set (scripts/test.sh
// installs it and sets it).

var screenshotDir = flag.String("screenshots", "", "TestScreenshots writes PNGs of every page, at phone and desktop widths, to this `directory`")

// theBrowser is shared by the package's tests; TestMain closes it.
var theBrowser browsertest.Browser

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	theBrowser.Close()
	os.Exit(code)
}

// tab is a browser tab on a harness's portal.
type tab struct {
	t   *testing.T
	ctx context.Context
	h   *harness
}

func (h *harness) tab() *tab { return h.tabFor(h.t) }

// tabFor is tab for a subtest t of the harness's test.
func (h *harness) tabFor(t *testing.T) *tab { return &tab{t: t, ctx: theBrowser.Tab(t), h: h} }

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

// open loads a page of the portal.
func (b *tab) open(path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.h.srv.URL + path))
}

// submit runs actions that submit a form (a click, an Enter) and waits
// for the page it leads to; it returns its HTTP status.
func (b *tab) submit(actions ...chromedp.Action[chromedp.Void]) int64 {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, actions...)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp.Status
}

// text returns the text of the first element sel selects, waiting for it.
func (b *tab) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// page returns the id of the page shown: the element #page-NAME.
func (b *tab) page() string {
	b.t.Helper()
	id, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('main > div').id`))
	if err != nil {
		b.t.Fatal(err)
	}
	return strings.TrimPrefix(id, "page-")
}

// signIn fills in the name and password and presses Enter in the
// password field, as with a keyboard; it returns the status of the page
// that follows.
func (b *tab) signIn(name, password string) int64 {
	b.t.Helper()
	b.open("/signin")
	b.do(chromedp.SetValue(chromedp.ID("name"), name), chromedp.SetValue(chromedp.ID("password"), password))
	return b.submit(chromedp.SendKeys(chromedp.ID("password"), kb.Enter))
}

func TestBrowserIssuePositiveResult(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	h := newHarness(t, harnessOptions{})
	ph := newPhone(t, h.lb)
	b := h.tab()
	if code := b.signIn("alice", staffPassword); code != 200 || b.page() != "result" {
		t.Fatalf("signing in led to %s (%d)", b.page(), code)
	}
	b.submit(chromedp.SetValue(chromedp.ID("code"), ph.code), chromedp.Click(chromedp.ID("positive")),
		chromedp.Click(chromedp.CSS(`#page-result button[type="submit"]`)))
	if b.page() != "confirm" || b.text("#confirm-code") != ph.code || b.text("#confirm-result") != "Positive" {
		t.Fatalf("confirmation page %s shows %q, %q", b.page(), b.text("#confirm-code"), b.text("#confirm-result"))
	}
	if r := ph.poll(t); r.Result != api.Pending {
		t.Fatalf("the result reached the backend before it was confirmed: %q", r.Result)
	}
	b.submit(chromedp.Click(chromedp.ID("sign")))
	if got := b.text("#outcome"); !strings.Contains(got, "accepted the positive result for test "+ph.code) {
		t.Fatalf("answer page: %q", got)
	}
	r := ph.poll(t)
	if r.Result != api.Positive || len(r.UploadAuthorization) == 0 {
		t.Errorf("the phone polled %+v after the portal signed; want positive with an upload authorization", r)
	}
	b.open("/audit")
	if got := b.text("#audit tbody"); !strings.Contains(got, ph.code) || !strings.Contains(got, "accepted") {
		t.Errorf("audit page: %q", got)
	}
}

func TestBrowserWrongPasswordAndLockOut(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	h := newHarness(t, harnessOptions{})
	b := h.tab()
	for i := range MaxFailures {
		if code := b.signIn("alice", fmt.Sprintf("wrong password %d", i)); code != 401 {
			t.Fatalf("wrong password %d: %d, want 401", i+1, code)
		}
		if got := b.text(".error"); got != "Wrong user name or password." {
			t.Fatalf("wrong password %d: %q", i+1, got)
		}
	}
	if code := b.signIn("alice", staffPassword); code != 429 || !strings.Contains(b.text(".error"), "locked until") {
		t.Fatalf("the right password during lock-out: %d, %q", code, b.text(".error"))
	}
	h.clock.advance(LockDuration + time.Second)
	if b.signIn("alice", staffPassword); b.page() != "result" {
		t.Errorf("after the lock-out ended, signing in led to %s", b.page())
	}
}

func TestBrowserCSRFRefused(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	h := newHarness(t, harnessOptions{})
	ph := newPhone(t, h.lb)
	b := h.tab()
	b.signIn("alice", staffPassword)
	b.open("/result")
	// A page that is not the portal's could post the same fields, but
	// not the session's token: replace it, as such a page would have to.
	b.do(chromedp.SetAttributeValue(chromedp.CSS(`#page-result input[name="csrf"]`), "value", "forged"))
	code := b.submit(chromedp.SetValue(chromedp.ID("code"), ph.code), chromedp.Click(chromedp.ID("positive")),
		chromedp.Click(chromedp.CSS(`#page-result button[type="submit"]`)))
	if code != 403 || b.page() != "error" || !strings.Contains(b.text("#problem"), "security token") {
		t.Fatalf("a form with a forged token: %d, page %s", code, b.page())
	}
	if r := ph.poll(t); r.Result != api.Pending {
		t.Errorf("a refused form signed: %q", r.Result)
	}
}

func TestBrowserSessionExpired(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	h := newHarness(t, harnessOptions{})
	b := h.tab()
	b.signIn("alice", staffPassword)
	h.clock.advance(IdleTimeout + time.Minute)
	b.submit(chromedp.Click(chromedp.CSS(`nav a[href="/audit"]`)))
	if b.page() != "signin" || b.text(".notice") != "Your session expired. Sign in again." {
		t.Errorf("after %v idle, the audit link led to %s", IdleTimeout, b.page())
	}
}

func TestBrowserBadTraceFile(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	h := newHarness(t, harnessOptions{})
	b := h.tab()
	b.signIn("alice", staffPassword)
	file := filepath.Join(t.TempDir(), "patient.csv")
	if err := os.WriteFile(file, badCSV(time.Now().Add(-time.Hour).Truncate(time.Minute)), 0o600); err != nil {
		t.Fatal(err)
	}
	b.open("/trace")
	code := b.submit(chromedp.SetUploadFiles(chromedp.ID("trace"), []string{file}), chromedp.Click(chromedp.ID("consent")),
		chromedp.Click(chromedp.CSS(`#page-trace form button[type="submit"]`)))
	if code != 422 {
		t.Fatalf("a bad trace file: %d, want 422", code)
	}
	rows, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#trace-problems tbody tr')].map(r => r.cells[0].textContent + ': ' + r.cells[1].textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"3: latitude", "4: ", "5: ", "7: impossible speed"}
	if len(rows) != len(want) {
		t.Fatalf("problems shown: %q; want lines 3, 4, 5 and 7", rows)
	}
	for i, w := range want {
		if !strings.HasPrefix(rows[i], w) {
			t.Errorf("problem %d: %q, want %q…", i, rows[i], w)
		}
	}
}

func TestBrowserWrongAttestationRefused(t *testing.T) {
	t.Parallel()
	browsertest.NeedChromium(t)
	other := attest.Expectations{Measurements: [][]byte{bytes.Repeat([]byte{7}, 32)}, AllowSimulated: true}
	h := newHarness(t, harnessOptions{expect: &other})
	b := h.tab()
	b.signIn("alice", staffPassword)
	if got := b.text("#backend-refused"); !strings.Contains(got, "Signing is disabled") || !strings.Contains(got, "measurement") {
		t.Fatalf("banner: %q", got)
	}
	disabled, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.querySelector('#page-result button[type="submit"]').disabled`))
	if err != nil || !disabled {
		t.Errorf("the Review button is enabled (%v) while the backend is not verified", err)
	}
	b.open("/backend")
	if got := b.text("#backend-status"); !strings.HasPrefix(got, "Not verified") {
		t.Errorf("backend page: %q", got)
	}
}
