package transparency

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

func TestServerURL(t *testing.T) {
	for _, tc := range []struct{ host, want string }{
		{"backend.example", "https://backend.example"},
		{"backend.example:8443", "https://backend.example:8443"},
		{"Backend.Example.", "https://Backend.Example."},
		{"203.0.113.7:80", "https://203.0.113.7:80"},
		{"[2001:db8::1]:8080", "https://[2001:db8::1]:8080"},
		{"127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"127.8.9.10", "http://127.8.9.10"},
		{"localhost:8080", "http://localhost:8080"},
		{"[::1]:8080", "http://[::1]:8080"},
		// Hosts that are no plain host name or address, which a shell
		// would read as more than a word, or a browser as more than a
		// host, are not printed.
		{"", ""},
		{"evil.example;id", ""},
		{"evil.example $(id)", ""},
		{"evil.example/path", ""},
		{"user@evil.example", ""},
		{"evil.example:", ""},
		{"evil.example:0", ""},
		{"evil.example:08080", ""},
		{"evil.example:+80", ""},
		{"evil.example:65536", ""},
		{"-evil.example", ""},
		{"evil..example", ""},
		{"[fe80::1%eth0]:80", ""},
		{"[192.0.2.1]:80", ""},
		{"[::1", ""},
		{"[::1]x", ""},
		{"ex\u00e4mple.com", ""},
		{"a.example:80:80", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = tc.host
		if got := serverURL(r); got != tc.want {
			t.Errorf("Host %q: %q, want %q", tc.host, got, tc.want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host, r.TLS = "127.0.0.1:8443", &tls.ConnectionState{}
	if got := serverURL(r); got != "https://127.0.0.1:8443" {
		t.Errorf("over TLS on loopback: %q", got)
	}
}

func TestVerifyCommand(t *testing.T) {
	for _, tc := range []struct {
		server      string
		tee         attest.TEE
		measurement string
		want        string
	}{
		{"https://b.example", attest.SGX, "ab", "conftrace verify --server https://b.example --tee sgx --measurement ab"},
		{"http://127.0.0.1:8080", attest.Sim, "cd", "conftrace verify --server http://127.0.0.1:8080 --tee sim --measurement cd --allow-simulated"},
		{"", attest.SNP, "", "conftrace verify --server URL --tee snp --measurement MEASUREMENT"},
	} {
		if got := verifyCommand(tc.server, tc.tee, tc.measurement); got != tc.want {
			t.Errorf("%q", got)
		}
	}
}

// safeURL is what serverURL may return besides "": no byte a shell or
// an HTML attribute would treat specially.
var safeURL = regexp.MustCompile(`^https?://([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\])(:[1-9][0-9]{0,4})?$`)

func FuzzServerURL(f *testing.F) {
	for _, h := range []string{"backend.example:8443", "127.0.0.1:8080", "[::1]:80", "[2001:db8::1]", "a;b", "x y", "", "[::ffff:1.2.3.4]:1", "é.example"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, host string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		u := serverURL(r)
		if u != "" && !safeURL.MatchString(u) {
			t.Fatalf("Host %q gives %q", host, u)
		}
	})
}
