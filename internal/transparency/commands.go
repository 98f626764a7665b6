package transparency

import (
	"net/http"
	"net/netip"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/attest"
)

// releaseBuild is the release build of the measured image, as the README
// gives it to auditors (cmd/conftraced's TestReproducibleBuild checks
// that it builds the same bytes from any checkout).
const releaseBuild = "CGO_ENABLED=0 go build -trimpath -buildvcs=false -o conftraced ./cmd/conftraced"

// goRelease matches the Go versions that GOTOOLCHAIN can name.
var goRelease = regexp.MustCompile(`^go[0-9]+\.[0-9]+(\.[0-9]+)?$`)

// buildCommand is releaseBuild for the platform and Go release this
// binary was built with, which the build recorded in it: the same
// source built so gives the same bytes.
func buildCommand() string {
	env := "GOOS=" + runtime.GOOS + " GOARCH=" + runtime.GOARCH + " "
	if v := runtime.Version(); goRelease.MatchString(v) {
		env += "GOTOOLCHAIN=" + v + " "
	}
	return env + releaseBuild
}

// serverURL returns the base URL of this backend as the request names it:
// its Host, with https but on loopback. conftraced serves plain HTTP with
// TLS put in front of it, so a request's own scheme says nothing about
// the URL people use, except on loopback, where the walkthrough runs it
// bare. It returns "" when the Host is not a plain host name or address
// with an optional port: the page then prints a placeholder rather than
// a command built from odd bytes.
func serverURL(r *http.Request) string {
	host, ok := checkHost(r.Host)
	if !ok {
		return ""
	}
	scheme := "https"
	if r.TLS == nil && loopback(host) {
		scheme = "http"
	}
	return scheme + "://" + r.Host
}

// checkHost reports whether h is a DNS name, an IPv4 address or a
// bracketed IPv6 address, optionally with a port, and returns its host
// part. Everything it accepts is safe in a shell command unquoted.
func checkHost(h string) (string, bool) {
	if h == "" || len(h) > 260 {
		return "", false
	}
	host, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.Index(h, "]")
		if end < 0 {
			return "", false
		}
		host, port = h[1:end], h[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", false
		}
	} else {
		if i := strings.LastIndexByte(h, ':'); i >= 0 {
			host, port = h[:i], h[i:]
		}
		if !dnsName(host) {
			return "", false
		}
	}
	if port != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(port, ":"))
		if !strings.HasPrefix(port, ":") || err != nil || n < 1 || n > 65535 || port[1] == '+' || port[1] == '0' {
			return "", false
		}
	}
	return host, true
}

// dnsName reports whether s is a DNS name of letters, digits and hyphens
// (an IPv4 address is one too).
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// verifyCommand is the conftrace verify command that pins this backend's
// measurement; server is its URL, or "URL" when the request's Host
// could not be printed.
func verifyCommand(server string, tee attest.TEE, measurement string) string {
	if server == "" {
		server = "URL"
	}
	if measurement == "" {
		measurement = "MEASUREMENT"
	}
	cmd := "conftrace verify --server " + server + " --tee " + string(tee) + " --measurement " + measurement
	if tee == attest.Sim {
		cmd += " --allow-simulated"
	}
	return cmd
}

// governanceCommand is the conftrace verify command that checks the
// release statement against a governance set the reader trusts.
func governanceCommand(server string, tee attest.TEE) string {
	if server == "" {
		server = "URL"
	}
	cmd := "conftrace verify --server " + server + " --governance GOVERNANCE-FILE"
	if tee == attest.Sim {
		cmd += " --allow-simulated"
	}
	return cmd
}
