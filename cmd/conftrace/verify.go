package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/policy"
)

// runVerify fetches a backend's attestation bundle, verifies it against
// the auditor's expectations and prints what it proves: the identity of the
// code and the policy it enforces. It fails when anything does not match.
func runVerify(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "verify", "verify --server URL [--measurement HEX ...] [--allow-simulated] [--json]\n\n"+
		"Fetches the backend's attestation bundle, verifies the TEE evidence against the\n"+
		"expectations and that it binds the served keys and policy, and prints the\n"+
		"attested identity and policy. Exits non-zero when anything does not match.")
	server := fs.String("server", "", "the backend's base `URL`")
	var exp expectFlags
	exp.register(fs)
	asJSON := fs.Bool("json", false, "print the identity and policy as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	// Each source of evidence fills in the identity and, when it has one,
	// the attested policy; printing is shared.
	var (
		id        attest.Identity
		policyDoc []byte
	)
	switch {
	case *server != "":
		c, err := client.New(ctx, client.Config{Server: *server, Expectations: exp.expectations()})
		if err != nil {
			return err
		}
		id, policyDoc = c.Identity(), c.PolicyDocument()
	default:
		return usagef("--server is required")
	}
	if *asJSON {
		return printIdentityJSON(cio.stdout, id, policyDoc)
	}
	return printIdentity(cio.stdout, id, policyDoc)
}

// verifiedJSON is the --json output of verify: byte fields in lowercase hex.
type verifiedJSON struct {
	TEE         attest.TEE      `json:"tee"`
	Measurement string          `json:"measurement"`
	Signer      string          `json:"signer"`
	ProductID   uint16          `json:"product_id"`
	SVN         uint16          `json:"svn"`
	Debug       bool            `json:"debug"`
	TCBStatus   string          `json:"tcb_status"`
	ReportData  string          `json:"report_data"`
	Policy      json.RawMessage `json:"policy,omitempty"`
}

func printIdentityJSON(w io.Writer, id attest.Identity, policyDoc []byte) error {
	v := verifiedJSON{
		TEE:         id.TEE,
		Measurement: hex.EncodeToString(id.Measurement),
		Signer:      hex.EncodeToString(id.Signer),
		ProductID:   id.ProductID,
		SVN:         id.SVN,
		Debug:       id.Debug,
		TCBStatus:   id.TCBStatus,
		ReportData:  hex.EncodeToString(id.ReportData[:]),
		Policy:      policyDoc,
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func printIdentity(w io.Writer, id attest.Identity, policyDoc []byte) error {
	bw := bufio.NewWriter(w)
	line := func(k, format string, args ...any) {
		fmt.Fprintf(bw, "%-22s "+format+"\n", append([]any{k}, args...)...)
	}
	orNone := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	tee := string(id.TEE)
	if id.TEE == attest.Sim {
		tee += " (SIMULATED: proves nothing about the platform or the code)"
	}
	line("tee", "%s", tee)
	line("measurement", "%x", id.Measurement)
	line("signer", "%s", orNone(hex.EncodeToString(id.Signer)))
	line("product id", "%d", id.ProductID)
	line("svn", "%d", id.SVN)
	line("debug", "%t", id.Debug)
	line("tcb status", "%s", orNone(id.TCBStatus))
	line("report data", "%x", id.ReportData[:])
	if policyDoc != nil {
		p, err := policy.Parse(policyDoc)
		if err != nil {
			return fmt.Errorf("attested policy: %w", err)
		}
		line("policy sha256", "%x", sha256.Sum256(policyDoc))
		if len(p.Authorities) == 0 {
			line("authorities", "(none: no test can be declared positive)")
		}
		for _, a := range p.Authorities {
			line("authority", "%s (ed25519 %x)", a.Name, []byte(a.PublicKey))
		}
		line("retention", "%d days", p.RetentionDays)
		line("upload authorization", "valid %s", p.UploadAuthorizationTTL())
		r := p.Risk
		line("risk buckets", "attenuation <= %s dB, weights %s %%", joinInts(r.AttenuationThresholds, "/"), joinInts(r.WeightsPercent, "/"))
		line("risk threshold", "%d weighted minutes a day", r.MinimumWeightedMinutes)
		line("interval tolerance", "%d", r.IntervalTolerance)
		l := p.Limits
		line("limits", "%d tuples per upload, %d per check, %d minutes per tuple", l.MaxUploadTuples, l.MaxCheckTuples, l.MaxTupleMinutes)
	}
	return bw.Flush()
}

func joinInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, sep)
}

// Shared by the commands that talk to a backend: which attested identities
// to accept.

// measurementSizes are the measurement lengths of the TEEs conftrace knows:
// 32 bytes (sim, SGX MRENCLAVE), 48 bytes (TDX MRTD, SNP launch digest).
var measurementSizes = []int{32, 48}

// parseMeasurement decodes a hex measurement and checks its length, so
// that a truncated paste fails here rather than as a mismatch later.
func parseMeasurement(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("measurement %q is not valid hex: %v", s, err)
	}
	for _, n := range measurementSizes {
		if len(b) == n {
			return b, nil
		}
	}
	return nil, fmt.Errorf("measurement %q is %d bytes, want 32 (sim, sgx) or 48 (tdx, snp)", s, len(b))
}

// measurementsFlag is a repeatable --measurement flag.
type measurementsFlag [][]byte

func (m *measurementsFlag) String() string {
	if m == nil {
		return ""
	}
	s := make([]string, len(*m))
	for i, b := range *m {
		s[i] = hex.EncodeToString(b)
	}
	return strings.Join(s, ",")
}

func (m *measurementsFlag) Set(s string) error {
	b, err := parseMeasurement(s)
	if err != nil {
		return err
	}
	*m = append(*m, b)
	return nil
}

// expectFlags are the --measurement and --allow-simulated flags.
type expectFlags struct {
	measurements   measurementsFlag
	allowSimulated bool
}

func (e *expectFlags) register(fs *flag.FlagSet) {
	fs.Var(&e.measurements, "measurement", "an acceptable TEE measurement in `hex` (repeatable); none accepts any code, for development only")
	fs.BoolVar(&e.allowSimulated, "allow-simulated", false, "accept a backend in the simulated TEE, which protects nothing (development only)")
}

func (e *expectFlags) expectations() attest.Expectations {
	return attest.Expectations{Measurements: e.measurements, AllowSimulated: e.allowSimulated}
}

// measurementsHex returns the measurements as device.Config stores them.
func (e *expectFlags) measurementsHex() []string {
	var s []string
	for _, m := range e.measurements {
		s = append(s, hex.EncodeToString(m))
	}
	return s
}

// deviceClient verifies the backend that a device's state names, with the
// expectations the device was initialised with, and returns a client for it.
func deviceClient(ctx context.Context, d *device.Device) (*client.Client, error) {
	cfg := d.Config()
	exp := attest.Expectations{AllowSimulated: cfg.AllowSimulated}
	for _, s := range cfg.Measurements {
		m, err := parseMeasurement(s)
		if err != nil {
			return nil, fmt.Errorf("device state %s: %w", d.Dir(), err)
		}
		exp.Measurements = append(exp.Measurements, m)
	}
	return client.New(ctx, client.Config{Server: cfg.Server, Relay: cfg.Relay, Expectations: exp})
}
