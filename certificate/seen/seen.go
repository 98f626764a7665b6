// Package seen keeps a verifier's record of the exposure certificates it
// accepted, so that a certificate the attested policy makes single use
// (policy.Certificates.SingleUse) is accepted once per verifier. The
// backend cannot enforce single use itself: it never learns where a
// certificate is shown, and must not.
//
// The record is a text file: the line "conftrace seen certificates v1",
// then one line per accepted certificate, its nonce in lowercase hex, a
// space and its expiry in Unix seconds, in the order accepted. Entries are
// dropped once their certificate has expired, which Verify refuses anyway,
// so the file stays as small as the certificates still valid. Every change
// replaces the file whole (package atomicfile) under an advisory lock on
// the file with ".lock" appended, so that verifiers sharing it accept a
// certificate once between them. Where there is no flock (not Unix), only
// one verifier may use a record at a time.
package seen

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/filelock"
)

// header is the first line of a record.
const header = "conftrace seen certificates v1"

// MaxRecordSize bounds the record a verifier reads: 10 MB, over 100,000
// certificates still valid.
const MaxRecordSize = 10 << 20

// entry is one accepted certificate.
type entry struct {
	nonce   [certificate.NonceSize]byte
	expires int64
}

// Accept records c in the record at path if its nonce is not recorded
// yet, and fails with an error wrapping certificate.ErrReplayed if it is.
// It drops the entries expired at now. The caller verified c first
// (certificate.Certificate.Verify): Accept judges nothing else. A missing
// record is created (mode 0600).
func Accept(ctx context.Context, path string, c certificate.Certificate, now time.Time) error {
	unlock, err := filelock.Lock(ctx, path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	entries, err := read(path)
	if err != nil {
		return err
	}
	kept := entries[:0]
	for _, e := range entries {
		if e.nonce == c.Nonce {
			return fmt.Errorf("%w: its nonce %x is in %s", certificate.ErrReplayed, c.Nonce, path)
		}
		if e.expires > now.Unix() {
			kept = append(kept, e)
		}
	}
	kept = append(kept, entry{c.Nonce, c.ExpiresAt.Unix()})
	return write(path, kept)
}

// read returns the entries of the record at path; none if it does not
// exist.
func read(path string) ([]entry, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("seen: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("seen: %w", err)
	}
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("seen: %s is more than %d bytes", path, MaxRecordSize)
	}
	entries, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("seen: %s: %w", path, err)
	}
	return entries, nil
}

// parse reads a record strictly: the header, then entries of one
// spelling, every line ending in a line feed.
func parse(b []byte) ([]entry, error) {
	body, ok := bytes.CutPrefix(b, []byte(header+"\n"))
	if !ok {
		return nil, fmt.Errorf("not a record of seen certificates: the first line is not %q", header)
	}
	if len(body) > 0 && body[len(body)-1] != '\n' {
		return nil, errors.New("the last line does not end in a line feed")
	}
	if len(body) == 0 {
		return nil, nil
	}
	var entries []entry
	for n, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		e, err := parseEntry(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+2, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// parseEntry reads "<nonce hex> <expiry>".
func parseEntry(line string) (entry, error) {
	nonce, exp, ok := strings.Cut(line, " ")
	var e entry
	if !ok || len(nonce) != 2*certificate.NonceSize || strings.ToLower(nonce) != nonce {
		return e, fmt.Errorf("%q: want a nonce of %d bytes in lowercase hex, a space and a time", line, certificate.NonceSize)
	}
	if _, err := hex.Decode(e.nonce[:], []byte(nonce)); err != nil {
		return e, fmt.Errorf("nonce: %w", err)
	}
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || t < 0 || strconv.FormatInt(t, 10) != exp {
		return e, fmt.Errorf("expiry %q: want Unix seconds in decimal", exp)
	}
	e.expires = t
	return e, nil
}

// write replaces the record at path with entries.
func write(path string, entries []entry) error {
	var b bytes.Buffer
	b.WriteString(header + "\n")
	for _, e := range entries {
		fmt.Fprintf(&b, "%x %d\n", e.nonce, e.expires)
	}
	if err := atomicfile.Write(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("seen: %w", err)
	}
	return nil
}
