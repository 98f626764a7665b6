package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/attest/tdx"
	"github.com/conftrace/conftrace/client"
)

// Flags that several commands share: which attested identities to accept,
// and what platforms verify --evidence requires.

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
	b, err := attest.ParseMeasurement(s)
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

// platformFlags are verify's requirements of the platform: a minimum TCB
// (TDX, SNP), accepted SGX TCB statuses or none judged at all, and pinned
// TDX registers and SNP host data and VMPL.
type platformFlags struct {
	minTCB      string
	rtmrs       rtmrsFlag
	mrConfigID  hexFlag
	hostData    hexFlag
	vmpl        vmplFlag
	tcbStatuses tcbStatusFlag
	noTCB       bool
}

func (p *platformFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.minTCB, "min-tcb", "", "the lowest acceptable platform `TCB` of TDX or SNP evidence: for snp the decimal\n"+
		"security patch levels \"bootloader,tee,snp,microcode\", for tdx the 16-byte TEE_TCB_SVN\n"+
		"in hex (compared byte by byte); with --server, raises the attested policy's minimum")
	fs.Var(&p.rtmrs, "rtmr", "the expected value of a TDX runtime measurement register as `INDEX=HEX`\n"+
		"(index 0 to 3, 48 bytes of hex; repeatable)")
	p.mrConfigID.size = tdx.MeasurementSize
	fs.Var(&p.mrConfigID, "mrconfigid", "the expected TDX MRCONFIGID, 48 bytes in `hex`")
	p.hostData.size = snpHostDataSize
	fs.Var(&p.hostData, "host-data", "the expected SNP HOST_DATA, 32 bytes in `hex`")
	fs.Var(&p.vmpl, "vmpl", "the `VMPL` (0 to 3) that SNP evidence must come from")
	fs.Var(&p.tcbStatuses, "tcb-status", "SGX TCB statuses to accept besides UpToDate, whatever advisories they name\n"+
		"(comma-separated `LIST`, such as SWHardeningNeeded,ConfigurationNeeded)")
	fs.BoolVar(&p.noTCB, "no-tcb", false, "accept evidence whose platform TCB was not judged (SGX without collateral,\n"+
		"TDX or SNP without --min-tcb): such a platform may be unpatched")
}

// snpHostDataSize is the size of an SNP report's HOST_DATA.
const snpHostDataSize = 32

// minTCBTEE returns the TEE whose TCB --min-tcb names by its form: SNP's
// four decimal levels or TDX's hex TEE_TCB_SVN.
func (p *platformFlags) minTCBTEE() attest.TEE {
	if strings.Contains(p.minTCB, ",") {
		return attest.SNP
	}
	return attest.TDX
}

// apply adds the requirements to exp. For --min-tcb it takes the form of
// tee's TCB, or when tee is empty (verify --server) the form it has.
func (p *platformFlags) apply(exp *attest.Expectations, tee attest.TEE) error {
	if p.minTCB != "" {
		if tee == "" {
			tee = p.minTCBTEE()
		}
		switch tee {
		case attest.TDX:
			m, err := parseTDXMinTCB(p.minTCB)
			if err != nil {
				return err
			}
			exp.MinTDXTCB = m[:]
		case attest.SNP:
			m, err := parseSNPMinTCB(p.minTCB)
			if err != nil {
				return err
			}
			exp.MinSNPTCB = []byte{m.Bootloader, m.TEE, m.SNP, m.Microcode}
		}
	}
	for i, r := range p.rtmrs {
		exp.RTMRs[i] = r
	}
	exp.MRConfigID, exp.HostData = p.mrConfigID.b, p.hostData.b
	if p.vmpl.set {
		exp.VMPL = &p.vmpl.v
	}
	for _, s := range p.tcbStatuses {
		exp.AcceptedTCB = append(exp.AcceptedTCB, attest.AcceptedTCB{Status: s, AnyAdvisory: true})
	}
	exp.AllowUnjudgedTCB = p.noTCB
	return nil
}

// checkTEE reports a flag that names a requirement of another TEE than
// tee, which verify --evidence refuses as a usage error before reading
// anything. (verify --server learns the TEE from the backend: see
// checkServerTEE.)
func (p *platformFlags) checkTEE(tee attest.TEE, collateral bool) error {
	only := func(flag string, set bool, tees ...attest.TEE) error {
		if set && !slices.Contains(tees, tee) {
			s := make([]string, len(tees))
			for i, t := range tees {
				s[i] = string(t)
			}
			return usagef("%s applies to --tee %s only", flag, strings.Join(s, " or "))
		}
		return nil
	}
	return errors.Join(
		only("--min-tcb", p.minTCB != "", attest.TDX, attest.SNP),
		only("--rtmr", len(p.rtmrs) != 0, attest.TDX),
		only("--mrconfigid", p.mrConfigID.b != nil, attest.TDX),
		only("--host-data", p.hostData.b != nil, attest.SNP),
		only("--vmpl", p.vmpl.set, attest.SNP),
		only("--tcb-status", len(p.tcbStatuses) != 0, attest.SGX),
		p.checkNoTCB(collateral),
	)
}

// checkNoTCB refuses --no-tcb beside a flag that judges the TCB.
func (p *platformFlags) checkNoTCB(collateral bool) error {
	switch {
	case !p.noTCB:
	case collateral:
		return usagef("--no-tcb contradicts --collateral, with which the TCB is judged")
	case p.minTCB != "":
		return usagef("--no-tcb contradicts --min-tcb, with which the TCB is judged")
	case len(p.tcbStatuses) != 0:
		return usagef("--no-tcb contradicts --tcb-status, which judges the TCB")
	}
	return nil
}

// checkServerTEE refuses requirements for another TEE than the one the
// backend runs in, which its evidence could not have been judged by:
// verify applies every flag it takes.
func (p *platformFlags) checkServerTEE(tee attest.TEE) error {
	if p.minTCB != "" && p.minTCBTEE() != tee {
		return fmt.Errorf("--min-tcb is a %s TCB, but the backend runs in %s", p.minTCBTEE(), tee)
	}
	if len(p.tcbStatuses) != 0 && tee != attest.SGX {
		return fmt.Errorf("--tcb-status judges SGX evidence, but the backend runs in %s", tee)
	}
	// The pins of attest.Expectations refuse evidence of another TEE.
	return nil
}

// hexFlag is a flag holding size bytes in hex.
type hexFlag struct {
	size int
	b    []byte
}

func (h *hexFlag) String() string { return hex.EncodeToString(h.b) }

func (h *hexFlag) Set(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != h.size {
		return fmt.Errorf("%q: want %d bytes of hex", s, h.size)
	}
	h.b = b
	return nil
}

// vmplFlag is the --vmpl flag: 0 to 3.
type vmplFlag struct {
	v   uint8
	set bool
}

func (f *vmplFlag) String() string {
	if !f.set {
		return ""
	}
	return strconv.Itoa(int(f.v))
}

func (f *vmplFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 8)
	if err != nil || v > 3 {
		return fmt.Errorf("%q: want a VMPL from 0 to 3", s)
	}
	f.v, f.set = uint8(v), true
	return nil
}

// tcbStatusFlag is the --tcb-status flag: SGX TCB statuses, comma-separated.
type tcbStatusFlag []string

func (f *tcbStatusFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(*f, ",")
}

func (f *tcbStatusFlag) Set(s string) error {
	for _, st := range strings.Split(s, ",") {
		switch {
		case st == "":
			return fmt.Errorf("%q: empty status", s)
		case st == attest.TCBRevoked:
			return fmt.Errorf("%s: a revoked platform is never acceptable", st)
		case !slices.Contains(attest.TCBStatuses(), st):
			return fmt.Errorf("unknown TCB status %q; want one of %s", st, strings.Join(attest.TCBStatuses()[:6], ", "))
		}
		*f = append(*f, st)
	}
	return nil
}

// parseSNPMinTCB parses "bl,tee,snp,ucode", four decimal numbers 0 to 255.
func parseSNPMinTCB(s string) (snp.TCB, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return snp.TCB{}, usagef("--min-tcb %q: want bootloader,tee,snp,microcode for snp", s)
	}
	var n [4]uint8
	for i, p := range parts {
		v, err := strconv.ParseUint(strings.TrimSpace(p), 10, 8)
		if err != nil {
			return snp.TCB{}, usagef("--min-tcb %q: component %d is not a number from 0 to 255", s, i+1)
		}
		n[i] = uint8(v)
	}
	return snp.TCB{Bootloader: n[0], TEE: n[1], SNP: n[2], Microcode: n[3]}, nil
}

// parseTDXMinTCB parses a TEE_TCB_SVN in hex.
func parseTDXMinTCB(s string) ([tdx.TEETCBSVNSize]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != tdx.TEETCBSVNSize {
		return [tdx.TEETCBSVNSize]byte{}, usagef("--min-tcb %q: want %d bytes of hex for tdx", s, tdx.TEETCBSVNSize)
	}
	return [tdx.TEETCBSVNSize]byte(b), nil
}

// rtmrsFlag is the repeatable --rtmr INDEX=HEX flag.
type rtmrsFlag map[int][]byte

func (r *rtmrsFlag) String() string {
	if r == nil {
		return ""
	}
	var s []string
	for i := range tdx.RTMRCount {
		if b, ok := (*r)[i]; ok {
			s = append(s, fmt.Sprintf("%d=%x", i, b))
		}
	}
	return strings.Join(s, ",")
}

func (r *rtmrsFlag) Set(s string) error {
	idx, val, ok := strings.Cut(s, "=")
	i, err := strconv.Atoi(idx)
	if !ok || err != nil || i < 0 || i >= tdx.RTMRCount {
		return fmt.Errorf("%q: want INDEX=HEX with INDEX 0 to %d", s, tdx.RTMRCount-1)
	}
	b, err := hex.DecodeString(val)
	if err != nil || len(b) != tdx.MeasurementSize {
		return fmt.Errorf("%q: want %d bytes of hex after %d=", s, tdx.MeasurementSize, i)
	}
	if _, dup := (*r)[i]; dup {
		return fmt.Errorf("%q: RTMR%d given twice", s, i)
	}
	if *r == nil {
		*r = make(rtmrsFlag)
	}
	(*r)[i] = b
	return nil
}

// registers returns the expected RTMRs as tdx.VerifierOptions takes them.
func (r rtmrsFlag) registers() [tdx.RTMRCount]*[tdx.MeasurementSize]byte {
	var out [tdx.RTMRCount]*[tdx.MeasurementSize]byte
	for i, b := range r {
		out[i] = (*[tdx.MeasurementSize]byte)(b)
	}
	return out
}

// backendFlags are the flags of the commands that talk to a backend: where
// it is (--server) and what to accept of it (--measurement,
// --allow-simulated).
type backendFlags struct {
	server *string
	exp    expectFlags
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	b.server = fs.String("server", "", "the backend's base `URL` (required)")
	b.exp.register(fs)
}

// client verifies the backend and returns a client for it.
func (b *backendFlags) client(ctx context.Context) (*client.Client, error) {
	return client.New(ctx, client.Config{Server: *b.server, Expectations: b.exp.expectations()})
}
