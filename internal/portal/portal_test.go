package portal

import (
	"bytes"
	"encoding/csv"
	"html"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/internal/localbackend"
)

var draftField = regexp.MustCompile(`name="draft" value="([^"]*)"`)

// enterResult fills in the result form and returns the draft's ID from
// the confirmation page.
func (u *user) enterResult(code, result string) string {
	u.h.t.Helper()
	u.get("/result")
	u.post("/result", url.Values{"code": {code}, "result": {result}, "test_date": {time.Now().UTC().Format(api.DateLayout)}})
	m := draftField.FindStringSubmatch(u.page)
	if m == nil {
		u.h.t.Fatalf("no confirmation after entering a result (%d):\n%s", u.code, u.page)
	}
	return m[1]
}

func TestIssuePositiveResult(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ph := newPhone(t, h.lb)
	if r := ph.poll(t); r.Result != api.Pending {
		t.Fatalf("before any result the phone polled %q", r.Result)
	}
	u := h.newUser()
	u.signIn("alice", staffPassword)
	if u.url != "/result" {
		t.Fatalf("staff landed on %s after signing in, want /result", u.url)
	}
	// Codes are accepted without dashes and in lower case, as people type them.
	id := u.enterResult(strings.ToLower(strings.ReplaceAll(ph.code, "-", "")), "positive")
	u.mustSee("Check and sign", ph.code, "Positive")
	if r := ph.poll(t); r.Result != api.Pending {
		t.Fatalf("the result reached the backend before it was confirmed: %q", r.Result)
	}
	u.post("/result/submit", url.Values{"draft": {id}})
	if u.code != http.StatusOK {
		t.Fatalf("submitting: %d\n%s", u.code, u.page)
	}
	u.mustSee("Result submitted", "accepted the positive result for test "+ph.code)
	r := ph.poll(t)
	if r.Result != api.Positive || len(r.UploadAuthorization) == 0 {
		t.Fatalf("after the portal signed, the phone polled %+v; want positive with an upload authorization", r)
	}

	// The same confirmation, sent again, signs nothing more.
	u.post("/result/submit", url.Values{"draft": {id}})
	if u.code != http.StatusConflict {
		t.Errorf("a confirmation sent twice: %d, want 409", u.code)
	}

	entries, err := h.audit.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("audit log has %d entries, want 2 (signed, accepted): %+v", len(entries), entries)
	}
	for i, want := range []string{"accepted", "signed"} {
		e := entries[i]
		if e.User != "alice" || e.Action != ActionResult || e.TestCode != ph.code || e.Outcome != want || e.Ref != entries[0].Ref {
			t.Errorf("audit entry %d: %+v; want alice's %s result for %s", i, e, want, ph.code)
		}
	}
	if !strings.HasPrefix(entries[0].Detail, "positive, sample ") {
		t.Errorf("audit detail %q", entries[0].Detail)
	}

	u.get("/audit")
	u.mustSee(ph.code, "alice", "accepted")
	resp, err := u.c.Get(h.srv.URL + "/audit.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
		t.Errorf("audit CSV Content-Disposition %q, want an attachment", cd)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || strings.Join(rows[0], ",") != "time,user,action,ref,test_code,detail,outcome" ||
		rows[1][6] != "signed" || rows[2][6] != "accepted" || rows[2][4] != ph.code {
		t.Errorf("audit CSV, oldest first:\n%v", rows)
	}
}

func TestNegativeResult(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ph := newPhone(t, h.lb)
	u := h.newUser()
	u.signIn("alice", staffPassword)
	id := u.enterResult(ph.code, "negative")
	u.post("/result/submit", url.Values{"draft": {id}})
	u.mustSee("accepted the negative result")
	if r := ph.poll(t); r.Result != api.Negative || r.UploadAuthorization != nil {
		t.Errorf("phone polled %+v, want negative without authorization", r)
	}
}

// What staff enter is checked before anything is shown for confirmation.
func TestResultFormChecks(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	u := h.newUser()
	u.signIn("alice", staffPassword)
	ph := newPhone(t, h.lb)
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(api.DateLayout)
	today := time.Now().UTC().Format(api.DateLayout)
	tests := []struct {
		name string
		form url.Values
		want string
	}{
		{"bad check character", url.Values{"code": {ph.code[:len(ph.code)-1] + "Z"}, "result": {"positive"}, "test_date": {today}}, "The test code is not valid"},
		{"no result", url.Values{"code": {ph.code}, "test_date": {today}}, "Choose positive or negative"},
		{"future date", url.Values{"code": {ph.code}, "result": {"positive"}, "test_date": {tomorrow}}, "in the future"},
		{"not a date", url.Values{"code": {ph.code}, "result": {"positive"}, "test_date": {"1.3.2026"}}, "is not a date"},
	}
	for _, tt := range tests {
		u.get("/result")
		u.post("/result", tt.form)
		if u.code != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d, want 422", tt.name, u.code)
		}
		u.mustSee(tt.want)
	}
}

func TestWrongPassword(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	u := h.newUser()
	u.signIn("alice", "not alice's password")
	if u.code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", u.code)
	}
	u.mustSee("Wrong user name or password")
	// An unknown name gets the very same answer.
	u.signIn("mallory", "not anyone's password")
	if u.code != http.StatusUnauthorized {
		t.Errorf("unknown user: %d, want 401", u.code)
	}
	u.mustSee("Wrong user name or password")
	u.get("/result")
	if u.url != "/signin" {
		t.Errorf("after failed sign-ins /result led to %s, want /signin", u.url)
	}
}

func TestLockOut(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	u := h.newUser()
	for i := range MaxFailures {
		u.signIn("alice", "guess number "+string(rune('a'+i)))
		if u.code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i+1, u.code)
		}
	}
	u.signIn("alice", staffPassword)
	if u.code != http.StatusTooManyRequests {
		t.Fatalf("right password after %d wrong ones: %d, want 429 (locked)", MaxFailures, u.code)
	}
	u.mustSee("locked until")
	// Other users are not locked.
	v := h.newUser()
	v.signIn("root", adminPassword)
	if v.url != "/users" {
		t.Errorf("admin sign-in during alice's lock-out led to %s", v.url)
	}
	h.clock.advance(LockDuration - time.Second)
	u.signIn("alice", staffPassword)
	if u.code != http.StatusTooManyRequests {
		t.Errorf("a second before the lock ends: %d, want 429", u.code)
	}
	h.clock.advance(2 * time.Second)
	u.signIn("alice", staffPassword)
	if u.url != "/result" {
		t.Errorf("after the lock-out the right password led to %s (%d)", u.url, u.code)
	}

	// Unknown names lock the same way: the answer never tells whether a
	// name exists.
	for range MaxFailures {
		u.signIn("mallory", "not anyone's password")
	}
	u.signIn("mallory", "not anyone's password")
	if u.code != http.StatusTooManyRequests {
		t.Errorf("unknown name after %d failures: %d, want 429", MaxFailures, u.code)
	}
}

func TestCSRFRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ph := newPhone(t, h.lb)
	u := h.newUser()
	u.signIn("alice", staffPassword)
	form := func(token string) url.Values {
		return url.Values{"code": {ph.code}, "result": {"positive"}, "test_date": {time.Now().UTC().Format(api.DateLayout)}, "csrf": {token}}
	}
	u.get("/result")
	for name, token := range map[string]string{"no token": "", "forged token": "Zm9yZ2Vk"} {
		u.post("/result", form(token))
		if u.code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, u.code)
		}
		u.mustSee("Form refused")
	}
	// Another session's token is no better.
	v := h.newUser()
	v.signIn("alice", staffPassword)
	v.get("/result")
	u.post("/result", form(v.csrf()))
	if u.code != http.StatusForbidden {
		t.Errorf("another session's token: %d, want 403", u.code)
	}
	// With a valid draft, its confirmation without the token.
	u.get("/result")
	id := u.enterResult(ph.code, "positive")
	u.post("/result/submit", url.Values{"draft": {id}, "csrf": {"x"}})
	if u.code != http.StatusForbidden {
		t.Errorf("confirmation with a forged token: %d, want 403", u.code)
	}
	// A cross-site POST carrying the right token is refused by the
	// browser's own headers.
	u.get("/result")
	req, _ := http.NewRequest("POST", h.srv.URL+"/result/submit", strings.NewReader(url.Values{"draft": {id}, "csrf": {u.csrf()}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	u.do(req)
	if u.code != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", u.code)
	}
	// The sign-in form needs its token too.
	w := h.newUser()
	w.get("/signin")
	w.post("/signin", url.Values{"name": {"alice"}, "password": {staffPassword}, "csrf": {"forged"}})
	if w.code != http.StatusForbidden {
		t.Errorf("sign-in with a forged token: %d, want 403", w.code)
	}
	w.get("/result")
	if w.url != "/signin" {
		t.Errorf("a refused sign-in signed in: /result led to %s", w.url)
	}
	if r := ph.poll(t); r.Result != api.Pending {
		t.Errorf("a refused form signed a result: %q", r.Result)
	}
	if e, _ := h.audit.Entries(); len(e) != 0 {
		t.Errorf("refused forms left audit entries: %+v", e)
	}
}

func TestSessionExpires(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ph := newPhone(t, h.lb)
	u := h.newUser()
	u.signIn("alice", staffPassword)
	id := u.enterResult(ph.code, "positive")
	h.clock.advance(IdleTimeout + time.Second)
	u.post("/result/submit", url.Values{"draft": {id}})
	if u.url != "/signin" {
		t.Fatalf("a confirmation after %v idle led to %s (%d), want /signin", IdleTimeout, u.url, u.code)
	}
	u.mustSee("Your session expired")
	if r := ph.poll(t); r.Result != api.Pending {
		t.Errorf("an expired session signed a result: %q", r.Result)
	}
	// Kept busy, a session still ends SessionLifetime after sign-in.
	u.signIn("alice", staffPassword)
	step := IdleTimeout / 2
	for elapsed := step; elapsed <= SessionLifetime; elapsed += step {
		h.clock.advance(step)
		u.get("/audit")
		if u.url != "/audit" {
			t.Fatalf("an active session ended after %v", elapsed)
		}
	}
	h.clock.advance(time.Second)
	u.get("/audit")
	if u.url != "/signin" {
		t.Errorf("a session older than %v still served %s", SessionLifetime, u.url)
	}
	// Signing out ends the session.
	u.signIn("alice", staffPassword)
	u.post("/signout", url.Values{})
	u.mustSee("You are signed out")
	u.get("/audit")
	if u.url != "/signin" {
		t.Errorf("after signing out /audit led to %s", u.url)
	}
}

func TestRoles(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	staff, admin, anon := h.newUser(), h.newUser(), h.newUser()
	staff.signIn("alice", staffPassword)
	admin.signIn("root", adminPassword)
	for _, path := range []string{"/users"} {
		staff.get(path)
		if staff.code != http.StatusForbidden {
			t.Errorf("staff GET %s: %d, want 403", path, staff.code)
		}
	}
	staff.get("/result")
	staff.post("/users/add", url.Values{"name": {"eve"}, "role": {"admin"}, "password": {"eve's long password"}, "password2": {"eve's long password"}})
	if staff.code != http.StatusForbidden {
		t.Errorf("staff adding a user: %d, want 403", staff.code)
	}
	if _, ok, _ := h.users.Lookup("eve"); ok {
		t.Error("staff added a user")
	}
	for _, path := range []string{"/result", "/trace"} {
		admin.get(path)
		if admin.code != http.StatusForbidden {
			t.Errorf("admin GET %s: %d, want 403", path, admin.code)
		}
	}
	admin.get("/users")
	admin.post("/result", url.Values{"code": {"x"}, "result": {"positive"}})
	if admin.code != http.StatusForbidden {
		t.Errorf("admin POST /result: %d, want 403", admin.code)
	}
	for _, path := range []string{"/result", "/audit", "/audit.csv", "/users", "/backend"} {
		anon.get(path)
		if anon.url != "/signin" {
			t.Errorf("anonymous GET %s led to %s, want /signin", path, anon.url)
		}
	}
	for _, u := range []*user{staff, admin} {
		u.get("/audit")
		if u.code != http.StatusOK {
			t.Errorf("%s GET /audit: %d", u.url, u.code)
		}
	}
}

func TestAdminManagesUsers(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	admin, alice := h.newUser(), h.newUser()
	admin.signIn("root", adminPassword)
	alice.signIn("alice", staffPassword)

	admin.get("/users")
	admin.post("/users/add", url.Values{"name": {"bob"}, "role": {"staff"}, "password": {"bob's long password"}, "password2": {"bob's other password"}})
	admin.mustSee("The two passwords differ")
	admin.post("/users/add", url.Values{"name": {"bob"}, "role": {"staff"}, "password": {"short"}, "password2": {"short"}})
	admin.mustSee("Not added", "at least 12")
	admin.post("/users/add", url.Values{"name": {"bob"}, "role": {"staff"}, "password": {"bob's long password"}, "password2": {"bob's long password"}})
	admin.mustSee("Added bob (staff)")
	bob := h.newUser()
	bob.signIn("bob", "bob's long password")
	if bob.url != "/result" {
		t.Errorf("the new user's sign-in led to %s", bob.url)
	}

	admin.post("/users/remove", url.Values{"name": {"root"}})
	admin.mustSee("You cannot remove yourself")
	admin.post("/users/remove", url.Values{"name": {"alice"}})
	admin.mustSee("Removed alice")
	// A removed user's session ends at its next request.
	alice.get("/result")
	if alice.url != "/signin" {
		t.Errorf("a removed user's session still served %s", alice.url)
	}
	alice.mustSee("your account changed")
}

// A portal that cannot verify its backend signs nothing and says why.
func TestWrongAttestationRefused(t *testing.T) {
	other := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name string
		o    harnessOptions
		want string
	}{
		{"other measurement", harnessOptions{expect: &attest.Expectations{Measurements: [][]byte{other}, AllowSimulated: true}}, "measurement"},
		{"simulation not allowed", harnessOptions{expect: &attest.Expectations{}}, "simulated"},
		{"key not in policy", harnessOptions{backendKey: mustKey(t, "lab")}, "another public key"},
		{"name not in policy", harnessOptions{backendKey: mustKey(t, "other-lab")}, `does not list authority "lab"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.o)
			st := h.portal.Status()
			if st.Verified || !strings.Contains(st.Problem, tt.want) {
				t.Fatalf("status %+v; want unverified, saying %q", st, tt.want)
			}
			ph := newPhone(t, h.lb)
			u := h.newUser()
			u.signIn("alice", staffPassword)
			u.mustSee("Signing is disabled", tt.want)
			u.get("/result")
			u.post("/result", url.Values{"code": {ph.code}, "result": {"positive"}, "test_date": {time.Now().UTC().Format(api.DateLayout)}})
			if u.code != http.StatusUnprocessableEntity {
				t.Errorf("entering a result: %d, want 422", u.code)
			}
			u.mustSee("did not verify")
			u.post("/backend/verify", url.Values{})
			if u.code != http.StatusBadGateway {
				t.Errorf("verifying again: %d, want 502", u.code)
			}
			if e, _ := h.audit.Entries(); len(e) != 0 {
				t.Errorf("audit entries: %+v", e)
			}
		})
	}
}

func mustKey(t *testing.T, name string) *authority.Key {
	t.Helper()
	k, err := authority.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A portal started without a pinned measurement pins the code it found
// then: a backend that runs other code later is refused.
func TestPinnedOnFirstUse(t *testing.T) {
	key := mustKey(t, "lab")
	mB := bytes.Repeat([]byte{0xbb}, 32)
	other := newTestBackend(t, key, mB)
	var target atomic.Pointer[url.URL]
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	point := func(raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		target.Store(u)
	}
	var first string
	h := newHarness(t, harnessOptions{key: key, measurement: bytes.Repeat([]byte{0xaa}, 32),
		expect: &attest.Expectations{AllowSimulated: true},
		server: func(lb *localbackend.Backend) string { first = lb.URL; point(first); return proxy.URL }})
	st := h.portal.Status()
	if !st.Verified || !st.FirstUse || st.Measurement != strings.Repeat("aa", 32) || !strings.Contains(st.Pinned, st.Measurement) {
		t.Fatalf("status %+v; want verified, pinned on first use", st)
	}
	u := h.newUser()
	u.signIn("alice", staffPassword)
	u.get("/backend")
	u.mustSee(strings.Repeat("aa", 32), "accepted the code it found then")

	point(other.URL)
	u.post("/backend/verify", url.Values{})
	if u.code != http.StatusBadGateway || h.portal.Status().Verified {
		t.Fatalf("a backend with other code verified (%d)", u.code)
	}
	u.mustSee("Signing is disabled", "measurement")
	point(first)
	u.post("/backend/verify", url.Values{})
	u.mustSee("The backend verified")
}

// postFile submits a trace file.
func (u *user) postFile(name, format string, content []byte, consent bool) {
	u.h.t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("csrf", u.csrf())
	mw.WriteField("format", format)
	if consent {
		mw.WriteField("consent", "yes")
	}
	fw, _ := mw.CreateFormFile("trace", name)
	fw.Write(content)
	mw.Close()
	req, err := http.NewRequest("POST", u.h.srv.URL+"/trace", &b)
	if err != nil {
		u.h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	u.do(req)
}

var problemRow = regexp.MustCompile(`<tr><td>([^<]*)</td><td>([^<]*)</td></tr>`)

// problems returns the problem table of the last page: line, message.
func (u *user) problems() [][2]string {
	var out [][2]string
	for _, m := range problemRow.FindAllStringSubmatch(u.page, -1) {
		out = append(out, [2]string{html.UnescapeString(m[1]), html.UnescapeString(m[2])})
	}
	return out
}

// badCSV has problems on lines 3, 4, 5 and 7.
func badCSV(start time.Time) []byte {
	at := func(min int) string { return start.Add(time.Duration(min) * time.Minute).Format(time.RFC3339) }
	return []byte(strings.Join([]string{
		"time,lat,lon",
		at(0) + ",48.8566,2.3522",
		at(1) + ",148.8566,2.3522", // latitude
		at(2) + ",48.8566",         // fields
		"yesterday,48.8566,2.3522", // time
		at(3) + ",48.8566,2.3522",
		at(4) + ",52.52,13.405", // Berlin a minute after Paris
		at(5) + ",48.8567,2.3522",
		"",
	}, "\n"))
}

// badGPX has problems on lines 5 (latitude) and 8 (no time).
func badGPX(start time.Time) []byte {
	at := func(min int) string { return start.Add(time.Duration(min) * time.Minute).Format(time.RFC3339) }
	return []byte(`<?xml version="1.0"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
<trkpt lat="48.8566" lon="2.3522"><time>` + at(0) + `</time></trkpt>
<trkpt lat="48.8566" lon="2.3522"><time>` + at(1) + `</time></trkpt>
<trkpt lat="95" lon="2.3522"><time>` + at(2) + `</time></trkpt>
<trkpt lat="48.8566" lon="2.3522">
  <ele>35</ele>
</trkpt>
<trkpt lat="48.8566" lon="2.3523"><time>` + at(4) + `</time></trkpt>
</trkseg></trk></gpx>
`)
}

func TestBadTraceFileErrorsPerLine(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	u := h.newUser()
	u.signIn("alice", staffPassword)
	start := time.Now().Add(-time.Hour).Truncate(time.Minute)

	u.get("/trace")
	u.postFile("patient.csv", "auto", badCSV(start), true)
	if u.code != http.StatusUnprocessableEntity {
		t.Fatalf("bad CSV: %d, want 422", u.code)
	}
	u.mustSee("The CSV file was refused and nothing was uploaded")
	want := []struct{ line, msg string }{{"3", "latitude"}, {"4", "fields"}, {"5", "time"}, {"7", "speed"}}
	got := u.problems()
	if len(got) != len(want) {
		t.Fatalf("CSV problems %v; want lines 3, 4, 5 and 7", got)
	}
	for i, w := range want {
		if got[i][0] != w.line || !strings.Contains(got[i][1], w.msg) {
			t.Errorf("CSV problem %d: line %s %q; want line %s about %s", i, got[i][0], got[i][1], w.line, w.msg)
		}
	}

	u.postFile("patient.gpx", "auto", badGPX(start), true)
	got = u.problems()
	if len(got) != 2 || got[0][0] != "5" || !strings.Contains(got[0][1], "latitude") || got[1][0] != "6" || !strings.Contains(got[1][1], "without <time>") {
		t.Errorf("GPX problems %v; want line 5 (latitude) and line 6 (no time)", got)
	}

	u.postFile("patient.txt", "auto", badCSV(start), true)
	u.mustSee("Cannot tell the format")
	u.postFile("empty.csv", "csv", []byte("time,lat,lon\n"), true)
	u.mustSee("no fixes")
	u.postFile("patient.csv", "csv", badCSV(start), false)
	u.mustSee("Confirm that the patient tested positive")
	if e, _ := h.audit.Entries(); len(e) != 0 {
		t.Errorf("refused files left audit entries: %+v", e)
	}
}

func TestTraceUpload(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	u := h.newUser()
	u.signIn("alice", staffPassword)
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
	var b strings.Builder
	b.WriteString("time,lat,lon,accuracy\n")
	for i := range 30 {
		b.WriteString(start.Add(time.Duration(i)*time.Minute).Format(time.RFC3339) + ",48.8566,2.35" + string(rune('0'+i%10)) + ",8\n")
	}
	u.get("/trace")
	u.postFile("patient.csv", "auto", []byte(b.String()), true)
	if u.code != http.StatusOK {
		t.Fatalf("upload: %d\n%s", u.code, u.page)
	}
	u.mustSee("The backend stored the trace: 30 fixes")
	e, err := h.audit.Entries()
	if err != nil || len(e) != 2 {
		t.Fatalf("audit: %v, %+v", err, e)
	}
	if e[0].Action != ActionTrace || e[0].Outcome != "accepted" || e[0].Detail != "30 fixes, 30 stored" || e[0].TestCode != "" {
		t.Errorf("audit entry %+v", e[0])
	}
	// No location reaches the log.
	for _, x := range e {
		if strings.Contains(x.Detail+x.Outcome, "48.8") {
			t.Errorf("the audit log holds a location: %+v", x)
		}
	}
}

func TestCookies(t *testing.T) {
	for _, secure := range []bool{false, true} {
		h := newHarness(t, harnessOptions{secure: secure})
		resp, err := h.srv.Client().Get(h.srv.URL + "/signin")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cs := resp.Cookies()
		if len(cs) != 1 {
			t.Fatalf("secure=%v: cookies %v", secure, cs)
		}
		c := cs[0]
		wantName := "portal_session"
		if secure {
			wantName = "__Host-portal_session"
		}
		if c.Name != wantName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure != secure || c.Path != "/" || c.Domain != "" {
			t.Errorf("secure=%v: cookie %+v; want %s, HttpOnly, SameSite=Strict, Secure=%v, host-only, path /", secure, c, wantName, secure)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script") {
			t.Errorf("CSP %q; want default-src 'none' and no script source", csp)
		}
		if hsts := resp.Header.Get("Strict-Transport-Security"); (hsts != "") != secure {
			t.Errorf("secure=%v: HSTS %q", secure, hsts)
		}
	}
}
