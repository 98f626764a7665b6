package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	"github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/attest/tdx"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/policy"
)

// runVerify fetches a backend's attestation bundle, verifies it against
// the auditor's expectations and prints what it proves: the identity of the
// code and the policy it enforces. It fails when anything does not match.
func runVerify(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "verify", "verify --server URL [--measurement HEX ...] [--allow-simulated] [--json]\n"+
		"       conftrace verify --evidence FILE --tee sgx|tdx|snp [--collateral DIR] [--at UNIX] [--forbid-debug]\n"+
		"                        [--min-tcb TCB] [--rtmr INDEX=HEX ...] [--json]\n\n"+
		"With --server: fetches the backend's attestation bundle, verifies the TEE evidence\n"+
		"against the expectations and that it binds the served keys and policy, and prints\n"+
		"the attested identity and policy.\n\n"+
		"With --evidence: verifies raw evidence offline (an SGX DCAP quote, a TDX quote, or\n"+
		"an SNP report followed by its certificate table) against the pinned Intel and AMD\n"+
		"roots and prints the identity it proves. For SGX, --collateral names a directory\n"+
		"holding the PCS collateral (tcb_info*.json, qe_identity*.json and the TCB signing\n"+
		"chain *.pem) so that the platform's TCB status is judged. For TDX and SNP, whose\n"+
		"TCB status cannot be judged offline, --min-tcb refuses platforms whose firmware is\n"+
		"older than the given minimum, and for TDX --rtmr pins runtime measurement registers.\n\n"+
		"Exits non-zero when anything does not match.")
	server := fs.String("server", "", "the backend's base `URL`")
	evidenceFile := fs.String("evidence", "", "verify the evidence in `FILE` offline instead of a running backend")
	teeName := fs.String("tee", "", "with --evidence: the `kind` of evidence: sgx, tdx or snp")
	collateralDir := fs.String("collateral", "", "with --evidence --tee sgx: the `directory` of PCS collateral")
	at := fs.Int64("at", 0, "with --evidence: verify as of this Unix `time` (default now)")
	forbidDebug := fs.Bool("forbid-debug", false, "with --evidence: refuse evidence from a debug-mode TEE")
	var plat platformFlags
	plat.register(fs)
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
	case *server != "" && *evidenceFile != "":
		return usagef("--server and --evidence exclude each other")
	case *evidenceFile != "":
		var err error
		id, err = verifyEvidenceFile(ctx, *evidenceFile, *teeName, *collateralDir, *at, plat, exp.expectations())
		if err != nil {
			return err
		}
		if *forbidDebug && id.Debug {
			return &attest.MismatchError{Field: "debug", Got: "true", Want: "false (--forbid-debug)"}
		}
	case *server != "":
		c, err := client.New(ctx, client.Config{Server: *server, Expectations: exp.expectations()})
		if err != nil {
			return err
		}
		id, policyDoc = c.Identity(), c.PolicyDocument()
	default:
		return usagef("--server or --evidence is required")
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
		line("matching", "%s", strings.Join(p.Matching, ", "))
		for _, k := range p.GAENExportKeys {
			line("gaen export key", "%s (ecdsa p-256 sha256 %x)", k.Name, sha256.Sum256(k.PublicKey))
		}
		line("retention", "%d days", p.RetentionDays)
		line("upload authorization", "valid %s", p.UploadAuthorizationTTL())
		r := p.Risk
		line("risk buckets", "attenuation <= %s dB, weights %s %%", joinInts(r.AttenuationThresholds, "/"), joinInts(r.WeightsPercent, "/"))
		line("risk threshold", "%d weighted minutes a day", r.MinimumWeightedMinutes)
		line("interval tolerance", "%d", r.IntervalTolerance)
		l := p.Limits
		line("limits", "%d sightings per upload, %d per check, %d minutes per sighting", l.MaxUploadSightings, l.MaxCheckSightings, l.MaxSightingMinutes)
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

// verifyEvidenceFile verifies raw evidence offline and returns the identity
// it proves. Debug evidence and any TCB status are reported, not refused
// (--forbid-debug refuses debug); measurements and simulation are checked
// against exp; revoked platforms are always refused by the verifiers.
func verifyEvidenceFile(ctx context.Context, path, teeName, collateralDir string, at int64, plat platformFlags, exp attest.Expectations) (attest.Identity, error) {
	if plat.minTCB != "" && teeName != string(attest.TDX) && teeName != string(attest.SNP) {
		return attest.Identity{}, usagef("--min-tcb applies to --tee tdx or snp only")
	}
	if len(plat.rtmrs) != 0 && teeName != string(attest.TDX) {
		return attest.Identity{}, usagef("--rtmr applies to --tee tdx only")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return attest.Identity{}, fmt.Errorf("reading evidence: %w", err)
	}
	now := time.Now()
	if at != 0 {
		now = time.Unix(at, 0)
	}
	clock := func() time.Time { return now }
	ev := attest.Evidence{TEE: attest.TEE(teeName), Data: data}
	var v attest.Verifier
	switch ev.TEE {
	case attest.SGX:
		opts := sgx.VerifierOptions{Time: now}
		if collateralDir != "" {
			c, err := sgx.ReadCollateralDir(collateralDir)
			if err != nil {
				return attest.Identity{}, err
			}
			opts.Collateral = c
		}
		v = sgx.NewVerifier(opts)
	case attest.TDX:
		opts := tdx.VerifierOptions{Now: clock, RTMRs: plat.rtmrs.registers()}
		if plat.minTCB != "" {
			if opts.MinimumTEETCBSVN, err = parseTDXMinTCB(plat.minTCB); err != nil {
				return attest.Identity{}, err
			}
		}
		v = tdx.NewVerifier(opts)
	case attest.SNP:
		opts := snp.VerifierOptions{Now: clock}
		if plat.minTCB != "" {
			if opts.MinimumTCB, err = parseSNPMinTCB(plat.minTCB); err != nil {
				return attest.Identity{}, err
			}
		}
		if v, err = snp.NewVerifier(opts); err != nil {
			return attest.Identity{}, err
		}
	case attest.Sim:
		v = sim.NewVerifier(sim.VerifierOptions{AllowSimulated: exp.AllowSimulated})
	default:
		return attest.Identity{}, usagef("--tee %q: want sgx, tdx or snp with --evidence", teeName)
	}
	if collateralDir != "" && ev.TEE != attest.SGX {
		return attest.Identity{}, usagef("--collateral applies to --tee sgx only")
	}
	if ev.TEE == attest.Sim && !exp.AllowSimulated {
		return attest.Identity{}, attest.ErrSimulated
	}
	id, err := v.Verify(ctx, ev)
	if err != nil {
		return attest.Identity{}, fmt.Errorf("%s evidence does not verify: %w", ev.TEE, err)
	}
	// Offline, the auditor wants to see the TCB status and the debug bit
	// rather than have them refused.
	if err := exp.CheckCode(id); err != nil {
		return attest.Identity{}, err
	}
	return id, nil
}
