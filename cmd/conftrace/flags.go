package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
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

// measurementsHex returns the measurements as device.Config stores them.
func (e *expectFlags) measurementsHex() []string {
	var s []string
	for _, m := range e.measurements {
		s = append(s, hex.EncodeToString(m))
	}
	return s
}

// platformFlags are the TEE-specific requirements of verify --evidence:
// a minimum TCB (TDX, SNP) and expected RTMRs (TDX).
type platformFlags struct {
	minTCB string
	rtmrs  rtmrsFlag
}

func (p *platformFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.minTCB, "min-tcb", "", "with --evidence: the lowest acceptable platform `TCB`; for snp the decimal\n"+
		"security patch levels \"bootloader,tee,snp,microcode\", for tdx the 16-byte TEE_TCB_SVN\n"+
		"in hex (compared byte by byte)")
	fs.Var(&p.rtmrs, "rtmr", "with --evidence --tee tdx: the expected value of a runtime measurement\n"+
		"register as `INDEX=HEX` (index 0 to 3, 48 bytes of hex; repeatable)")
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
