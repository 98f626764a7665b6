package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/httpserve"
	"github.com/conftrace/conftrace/internal/portal"
)

// runAuthorityPortal runs the health authority's web portal.
func runAuthorityPortal(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority portal", "authority portal --listen ADDR --key FILE --server URL --users FILE [--audit FILE]\n"+
		"    [--measurement HEX ... | --governance FILE [--min-sequence N]] [--allow-simulated]\n"+
		"    [--tls-cert FILE --tls-key FILE | --secure-cookies] [--addr-file FILE]\n\n"+
		"Runs the health authority's web portal: staff sign in (accounts from\n"+
		"conftrace authority users), sign test results and patients' GPS traces\n"+
		"with the authority's key, and see the backend's answers; everything signed\n"+
		"goes to the audit log. Run it on the authority's machines, never the\n"+
		"backend operator's. It verifies the backend's attestation as phones do\n"+
		"when it starts, and signs nothing if that fails.\n\n"+
		"Without --tls-cert it serves plain HTTP and listens on loopback only,\n"+
		"unless --secure-cookies says that a TLS-terminating proxy is in front.")
	var backend backendFlags
	backend.register(fs)
	listen := fs.String("listen", "127.0.0.1:8082", "the `address` to listen on, host:port (port 0 picks a free port)")
	keyFile := fs.String("key", "", "the authority's private key `file`, from authority keygen (required)")
	usersFile := fs.String("users", "", "the users `file`, from authority users add (required)")
	auditFile := fs.String("audit", "", "the audit log `file`, CSV (default: the users file's name with .audit.csv, beside it)")
	governance := fs.String("governance", "", "pin the governance set in this `file` (see conftrace release) instead of measurements:\n"+
		"accept the code and policy that a release statement signed by all its members admits")
	minSeq := fs.Uint64("min-sequence", 0, "with --governance: the lowest release sequence `number` accepted")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate chain `file` (PEM)")
	tlsKey := fs.String("tls-key", "", "the TLS private key `file` (PEM) of --tls-cert")
	secureCookies := fs.Bool("secure-cookies", false, "mark the session cookie Secure although this process serves plain HTTP:\n"+
		"a TLS-terminating proxy is in front of it")
	addrFile := fs.String("addr-file", "", "once listening, write the bound address to this `file` (removed at shutdown), for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *backend.server == "":
		return usagef("--server is required")
	case *keyFile == "":
		return usagef("--key is required")
	case *usersFile == "":
		return usagef("--users is required")
	case (*tlsCert == "") != (*tlsKey == ""):
		return usagef("--tls-cert and --tls-key go together")
	case *governance != "" && len(backend.exp.measurements) > 0:
		return usagef("--measurement and --governance do not go together")
	case *minSeq != 0 && *governance == "":
		return usagef("--min-sequence goes with --governance")
	}
	useTLS := *tlsCert != ""
	if !useTLS && !*secureCookies && !loopback(*listen) {
		return usagef("--listen %s is not a loopback address: serve HTTPS (--tls-cert, --tls-key), or put a TLS proxy in front and give --secure-cookies", *listen)
	}
	if *auditFile == "" {
		*auditFile = defaultAuditFile(*usersFile)
	}
	key, err := readAuthorityKey(*keyFile)
	if err != nil {
		return err
	}
	ccfg := client.Config{Server: *backend.server, Expectations: backend.exp.expectations(), MinReleaseSequence: *minSeq}
	if *governance != "" {
		if ccfg.Governance, err = readGovernance(*governance); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewTextHandler(cio.stderr, nil))
	p, err := portal.New(ctx, portal.Config{Key: key, Client: ccfg, Users: portal.OpenUsers(*usersFile),
		Audit: portal.OpenAudit(*auditFile), SecureCookies: useTLS || *secureCookies, Logger: log})
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	scheme := "http"
	if useTLS {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
		ln, scheme = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), "https"
	}
	st := p.Status()
	log.Info("listening", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String()+"/", "authority", key.Name,
		"users", *usersFile, "audit", *auditFile, "backend_verified", st.Verified)
	return httpserve.Serve(ctx, ln, p, httpserve.Options{Log: log, AddrFile: *addrFile})
}

// loopback reports whether the listen address is a loopback one: only
// this machine's browsers reach it, so plain HTTP exposes nothing.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultAuditFile is the audit log beside the users file: users.json
// gives users.audit.csv.
func defaultAuditFile(users string) string {
	return strings.TrimSuffix(users, filepath.Ext(users)) + ".audit.csv"
}

// readAuthorityKey reads an authority's private key file.
func readAuthorityKey(path string) (*authority.Key, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	key, err := authority.ParsePrivateKeyPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// runAuthorityUsersAdd adds a portal user, reading the password from
// standard input.
func runAuthorityUsersAdd(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority users add", "authority users add --users FILE --name NAME --role staff|admin\n\n"+
		"Adds a user of the portal (conftrace authority portal). The password is the\n"+
		"first line of standard input, at least "+fmt.Sprint(portal.MinPasswordLength)+" characters; it is stored as an\n"+
		"Argon2id hash. FILE is created, mode 0600, if missing. To change a password,\n"+
		"remove the user and add them again. Works offline, also while the portal runs.")
	users := fs.String("users", "", "the users `file` (required)")
	name := fs.String("name", "", "the user's `name`: lower-case letters, digits, '.', '_', '-' (required)")
	role := fs.String("role", "", "the user's `role`: staff (signs results and traces) or admin (manages users) (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *users == "":
		return usagef("--users is required")
	case *name == "":
		return usagef("--name is required")
	}
	if err := portal.CheckName(*name); err != nil {
		return usageError{err.Error()}
	}
	r, err := portal.ParseRole(*role)
	if err != nil {
		return usageError{err.Error()}
	}
	pw, err := readPassword(cio.stdin)
	if err != nil {
		return err
	}
	if err := portal.OpenUsers(*users).Add(ctx, *name, r, pw, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "added %s (%s) to %s\n", *name, r, *users)
	return nil
}

// readPassword reads the first line of r, without its line ending.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, portal.MaxPasswordBytes+2)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from standard input: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if pw == "" {
		return "", errors.New("no password on standard input (give it as the first line)")
	}
	if err := portal.CheckPassword(pw); err != nil {
		return "", err
	}
	return pw, nil
}

// runAuthorityUsersRemove removes a portal user.
func runAuthorityUsersRemove(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority users remove", "authority users remove --users FILE --name NAME\n\n"+
		"Removes a user of the portal; a running portal ends the user's sessions at\n"+
		"their next request.")
	users := fs.String("users", "", "the users `file` (required)")
	name := fs.String("name", "", "the user's `name` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *users == "":
		return usagef("--users is required")
	case *name == "":
		return usagef("--name is required")
	}
	if err := portal.OpenUsers(*users).Remove(ctx, *name); err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "removed %s from %s\n", *name, *users)
	return nil
}

// runAuthorityUsersList prints the portal's users: name, role and when
// each was added, one a line.
func runAuthorityUsersList(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority users list", "authority users list --users FILE\n\n"+
		"Prints the portal's users, one a line: name, role, when added (RFC 3339).")
	users := fs.String("users", "", "the users `file` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *users == "" {
		return usagef("--users is required")
	}
	list, err := portal.OpenUsers(*users).List()
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, u := range list {
		fmt.Fprintf(&b, "%s %s %s\n", u.Name, u.Role, u.Created.UTC().Format(time.RFC3339))
	}
	_, err = io.WriteString(cio.stdout, b.String())
	return err
}
