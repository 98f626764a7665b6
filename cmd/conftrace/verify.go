package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"github.com/conftrace/conftrace/release"
)

// verifyUsage is verify's usage line and help text.
const verifyUsage = "verify --server URL [--measurement HEX ... | --governance FILE [--min-sequence N]] [--allow-simulated]\n" +
	"                        [--tee KIND] [PLATFORM FLAGS] [--json]\n" +
	"       conftrace verify --evidence FILE --tee sgx|tdx|snp [--collateral DIR] [--at UNIX] [--forbid-debug]\n" +
	"                        [--measurement HEX ...] [PLATFORM FLAGS] [--json]\n" +
	"platform flags: [--tcb-status LIST] [--min-tcb TCB] [--rtmr INDEX=HEX ...] [--mrconfigid HEX]\n" +
	"                [--host-data HEX] [--vmpl N] [--no-tcb]\n\n" +
	"With --server: fetches the backend's attestation bundle, verifies the TEE evidence\n" +
	"against the expectations (the flags, and the platform TCBs the attested policy\n" +
	"accepts) and that it binds the served keys and policy, and prints the attested\n" +
	"identity, the policy, the bundle's validity and the release statement it carries.\n" +
	"With --governance, the statement must be signed by every member of the set and\n" +
	"admit the attested code and policy. Every flag is applied: a backend in another\n" +
	"TEE than a flag is for is refused.\n\n" +
	"With --evidence: verifies raw evidence offline (an SGX DCAP quote, a TDX quote, or\n" +
	"an SNP report followed by its certificate table) against the pinned Intel and AMD\n" +
	"roots and prints the identity it proves. The platform's TCB must be judged: for\n" +
	"SGX, --collateral names a directory holding the PCS collateral (tcb_info*.json,\n" +
	"qe_identity*.json and the TCB signing chain *.pem), and UpToDate is accepted, or a\n" +
	"status --tcb-status lists; for TDX and SNP, whose status cannot be judged offline,\n" +
	"--min-tcb refuses platforms whose firmware is older than the given minimum.\n" +
	"Without them the identity is printed but verify fails, unless --no-tcb is given.\n\n" +
	"Exits non-zero when anything does not match."

// verifySource is where verify takes evidence from: a backend (server) or
// a file of raw evidence (evidence, tee, collateral, at).
type verifySource struct {
	server, evidence, tee, collateral string
	at                                int64
	forbidDebug                       bool
	// governance and minSequence judge a backend's release statement.
	governance  string
	minSequence uint64
}

// runVerify verifies a backend's attestation bundle or raw evidence
// against the auditor's expectations and prints what it proves: the
// identity of the code and, from a backend, the policy it enforces. It
// fails when anything does not match.
func runVerify(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "verify", verifyUsage)
	var src verifySource
	fs.StringVar(&src.server, "server", "", "the backend's base `URL`")
	fs.StringVar(&src.evidence, "evidence", "", "verify the evidence in `FILE` offline instead of a running backend")
	fs.StringVar(&src.tee, "tee", "", "the `kind` of evidence: sgx, tdx or snp (with --server: the TEE the backend must run in)")
	fs.StringVar(&src.collateral, "collateral", "", "with --evidence --tee sgx: the `directory` of PCS collateral")
	fs.Int64Var(&src.at, "at", 0, "with --evidence: verify as of this Unix `time` (default now)")
	fs.BoolVar(&src.forbidDebug, "forbid-debug", false, "refuse evidence from a debug-mode TEE (as clients always do)")
	fs.StringVar(&src.governance, "governance", "", "with --server: the governance `file` whose members must all have signed the\n"+
		"release statement that admits the backend's code and policy")
	fs.Uint64Var(&src.minSequence, "min-sequence", 0, "with --governance: the lowest release sequence `number` accepted")
	var plat platformFlags
	plat.register(fs)
	var exp expectFlags
	exp.register(fs)
	asJSON := fs.Bool("json", false, "print the identity and policy as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	var (
		v   verified
		err error
	)
	switch {
	case src.server != "" && src.evidence != "":
		return usagef("--server and --evidence exclude each other")
	case src.evidence != "":
		v, err = verifyEvidenceFile(ctx, src, plat, exp.expectations())
	case src.server != "":
		v, err = verifyServer(ctx, src, plat, exp.expectations())
	default:
		return usagef("--server or --evidence is required")
	}
	if v.id.TEE == "" {
		return err
	}
	// Evidence that verified but whose TCB was not judged, or judged
	// wanting, is printed for the auditor before verify fails.
	var perr error
	if *asJSON {
		perr = printIdentityJSON(cio.stdout, v)
	} else {
		perr = printIdentity(cio.stdout, v)
	}
	return errors.Join(perr, err)
}

// verified is what verify found: the identity, the attested policy (from a
// backend) and whether the platform's TCB was judged.
type verified struct {
	id        attest.Identity
	policyDoc []byte
	judged    bool
	// From a backend: the bundle's validity and its release statement,
	// and whether a governance set admitted it.
	issuedAt, notAfter time.Time
	release            *release.Release
	admitted           bool
	// certKey is the attested exposure certificate key, if the bundle
	// carries one.
	certKey []byte
}

// tcbJudged reports whether exp, without the --no-tcb opt-out, judge id's
// platform TCB (whether or not they accept it).
func tcbJudged(exp attest.Expectations, id attest.Identity) bool {
	exp.AllowUnjudgedTCB = false
	return !errors.Is(exp.CheckTCB(id), attest.ErrTCBNotJudged)
}

// verifyServer verifies a backend as a client does, with the expectations
// of the flags, and returns its identity and attested policy.
func verifyServer(ctx context.Context, src verifySource, plat platformFlags, exp attest.Expectations) (verified, error) {
	switch attest.TEE(src.tee) {
	case "", attest.Sim, attest.SGX, attest.TDX, attest.SNP:
	default:
		return verified{}, usagef("--tee %q: want sim, sgx, tdx or snp", src.tee)
	}
	switch {
	case src.collateral != "":
		return verified{}, usagef("--collateral applies to --evidence only: a backend serves its collateral with its evidence")
	case src.at != 0:
		return verified{}, usagef("--at applies to --evidence only: a backend is verified now")
	}
	if err := plat.checkNoTCB(false); err != nil {
		return verified{}, err
	}
	if err := plat.apply(&exp, ""); err != nil {
		return verified{}, err
	}
	cfg := client.Config{Server: src.server, Expectations: exp, MinReleaseSequence: src.minSequence}
	switch {
	case src.governance != "":
		var err error
		if cfg.Governance, err = readGovernance(src.governance); err != nil {
			return verified{}, err
		}
	case src.minSequence != 0:
		return verified{}, usagef("--min-sequence goes with --governance")
	}
	c, err := client.New(ctx, cfg)
	if err != nil {
		return verified{}, err
	}
	v := verified{id: c.Identity(), policyDoc: c.PolicyDocument(), admitted: cfg.Governance != nil}
	v.issuedAt, v.notAfter = c.Validity()
	v.certKey = c.CertificateKey()
	if f := c.AttestedRelease(); f != nil {
		// Its signatures verified with the bundle; who signed is for
		// --governance to judge.
		if v.release, err = release.Parse(f); err != nil {
			return verified{}, fmt.Errorf("the bundle's release statement: %w", err)
		}
	}
	if src.tee != "" && v.id.TEE != attest.TEE(src.tee) {
		return verified{}, &attest.MismatchError{Field: "tee", Got: string(v.id.TEE), Want: src.tee + " (--tee)"}
	}
	if err := plat.checkServerTEE(v.id.TEE); err != nil {
		return verified{}, err
	}
	// Clients refuse debug TEEs; --forbid-debug asks for nothing more.
	full, err := policy.TCBExpectations(v.policyDoc, exp)
	if err != nil {
		return verified{}, fmt.Errorf("attested policy: %w", err)
	}
	v.judged = tcbJudged(full, v.id)
	return v, nil
}

// verifiedJSON is the --json output of verify: byte fields in lowercase
// hex; the fields of one TEE only for its evidence.
type verifiedJSON struct {
	TEE            attest.TEE      `json:"tee"`
	Measurement    string          `json:"measurement"`
	Signer         string          `json:"signer"`
	ProductID      uint16          `json:"product_id"`
	SVN            uint16          `json:"svn"`
	Debug          bool            `json:"debug"`
	TCBStatus      string          `json:"tcb_status"`
	TCBAdvisoryIDs []string        `json:"tcb_advisory_ids,omitempty"`
	TCBJudged      *bool           `json:"tcb_judged,omitempty"`
	PlatformTCB    string          `json:"platform_tcb,omitempty"`
	RTMRs          []string        `json:"rtmrs,omitempty"`
	MRConfigID     string          `json:"mrconfigid,omitempty"`
	HostData       string          `json:"host_data,omitempty"`
	VMPL           *uint8          `json:"vmpl,omitempty"`
	ReportData     string          `json:"report_data"`
	IssuedAt       *time.Time      `json:"issued_at,omitempty"`
	NotAfter       *time.Time      `json:"not_after,omitempty"`
	CertificateKey string          `json:"certificate_key,omitempty"`
	Release        *releaseJSON    `json:"release,omitempty"`
	Policy         json.RawMessage `json:"policy,omitempty"`
}

// releaseJSON is the release statement a backend's bundle carries.
type releaseJSON struct {
	Sequence     uint64 `json:"sequence"`
	Note         string `json:"note,omitempty"`
	PolicySHA256 string `json:"policy_sha256"`
	Signatures   int    `json:"signatures"`
	// Admitted says that --governance judged and admitted it.
	Admitted bool `json:"admitted"`
}

func printIdentityJSON(w io.Writer, v verified) error {
	id := v.id
	out := verifiedJSON{
		TEE:            id.TEE,
		Measurement:    hex.EncodeToString(id.Measurement),
		Signer:         hex.EncodeToString(id.Signer),
		ProductID:      id.ProductID,
		SVN:            id.SVN,
		Debug:          id.Debug,
		TCBStatus:      id.TCBStatus,
		TCBAdvisoryIDs: id.TCBAdvisoryIDs,
		PlatformTCB:    hex.EncodeToString(id.PlatformTCB),
		MRConfigID:     hex.EncodeToString(id.MRConfigID),
		HostData:       hex.EncodeToString(id.HostData),
		ReportData:     hex.EncodeToString(id.ReportData[:]),
		Policy:         v.policyDoc,
		CertificateKey: hex.EncodeToString(v.certKey),
	}
	if id.TEE != attest.Sim {
		out.TCBJudged = &v.judged
	}
	if !v.issuedAt.IsZero() {
		out.IssuedAt, out.NotAfter = &v.issuedAt, &v.notAfter
	}
	if r := v.release; r != nil {
		out.Release = &releaseJSON{Sequence: r.Statement.Sequence, Note: r.Statement.Note,
			PolicySHA256: hex.EncodeToString(r.Statement.PolicySHA256[:]), Signatures: len(r.Signatures), Admitted: v.admitted}
	}
	if id.TEE == attest.TDX {
		for _, r := range id.RTMRs {
			out.RTMRs = append(out.RTMRs, hex.EncodeToString(r))
		}
	}
	if id.TEE == attest.SNP {
		out.VMPL = &id.VMPL
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func printIdentity(w io.Writer, v verified) error {
	id := v.id
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
	printTCB(line, v)
	if id.TEE == attest.TDX {
		for i, r := range id.RTMRs {
			line(fmt.Sprintf("rtmr%d", i), "%x", r)
		}
		line("mrconfigid", "%x", id.MRConfigID)
	}
	if id.TEE == attest.SNP {
		line("host data", "%x", id.HostData)
		line("vmpl", "%d", id.VMPL)
	}
	line("report data", "%x", id.ReportData[:])
	printBundle(line, v)
	if v.policyDoc != nil {
		if err := printPolicy(line, v.policyDoc); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// printBundle prints, for a backend, the bundle's validity and the release
// statement it carries.
func printBundle(line func(k, format string, args ...any), v verified) {
	if v.issuedAt.IsZero() {
		return
	}
	line("bundle valid", "%s until %s", v.issuedAt.UTC().Format(time.RFC3339), v.notAfter.UTC().Format(time.RFC3339))
	if len(v.certKey) > 0 {
		line("certificate key", "ed25519 %x", v.certKey)
	} else {
		line("certificate key", "(none: this backend issues no exposure certificates)")
	}
	r := v.release
	if r == nil {
		line("release", "(none: phones pinned to a governance set refuse this backend)")
		return
	}
	st := r.Statement
	judged := "signers NOT CHECKED: give --governance"
	if v.admitted {
		judged = "admitted by every member of --governance"
	}
	line("release", "sequence %d, %d signatures, %s", st.Sequence, len(r.Signatures), judged)
	if st.Note != "" {
		line("release note", "%s", st.Note)
	}
	line("release policy", "sha256 %x", st.PolicySHA256)
}

// printTCB prints the platform's TCB and whether it was judged.
func printTCB(line func(k, format string, args ...any), v verified) {
	id := v.id
	switch {
	case id.TEE == attest.Sim:
		line("tcb status", "(none)")
	case id.TCBStatus != "":
		line("tcb status", "%s", id.TCBStatus)
	case !v.judged && id.TEE == attest.SGX:
		line("tcb status", "(none: NOT JUDGED, no collateral; the platform may be unpatched)")
	case !v.judged:
		line("tcb status", "(none: NOT JUDGED, no minimum TCB; the platform may be unpatched)")
	default:
		line("tcb status", "(none for %s: the platform tcb is at least the minimum)", id.TEE)
	}
	if len(id.TCBAdvisoryIDs) > 0 {
		line("tcb advisories", "%s", strings.Join(id.TCBAdvisoryIDs, ", "))
	}
	switch {
	case id.TEE == attest.SNP && len(id.PlatformTCB) == 4:
		p := id.PlatformTCB
		line("platform tcb", "bootloader %d, tee %d, snp %d, microcode %d", p[0], p[1], p[2], p[3])
	case id.PlatformTCB != nil:
		line("platform tcb", "%x", id.PlatformTCB)
	}
}

// printPolicy prints what the attested policy says.
func printPolicy(line func(k, format string, args ...any), policyDoc []byte) error {
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
	printPolicyTCB(line, p.TCB)
	printPolicyFlows(line, p)
	return nil
}

// printPolicyFlows prints the policy's n-order notifications, exposure
// certificates, public statistics and operator contact.
func printPolicyFlows(line func(k, format string, args ...any), p policy.Policy) {
	orders := "1 (contacts of confirmed cases only)"
	if m := p.MaxOrder(); m > 1 {
		var th []string
		for k := 2; k <= m; k++ {
			th = append(th, fmt.Sprintf("order %d from %d", k, p.OrderRisk(k).MinimumWeightedMinutes))
		}
		orders = fmt.Sprintf("%d (%s weighted minutes a day)", m, strings.Join(th, ", "))
	}
	line("max order", "%s", orders)
	once := ""
	if p.Certificates.SingleUse {
		once = ", accepted once per verifier"
	}
	line("certificates", "valid %s%s", p.CertificateValidity(), once)
	if st := p.Statistics; st != (policy.Statistics{}) {
		line("statistics", "%s, epsilon %d/1000 per count per day", st.Mechanism, st.EpsilonMilli)
	} else {
		line("statistics", "(none released)")
	}
	if p.OperatorContact != "" {
		line("operator contact", "%q", p.OperatorContact)
	}
}

// printPolicyTCB prints the platform TCBs the policy accepts.
func printPolicyTCB(line func(k, format string, args ...any), t policy.TCB) {
	accepted := []string{attest.TCBUpToDate}
	for _, a := range t.SGXAccepted {
		adv := "no advisory"
		if len(a.Advisories) > 0 {
			adv = strings.Join(a.Advisories, ", ")
		}
		accepted = append(accepted, fmt.Sprintf("%s with %s", a.Status, adv))
	}
	line("sgx tcb accepted", "%s", strings.Join(accepted, "; "))
	if t.TDXMinTCB != "" {
		line("tdx minimum tcb", "%s", t.TDXMinTCB)
	}
	if m := t.SNPMinTCB; m != nil {
		line("snp minimum tcb", "bootloader %d, tee %d, snp %d, microcode %d", m.Bootloader, m.TEE, m.SNP, m.Microcode)
	}
}

func joinInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, sep)
}

// verifyEvidenceFile verifies raw evidence offline and judges it by exp
// and the platform flags: the code (measurements, simulation, pinned
// registers), debug mode with --forbid-debug, and the platform's TCB. When
// only the TCB judgement fails, it returns the identity with the error, to
// be printed; revoked platforms are always refused by the verifiers.
func verifyEvidenceFile(ctx context.Context, src verifySource, plat platformFlags, exp attest.Expectations) (verified, error) {
	tee := attest.TEE(src.tee)
	switch tee {
	case attest.SGX, attest.TDX, attest.SNP, attest.Sim:
	default:
		return verified{}, usagef("--tee %q: want sgx, tdx or snp with --evidence", src.tee)
	}
	if err := plat.checkTEE(tee, src.collateral != ""); err != nil {
		return verified{}, err
	}
	switch {
	case src.governance != "" || src.minSequence != 0:
		return verified{}, usagef("--governance and --min-sequence apply to --server only: raw evidence carries no release statement")
	case src.collateral != "" && tee != attest.SGX:
		return verified{}, usagef("--collateral applies to --tee sgx only")
	case len(plat.tcbStatuses) != 0 && src.collateral == "":
		return verified{}, usagef("--tcb-status needs --collateral, without which the SGX TCB has no status")
	}
	if err := plat.apply(&exp, tee); err != nil {
		return verified{}, err
	}
	v, err := evidenceVerifier(src, plat, exp)
	if err != nil {
		return verified{}, err
	}
	data, err := os.ReadFile(src.evidence)
	if err != nil {
		return verified{}, fmt.Errorf("reading evidence: %w", err)
	}
	if tee == attest.Sim && !exp.AllowSimulated {
		return verified{}, attest.ErrSimulated
	}
	id, err := v.Verify(ctx, attest.Evidence{TEE: tee, Data: data})
	if err != nil {
		return verified{}, fmt.Errorf("%s evidence does not verify: %w", tee, err)
	}
	// Offline, the auditor wants to see the debug bit rather than have it
	// refused, unless --forbid-debug.
	if err := exp.CheckCode(id); err != nil {
		return verified{}, err
	}
	if src.forbidDebug && id.Debug {
		return verified{}, &attest.MismatchError{Field: "debug", Got: "true", Want: "false (--forbid-debug)"}
	}
	return verified{id: id, judged: tcbJudged(exp, id)}, tcbHint(id.TEE, exp.CheckTCB(id))
}

// tcbHint adds to a TCB judgement's error the flag that would change it.
func tcbHint(tee attest.TEE, err error) error {
	var me *attest.MismatchError
	switch {
	case errors.Is(err, attest.ErrTCBNotJudged) && tee == attest.SGX:
		return fmt.Errorf("%w (--collateral DIR judges it; --no-tcb accepts it unjudged)", err)
	case errors.Is(err, attest.ErrTCBNotJudged):
		return fmt.Errorf("%w (--min-tcb judges it; --no-tcb accepts it unjudged)", err)
	case errors.As(err, &me) && me.Field == "tcb_status":
		return fmt.Errorf("%w (--tcb-status lists the statuses to accept)", err)
	}
	return err
}

// evidenceVerifier returns the verifier for verify --evidence. The TDX and
// SNP minimum TCBs and RTMRs are given to the verifiers too, whose errors
// say which component is too low or which register differs.
func evidenceVerifier(src verifySource, plat platformFlags, exp attest.Expectations) (attest.Verifier, error) {
	now := time.Now()
	if src.at != 0 {
		now = time.Unix(src.at, 0)
	}
	clock := func() time.Time { return now }
	switch attest.TEE(src.tee) {
	case attest.SGX:
		opts := sgx.VerifierOptions{Time: now}
		if src.collateral != "" {
			c, err := sgx.ReadCollateralDir(src.collateral)
			if err != nil {
				return nil, err
			}
			opts.Collateral = c
		}
		return sgx.NewVerifier(opts), nil
	case attest.TDX:
		opts := tdx.VerifierOptions{Now: clock, RTMRs: plat.rtmrs.registers()}
		if m := exp.MinTDXTCB; len(m) == tdx.TEETCBSVNSize {
			opts.MinimumTEETCBSVN = [tdx.TEETCBSVNSize]byte(m)
		}
		return tdx.NewVerifier(opts), nil
	case attest.SNP:
		opts := snp.VerifierOptions{Now: clock}
		if m := exp.MinSNPTCB; len(m) == 4 {
			opts.MinimumTCB = snp.TCB{Bootloader: m[0], TEE: m[1], SNP: m[2], Microcode: m[3]}
		}
		return snp.NewVerifier(opts)
	}
	return sim.NewVerifier(sim.VerifierOptions{AllowSimulated: exp.AllowSimulated}), nil
}

// readGovernance reads the governance file that --governance names, for
// a client to pin.
func readGovernance(path string) (*release.Governance, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--governance: %w", err)
	}
	g, err := release.ParseGovernance(b)
	if err != nil {
		return nil, fmt.Errorf("--governance %s: %w", path, err)
	}
	return g, nil
}
