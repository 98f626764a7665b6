package portal

import (
	"crypto/rand"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
)

// Passwords of the users every harness has.
const (
	staffPassword = "correct horse battery"
	adminPassword = "admin staple battery"
)

// clock is a clock the test moves.
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

// harness is a portal in front of a real backend started in this process
// (the simulated TEE, a sealed store, a policy listing the authority
// "lab"), with a staff user "alice" and an admin "root".
type harness struct {
	t      *testing.T
	lb     *localbackend.Backend
	portal *Portal
	srv    *httptest.Server
	users  *Users
	audit  *Audit
	clock  *clock
}

// harnessOptions vary the harness.
type harnessOptions struct {
	// expect replaces what the portal accepts of the backend; nil means
	// the backend's own measurement in the simulated TEE.
	expect *attest.Expectations
	// server, if set, is the URL the portal talks to instead of the
	// backend's own (a proxy in front of it).
	server func(lb *localbackend.Backend) string
	secure bool
	// key is the portal's signing key, and backendKey the one the
	// backend's policy lists; nil means one new key for both.
	key, backendKey *authority.Key
	// measurement is the backend's; nil means the default.
	measurement []byte
}

// newBackend starts a backend whose policy lists key.
func newTestBackend(t *testing.T, key *authority.Key, measurement []byte) *localbackend.Backend {
	t.Helper()
	lb, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Authority: key, Measurement: measurement})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	return lb
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	key := o.key
	if key == nil {
		var err error
		if key, err = authority.GenerateKey("lab"); err != nil {
			t.Fatal(err)
		}
	}
	backendKey := o.backendKey
	if backendKey == nil {
		backendKey = key
	}
	lb := newTestBackend(t, backendKey, o.measurement)
	dir := t.TempDir()
	h := &harness{t: t, lb: lb, users: OpenUsers(dir + "/users.json"), audit: OpenAudit(dir + "/audit.csv"),
		clock: &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}}
	// Cheaper hashes than real users': these tests sign in hundreds of
	// times, under the race detector too. TestPasswordHash checks the
	// real parameters.
	h.users.argon = argonParams{time: 1, memory: 1 << 10, threads: 1}
	for _, u := range []struct {
		name string
		role Role
		pw   string
	}{{"alice", Staff, staffPassword}, {"root", Admin, adminPassword}} {
		if err := h.users.Add(t.Context(), u.name, u.role, u.pw, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	exp := lb.Expectations()
	if o.expect != nil {
		exp = *o.expect
	}
	server := lb.URL
	if o.server != nil {
		server = o.server(lb)
	}
	var err error
	h.portal, err = New(t.Context(), Config{Key: key, Client: client.Config{Server: server, Expectations: exp},
		Users: h.users, Audit: h.audit, SecureCookies: o.secure, Now: h.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if o.secure {
		h.srv = httptest.NewTLSServer(h.portal)
	} else {
		h.srv = httptest.NewServer(h.portal)
	}
	t.Cleanup(h.srv.Close)
	return h
}

// user is a browser without a browser: a cookie jar and the last page.
type user struct {
	h    *harness
	c    *http.Client
	page string // the last page's body
	code int
	url  string // where the last page came from, after redirects
}

func (h *harness) newUser() *user {
	jar, err := cookiejar.New(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	c := *h.srv.Client() // a copy: the server's client is shared
	c.Jar = jar
	return &user{h: h, c: &c}
}

func (u *user) do(req *http.Request) {
	u.h.t.Helper()
	resp, err := u.c.Do(req)
	if err != nil {
		u.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		u.h.t.Fatal(err)
	}
	u.page, u.code, u.url = string(b), resp.StatusCode, resp.Request.URL.Path
}

// get fetches a page.
func (u *user) get(path string) {
	u.h.t.Helper()
	req, err := http.NewRequest("GET", u.h.srv.URL+path, nil)
	if err != nil {
		u.h.t.Fatal(err)
	}
	u.do(req)
}

// post submits a form, with the CSRF token of the last page unless the
// form sets one.
func (u *user) post(path string, form url.Values) {
	u.h.t.Helper()
	if !form.Has("csrf") {
		form.Set("csrf", u.csrf())
	}
	req, err := http.NewRequest("POST", u.h.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		u.h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	u.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

// csrf returns the CSRF token of the last page's forms.
func (u *user) csrf() string {
	m := csrfField.FindStringSubmatch(u.page)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// signIn signs in from the sign-in page.
func (u *user) signIn(name, password string) {
	u.h.t.Helper()
	u.get("/signin")
	u.post("/signin", url.Values{"name": {name}, "password": {password}})
}

var (
	tags   = regexp.MustCompile(`<[^>]*>`)
	spaces = regexp.MustCompile(`\s+`)
)

// text is the last page's text, as a person reads it: without tags,
// entities decoded, white space collapsed.
func (u *user) text() string {
	return spaces.ReplaceAllString(html.UnescapeString(tags.ReplaceAllString(u.page, "")), " ")
}

// mustSee fails unless the last page's text contains each of want.
func (u *user) mustSee(want ...string) {
	u.h.t.Helper()
	for _, w := range want {
		if !strings.Contains(u.text(), w) {
			u.h.t.Fatalf("page %s (%d) does not say %q:\n%s", u.url, u.code, w, u.page)
		}
	}
}

// phone is a phone's side of a test: the secret, the code it shows, and
// a client verified like the app's.
type phone struct {
	secret []byte
	code   string
	c      *client.Client
}

func newPhone(t *testing.T, lb *localbackend.Backend) *phone {
	t.Helper()
	secret := make([]byte, api.TestSecretSize)
	rand.Read(secret)
	c, err := client.New(t.Context(), client.Config{Server: lb.URL, Expectations: lb.Expectations()})
	if err != nil {
		t.Fatal(err)
	}
	return &phone{secret: secret, code: api.TestCode(secret), c: c}
}

// poll asks the backend for the phone's result.
func (p *phone) poll(t *testing.T) api.PollResultResponse {
	t.Helper()
	resp, err := p.c.PollResult(t.Context(), p.secret)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
