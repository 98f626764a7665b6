package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/certificate/seen"
	"github.com/conftrace/conftrace/client"
)

// errNotExposed is device certificate's answer for a phone the backend
// did not find exposed: it issues no certificate.
var errNotExposed = errors.New("not exposed: the backend issues a certificate only to an exposed phone, and issued none")

// nonceFlag is a --nonce flag: a certificate nonce in hex.
type nonceFlag []byte

func (n *nonceFlag) String() string { return hex.EncodeToString(*n) }

func (n *nonceFlag) Set(s string) error {
	b, err := hex.DecodeString(s)
	switch {
	case err != nil:
		return fmt.Errorf("not hex: %w", err)
	case len(b) != certificate.NonceSize:
		return fmt.Errorf("%d bytes, want %d", len(b), certificate.NonceSize)
	case bytes.Equal(b, make([]byte, certificate.NonceSize)):
		return errors.New("a nonce of zeros asks for nothing")
	}
	*n = b
	return nil
}

// runDeviceCertificate asks the backend for an exposure certificate and
// writes it to a file.
func runDeviceCertificate(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device certificate", "device certificate --state DIR --out FILE [--nonce HEX] [--trace FILE [--format csv|gpx]]\n\n"+
		"Asks the backend for an exposure certificate, a statement signed in its TEE\n"+
		"that this device was exposed (at which order, on which day, with which risk),\n"+
		"which you may show a hospital or health authority: they check it with\n"+
		"conftrace authority verify-certificate. It holds nothing that identifies the\n"+
		"device. The request travels in a daily exchange like any other; with --trace,\n"+
		"in a GPS trace check, for a GPS exposure. The backend issues one only if it\n"+
		"finds the device exposed; otherwise this command fails and writes nothing.\n"+
		"Writes the certificate's text form to FILE and prints what it states.")
	out := cmd.String("out", "", "the `file` to write the certificate to (required)")
	var nonce nonceFlag
	cmd.Var(&nonce, "nonce", "the certificate's nonce, 32 bytes in `hex`: the one the verifier gave you, if it gave one (default: random)")
	var trace traceFlags
	cmd.StringVar(&trace.file, "trace", "", "ask with this GPS trace `file` (CSV or GPX) instead of the Bluetooth contacts")
	cmd.StringVar(&trace.format, "format", "", "the trace file's `format`, csv or gpx (default: from the file's extension)")
	d, err := cmd.open(ctx, args, func() error {
		if *out == "" {
			return usagef("--out is required")
		}
		if trace.file != "" {
			return trace.check()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if nonce == nil {
		nonce = client.NewCertificateNonce()
	}
	c, err := deviceClient(ctx, cio, d)
	if err != nil {
		return err
	}
	var raw []byte
	if trace.file != "" {
		raw, err = traceCertificate(ctx, c, trace, nonce)
	} else {
		var ex api.ExchangeResponse
		if ex, err = dailyExchange(ctx, d, c, exchangeParts{nonce: nonce}); err != nil {
			err = refused("the certificate request", err)
		}
		raw = ex.Certificate
	}
	if err != nil {
		return err
	}
	if raw == nil {
		return errNotExposed
	}
	cert, err := certificate.Parse(raw)
	if err != nil {
		return fmt.Errorf("the backend's certificate: %w", err)
	}
	// What the phone got is checked as a verifier will check it.
	if err := c.VerifyCertificate(cert, nonce); err != nil {
		return fmt.Errorf("the backend's certificate does not verify: %w", err)
	}
	text, err := cert.MarshalText()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(*out, append(text, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "certificate written to %s: %s\n", *out, cert)
	return nil
}

// traceCertificate checks the device's trace asking for a certificate
// with nonce, and returns the certificate, nil if none.
func traceCertificate(ctx context.Context, c *client.Client, trace traceFlags, nonce []byte) ([]byte, error) {
	tr, err := trace.read()
	if err != nil {
		return nil, err
	}
	defer clear(tr)
	if err := checkTraceSize(c, tr); err != nil {
		return nil, err
	}
	resp, err := c.CheckTraceCertificate(ctx, tr, nonce)
	if errors.Is(err, client.ErrNoRecentFixes) {
		return nil, fmt.Errorf("%s: %w", trace.file, err)
	}
	if err != nil {
		return nil, refused("the trace check", err)
	}
	return resp.Certificate, nil
}

// maxCertificateFile bounds the certificate file verify-certificate
// reads: the text form and a line end.
const maxCertificateFile = certificate.TextSize + 2

// readCertificate reads a certificate file: its text form, with or
// without a line end, or its binary form.
func readCertificate(path string) (certificate.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		return certificate.Certificate{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(maxCertificateFile)+1))
	if err != nil {
		return certificate.Certificate{}, err
	}
	if len(b) > maxCertificateFile {
		return certificate.Certificate{}, fmt.Errorf("%s: %w: more than %d bytes", path, certificate.ErrMalformed, maxCertificateFile)
	}
	var c certificate.Certificate
	if bytes.HasPrefix(b, []byte(certificate.TextPrefix)) {
		b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
		c, err = certificate.ParseText(b)
	} else {
		c, err = certificate.Parse(b)
	}
	if err != nil {
		return certificate.Certificate{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// verifiedCertificate is verify-certificate's --json output.
type verifiedCertificate struct {
	Valid bool `json:"valid"`
	// Reason and Error say why a certificate was refused.
	Reason      string `json:"reason,omitempty"`
	Error       string `json:"error,omitempty"`
	Kind        string `json:"kind,omitempty"`
	Order       int    `json:"order,omitempty"`
	Date        string `json:"date,omitempty"`
	RiskMinutes int    `json:"risk_minutes,omitempty"`
	// ThresholdMinutes is the attested policy's threshold for the
	// certificate's kind and order: what a coarse certificate's exposure
	// reached.
	ThresholdMinutes int    `json:"threshold_minutes,omitempty"`
	IssuedAt         string `json:"issued_at,omitempty"`
	ExpiresAt        string `json:"expires_at,omitempty"`
	Nonce            string `json:"nonce,omitempty"`
	SingleUse        bool   `json:"single_use,omitempty"`
}

// runAuthorityVerifyCertificate checks an exposure certificate against the
// attested key and policy of the backend that issued it.
func runAuthorityVerifyCertificate(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority verify-certificate", "authority verify-certificate --server URL --cert FILE [--nonce HEX] [--seen FILE]\n"+
		"    [--measurement HEX ...] [--allow-simulated] [--json]\n\n"+
		"Verifies the backend's attestation as phones do, then checks the exposure\n"+
		"certificate in FILE against the certificate key and policy it attests: the\n"+
		"signature, the nonce you gave the patient (--nonce), that the policy could have\n"+
		"issued it, and that it is not expired. When the policy makes certificates single\n"+
		"use, --seen is required: the file where this verifier records the certificates\n"+
		"it accepted, and a second presentation is refused (with --seen it is refused\n"+
		"whatever the policy). Prints what the certificate states; a refused one exits\n"+
		"1 with the reason: malformed, foreign, tampered, nonce, policy, not_yet_valid,\n"+
		"expired or replayed.")
	var backend backendFlags
	backend.register(fs)
	certFile := fs.String("cert", "", "the certificate `file` (required)")
	seenFile := fs.String("seen", "", "the `file` recording the certificates this verifier accepted (created if missing)")
	var nonce nonceFlag
	fs.Var(&nonce, "nonce", "the nonce, 32 bytes in `hex`, you gave the patient to ask the certificate with")
	asJSON := fs.Bool("json", false, "print the verdict as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *backend.server == "":
		return usagef("--server is required")
	case *certFile == "":
		return usagef("--cert is required")
	}
	c, err := backend.client(ctx)
	if err != nil {
		return err
	}
	p := c.Policy()
	if p.Certificates.SingleUse && *seenFile == "" {
		return usagef("the attested policy makes certificates single use: give --seen FILE, where this verifier records the certificates it accepted")
	}
	cert, err := readCertificate(*certFile)
	if err == nil {
		err = c.VerifyCertificate(cert, nonce)
	}
	if err == nil && *seenFile != "" {
		err = seen.Accept(ctx, *seenFile, cert, time.Now())
	}
	reason := certificate.Reason(err)
	if err != nil && reason == "" {
		return err // not a verdict: the file or the record could not be read
	}
	v := verifiedCertificate{Valid: err == nil, Reason: reason, SingleUse: p.Certificates.SingleUse}
	if err != nil {
		v.Error = err.Error()
	} else {
		v.Kind, v.Order, v.Date, v.RiskMinutes = cert.Kind.String(), cert.Order, cert.Date.Format(api.DateLayout), cert.RiskMinutes
		v.ThresholdMinutes = thresholdMinutes(c, cert)
		v.IssuedAt, v.ExpiresAt = cert.IssuedAt.Format(time.RFC3339), cert.ExpiresAt.Format(time.RFC3339)
		v.Nonce = hex.EncodeToString(cert.Nonce[:])
	}
	if *asJSON {
		b, jerr := json.MarshalIndent(v, "", "  ")
		if jerr != nil {
			return fmt.Errorf("encoding verdict: %w", jerr)
		}
		if _, jerr := cio.stdout.Write(append(b, '\n')); jerr != nil {
			return jerr
		}
	}
	if err != nil {
		return fmt.Errorf("certificate refused (%s): %w", reason, err)
	}
	if !*asJSON {
		fmt.Fprintf(cio.stdout, "valid: %s\n", cert)
		if cert.RiskMinutes == 0 {
			unit := "weighted minutes in a day"
			if cert.Kind == certificate.GPS {
				unit = "minutes near patients within 24 hours"
			}
			fmt.Fprintf(cio.stdout, "the exposure reached the attested policy's threshold: %d %s\n", v.ThresholdMinutes, unit)
		}
	}
	return nil
}

// thresholdMinutes returns the attested policy's threshold for cert's kind
// and order.
func thresholdMinutes(c *client.Client, cert certificate.Certificate) int {
	p := c.Policy()
	if cert.Kind == certificate.GPS {
		return p.GPS.MinimumMinutes
	}
	return p.OrderRisk(cert.Order).MinimumWeightedMinutes
}
