package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/portal"
)

// cliRunIn runs a command with stdin as its standard input.
func cliRunIn(t *testing.T, fn cmdFunc, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = fn(t.Context(), cmdIO{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}, args)
	return out.String(), errb.String(), err
}

func TestAuthorityUsers(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.json")
	out, _, err := cliRunIn(t, runAuthorityUsersAdd, "correct horse battery\n", "--users", users, "--name", "alice", "--role", "staff")
	if err != nil || out != "added alice (staff) to "+users+"\n" {
		t.Fatalf("users add: %q, %v", out, err)
	}
	// The password may end without a line feed, or with CR LF.
	if _, _, err := cliRunIn(t, runAuthorityUsersAdd, "admin staple battery\r\n", "--users", users, "--name", "root", "--role", "admin"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(users); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users file: %v, %v; want mode 0600", fi, err)
	}
	out = mustRun(t, runAuthorityUsersList, "--users", users)
	if !regexp.MustCompile(`^alice staff \d{4}-\d\d-\d\dT[0-9:]+Z\nroot admin \S+\n$`).MatchString(out) {
		t.Errorf("users list printed %q", out)
	}
	// The hash is Argon2id, and the password (without its line ending)
	// is what it hashes.
	u, ok, err := portal.OpenUsers(users).Lookup("root")
	if err != nil || !ok || !strings.HasPrefix(u.Hash, "$argon2id$") {
		t.Fatalf("root: %+v, %v, %v", u, ok, err)
	}
	b, _ := os.ReadFile(users)
	if bytes.Contains(b, []byte("staple")) {
		t.Error("the users file holds a password")
	}

	tests := []struct {
		name  string
		fn    cmdFunc
		stdin string
		args  []string
		want  string
		usage bool
	}{
		{"no password", runAuthorityUsersAdd, "", []string{"--users", users, "--name", "bob", "--role", "staff"}, "no password", false},
		{"short password", runAuthorityUsersAdd, "short\n", []string{"--users", users, "--name", "bob", "--role", "staff"}, "at least 12", false},
		{"taken name", runAuthorityUsersAdd, "another long password\n", []string{"--users", users, "--name", "alice", "--role", "staff"}, "exists", false},
		{"bad role", runAuthorityUsersAdd, "another long password\n", []string{"--users", users, "--name", "bob", "--role", "boss"}, "staff or admin", true},
		{"bad name", runAuthorityUsersAdd, "another long password\n", []string{"--users", users, "--name", "Bob Smith", "--role", "staff"}, "user name", true},
		{"no users file", runAuthorityUsersAdd, "another long password\n", []string{"--name", "bob", "--role", "staff"}, "--users is required", true},
		{"remove unknown", runAuthorityUsersRemove, "", []string{"--users", users, "--name", "bob"}, "no such user", false},
		{"list without file", runAuthorityUsersList, "", nil, "--users is required", true},
	}
	for _, tt := range tests {
		_, _, err := cliRunIn(t, tt.fn, tt.stdin, tt.args...)
		var ue usageError
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.As(err, &ue) != tt.usage {
			t.Errorf("%s: %v; want an error saying %q (usage error: %v)", tt.name, err, tt.want, tt.usage)
		}
	}

	if out := mustRun(t, runAuthorityUsersRemove, "--users", users, "--name", "alice"); !strings.HasPrefix(out, "removed alice") {
		t.Errorf("users remove printed %q", out)
	}
	if out := mustRun(t, runAuthorityUsersList, "--users", users); !strings.HasPrefix(out, "root admin ") || strings.Contains(out, "alice") {
		t.Errorf("after remove, list printed %q", out)
	}
}

func TestAuthorityPortalFlags(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--key", filepath.Join(dir, "k"), "--server", "http://127.0.0.1:1", "--users", filepath.Join(dir, "u")}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--key", "k", "--users", "u"}, "--server is required"},
		{append([]string{"--listen", "0.0.0.0:0"}, base...), "not a loopback address"},
		{append([]string{"--listen", ":8082"}, base...), "not a loopback address"},
		{append([]string{"--tls-cert", "c"}, base...), "go together"},
		{append([]string{"--measurement", strings.Repeat("ab", 32), "--governance", "g"}, base...), "do not go together"},
		{append([]string{"--min-sequence", "2"}, base...), "goes with --governance"},
	}
	for _, tt := range tests {
		_, _, err := cliRun(t, runAuthorityPortal, tt.args...)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("portal %v: %v; want a usage error saying %q", tt.args, err, tt.want)
		}
	}
}

// The whole path through the command line: users made offline, the
// portal started as staff would start it, a result signed through its
// pages, and a phone (the device commands) seeing it.
func TestAuthorityPortalEndToEnd(t *testing.T) {
	b := newTestBackend(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users.json")
	if _, _, err := cliRunIn(t, runAuthorityUsersAdd, "correct horse battery\n", "--users", users, "--name", "alice", "--role", "staff"); err != nil {
		t.Fatal(err)
	}
	phone := filepath.Join(dir, "phone")
	mustRun(t, runDeviceInit, "--state", phone, "--server", b.url, "--allow-simulated")
	code := strings.TrimSpace(mustRun(t, runDeviceRegisterTest, "--state", phone))
	if out := mustRun(t, runDeviceCheckResult, "--state", phone); out != "pending\n" {
		t.Fatalf("check-result before the portal signed: %q", out)
	}

	srv := startServer(t, runAuthorityPortal, "--listen", "127.0.0.1:0", "--key", b.key, "--server", b.url, "--users", users,
		"--measurement", b.measurement(), "--allow-simulated")
	if !strings.Contains(srv.Log.String(), "backend verified") || !strings.Contains(srv.Log.String(), b.measurement()) {
		t.Errorf("the portal's log does not show the identity it pinned:\n%s", srv.Log.String())
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	base := "http://" + srv.Addr
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d\n%s", resp.Request.URL, resp.StatusCode, body)
		}
		return string(body)
	}
	field := func(body, name string) string {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no %s field in\n%s", name, body)
		}
		return m[1]
	}
	body := page(c.Get(base + "/signin"))
	body = page(c.PostForm(base+"/signin", url.Values{"csrf": {field(body, "csrf")}, "name": {"alice"}, "password": {"correct horse battery"}}))
	body = page(c.PostForm(base+"/result", url.Values{"csrf": {field(body, "csrf")}, "code": {code}, "result": {"positive"},
		"test_date": {time.Now().UTC().Format(api.DateLayout)}}))
	body = page(c.PostForm(base+"/result/submit", url.Values{"csrf": {field(body, "csrf")}, "draft": {field(body, "draft")}}))
	if !strings.Contains(body, "Result submitted") {
		t.Fatalf("answer page:\n%s", body)
	}

	out, stderr, err := cliRun(t, runDeviceCheckResult, "--state", phone)
	if err != nil || out != "positive\n" || !strings.Contains(stderr, "upload authorized") {
		t.Errorf("check-result after the portal signed: %q, %q, %v; want positive with an upload authorization", out, stderr, err)
	}
	audit, err := os.ReadFile(filepath.Join(dir, "users.audit.csv"))
	if err != nil {
		t.Fatalf("the audit log is not beside the users file: %v", err)
	}
	if !strings.Contains(string(audit), code) || !strings.Contains(string(audit), ",alice,result,") {
		t.Errorf("audit log:\n%s", audit)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "users.audit.csv")); fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("portal returned %v on shutdown", err)
	}
}

// With --tls-cert and --tls-key the portal serves HTTPS on any address,
// and its session cookie is Secure, with the __Host- prefix.
func TestAuthorityPortalTLS(t *testing.T) {
	b := newTestBackend(t)
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	srv := startServer(t, runAuthorityPortal, "--listen", "127.0.0.1:0", "--key", b.key, "--server", b.url,
		"--users", filepath.Join(dir, "users.json"), "--allow-simulated", "--tls-cert", certFile, "--tls-key", keyFile)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + srv.Addr + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != http.StatusOK || len(cs) != 1 || cs[0].Name != "__Host-portal_session" || !cs[0].Secure || !cs[0].HttpOnly ||
		cs[0].SameSite != http.SameSiteStrictMode {
		t.Errorf("HTTPS sign-in page: %d, cookies %+v; want one Secure, HttpOnly, SameSite=Strict __Host- cookie", resp.StatusCode, cs)
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no Strict-Transport-Security over HTTPS")
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns their files and a pool that trusts the certificate.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portal test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
