package policy

import (
	"bytes"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/conftrace/conftrace/attest"
)

// TCB says which platforms a backend's clients accept, beyond what they
// require themselves: a phone judges the platform's TCB (its microcode,
// firmware and quoting enclave) by the attested policy as well as by its
// own expectations (see [TCBExpectations]). The zero value, which
// [Default] returns, accepts only up-to-date SGX platforms and names no TDX
// or SNP minimum, so that TDX and SNP backends are refused until their
// policy names the minimum TCB of the processor line they run on: no
// collateral says offline what is current there, and the right minimum
// depends on the product line.
//
// In JSON:
//
//	"tcb": {
//	  "sgx_accepted": [{"status": "SWHardeningNeeded", "advisories": ["INTEL-SA-00615"]}],
//	  "tdx_min_tcb": "03000500000000000000000000000000",
//	  "snp_min_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
//	}
//
// A policy can only ever accept platforms whose attestation itself is sound.
// A platform whose TCB is out of date may have leaked its attestation key,
// and could then attest any policy, including one that accepts it: so
// OutOfDate statuses cannot be accepted here, only by a client's own
// expectations. The statuses a policy may accept (SWHardeningNeeded,
// ConfigurationNeeded, ConfigurationAndSWHardeningNeeded) are those of an
// up-to-date platform, with the advisories they name mitigated only by the
// enclave's software or the platform's configuration. For the same reason
// the TDX and SNP minimums here guard against platforms that are honest but
// unpatched: a platform whose signing key leaked can attest a policy with a
// lower minimum, which only a minimum the client holds itself
// (attest.Expectations.MinTDXTCB, MinSNPTCB, never lowered by [TCB.Apply])
// stops.
type TCB struct {
	// SGXAccepted lists the SGX TCB statuses accepted besides UpToDate,
	// each with the advisories accepted with it.
	SGXAccepted []SGXAccepted `json:"sgx_accepted,omitempty"`
	// TDXMinTCB is the lowest acceptable TEE_TCB_SVN of a TDX platform, 32
	// lowercase hex digits, compared byte by byte; empty refuses TDX.
	TDXMinTCB string `json:"tdx_min_tcb,omitempty"`
	// SNPMinTCB is the lowest acceptable reported TCB of an SEV-SNP
	// platform, compared component by component; nil refuses SNP.
	SNPMinTCB *SNPTCB `json:"snp_min_tcb,omitempty"`
}

// SGXAccepted accepts an SGX TCB status together with advisories: evidence
// with that status is accepted if every advisory its TCB levels name is
// listed (see [attest.AcceptedTCB]).
type SGXAccepted struct {
	// Status is SWHardeningNeeded, ConfigurationNeeded or
	// ConfigurationAndSWHardeningNeeded.
	Status string `json:"status"`
	// Advisories are the accepted Intel advisory IDs ("INTEL-SA-00615"):
	// those the enclave is hardened against, or whose configuration issue
	// the deployment accepts. The field is required; [] accepts the status
	// only from TCB levels that name no advisory.
	Advisories []string `json:"advisories"`
}

// SNPTCB is an SEV-SNP TCB version: the security patch levels of the
// secure processor's bootloader and OS (TEE), the SNP firmware and the
// microcode, each 0 to 255.
type SNPTCB struct {
	Bootloader int `json:"bootloader"`
	TEE        int `json:"tee"`
	SNP        int `json:"snp"`
	Microcode  int `json:"microcode"`
}

// IsZero reports whether t accepts nothing beyond the defaults; a policy
// with a zero TCB section is written without one.
func (t TCB) IsZero() bool {
	return len(t.SGXAccepted) == 0 && t.TDXMinTCB == "" && t.SNPMinTCB == nil
}

// acceptableByPolicy reports whether a policy may accept the SGX status s
// (see [TCB]).
func acceptableByPolicy(s string) bool {
	switch s {
	case attest.TCBSWHardeningNeeded, attest.TCBConfigurationNeeded, attest.TCBConfigurationAndSWHardeningNeeded:
		return true
	}
	return false
}

// isAdvisoryID reports whether s has the form of Intel's advisory IDs,
// INTEL-SA- and five digits.
func isAdvisoryID(s string) bool {
	const prefix = "INTEL-SA-"
	if len(s) != len(prefix)+5 || s[:len(prefix)] != prefix {
		return false
	}
	return !strings.ContainsFunc(s[len(prefix):], func(r rune) bool { return r < '0' || r > '9' })
}

// maxAdvisories bounds the advisories accepted with one status.
const maxAdvisories = 256

// Validate reports the first rule the TCB section breaks.
func (t TCB) Validate() error {
	for i, a := range t.SGXAccepted {
		switch {
		case a.Status == attest.TCBUpToDate:
			return invalidf("tcb: sgx_accepted: %s is always accepted; list only other statuses", a.Status)
		case !slices.Contains(attest.TCBStatuses(), a.Status):
			return invalidf("tcb: sgx_accepted: unknown SGX TCB status %q; want %s, %s or %s", a.Status,
				attest.TCBSWHardeningNeeded, attest.TCBConfigurationNeeded, attest.TCBConfigurationAndSWHardeningNeeded)
		case !acceptableByPolicy(a.Status):
			return invalidf("tcb: sgx_accepted: %s cannot be accepted by an attested policy: such a platform may have leaked its attestation key and could attest any policy (only a client's own expectations can accept it)", a.Status)
		case slices.ContainsFunc(t.SGXAccepted[:i], func(b SGXAccepted) bool { return b.Status == a.Status }):
			return invalidf("tcb: sgx_accepted: %s listed twice", a.Status)
		case a.Advisories == nil:
			return invalidf("tcb: sgx_accepted: %s: advisories missing (write [] to accept the status only without advisories)", a.Status)
		case len(a.Advisories) > maxAdvisories:
			return invalidf("tcb: sgx_accepted: %s: %d advisories, limit %d", a.Status, len(a.Advisories), maxAdvisories)
		}
		for j, id := range a.Advisories {
			if !isAdvisoryID(id) {
				return invalidf("tcb: sgx_accepted: %s: advisory %q: want INTEL-SA- and five digits", a.Status, id)
			}
			if slices.Contains(a.Advisories[:j], id) {
				return invalidf("tcb: sgx_accepted: %s: advisory %s listed twice", a.Status, id)
			}
		}
	}
	if t.TDXMinTCB != "" {
		if _, err := t.tdxMinimum(); err != nil {
			return err
		}
	}
	if t.SNPMinTCB != nil {
		if _, err := t.snpMinimum(); err != nil {
			return err
		}
	}
	return nil
}

func (t TCB) tdxMinimum() ([]byte, error) {
	b, err := hex.DecodeString(t.TDXMinTCB)
	// Lowercase only, so that one minimum has one canonical form.
	if err != nil || len(b) != 16 || hex.EncodeToString(b) != t.TDXMinTCB {
		return nil, invalidf("tcb: tdx_min_tcb %q: want the TEE_TCB_SVN as 32 lowercase hex digits", t.TDXMinTCB)
	}
	if !slices.ContainsFunc(b, func(x byte) bool { return x != 0 }) {
		return nil, invalidf("tcb: tdx_min_tcb is all zero, which accepts every TDX module; name the lowest safe TEE_TCB_SVN")
	}
	return b, nil
}

func (t TCB) snpMinimum() ([]byte, error) {
	m := t.SNPMinTCB
	b := make([]byte, 4)
	for i, v := range []int{m.Bootloader, m.TEE, m.SNP, m.Microcode} {
		if v < 0 || v > 255 {
			return nil, invalidf("tcb: snp_min_tcb: %s %d outside 0..255", []string{"bootloader", "tee", "snp", "microcode"}[i], v)
		}
		b[i] = byte(v)
	}
	if bytes.Equal(b, make([]byte, 4)) {
		return nil, invalidf("tcb: snp_min_tcb is all zero, which accepts every SNP firmware; name the lowest safe TCB")
	}
	return b, nil
}

// Apply returns exp with the TCB section added: the SGX statuses it
// accepts are added to exp's, and exp's TDX and SNP minimums are raised to
// the section's, component by component. It never lowers what exp
// requires. t must be valid.
func (t TCB) Apply(exp attest.Expectations) attest.Expectations {
	exp.AcceptedTCB = slices.Clone(exp.AcceptedTCB)
	for _, a := range t.SGXAccepted {
		exp.AcceptedTCB = append(exp.AcceptedTCB, attest.AcceptedTCB{Status: a.Status, Advisories: slices.Clone(a.Advisories)})
	}
	if m, err := t.tdxMinimum(); err == nil {
		exp.MinTDXTCB = raise(exp.MinTDXTCB, m)
	}
	if t.SNPMinTCB != nil {
		if m, err := t.snpMinimum(); err == nil {
			exp.MinSNPTCB = raise(exp.MinSNPTCB, m)
		}
	}
	return exp
}

// raise returns the component-wise maximum of cur and floor. A cur of
// another size is kept, for attest.Expectations.Check to report.
func raise(cur, floor []byte) []byte {
	switch len(cur) {
	case 0:
		return bytes.Clone(floor)
	case len(floor):
	default:
		return cur
	}
	out := bytes.Clone(cur)
	for i := range out {
		out[i] = max(out[i], floor[i])
	}
	return out
}

// TCBExpectations parses the policy document doc and returns base with its
// TCB section applied ([TCB.Apply]). A client calls it with the policy of
// the bundle it is about to verify; attest.VerifyBundle then checks that
// the evidence binds that very policy.
func TCBExpectations(doc []byte, base attest.Expectations) (attest.Expectations, error) {
	p, err := Parse(doc)
	if err != nil {
		return attest.Expectations{}, err
	}
	return p.TCB.Apply(base), nil
}
