package policy

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

const tcbExample = `"tcb":{"sgx_accepted":[{"status":"SWHardeningNeeded","advisories":["INTEL-SA-00615","INTEL-SA-00657"]},{"status":"ConfigurationNeeded","advisories":[]}],"tdx_min_tcb":"03000500000000000000000000000000","snp_min_tcb":{"bootloader":3,"tee":0,"snp":8,"microcode":115}}`

// withTCB returns the default policy's canonical form with tcb, a
// `"tcb":{...}` member, added at the end.
func withTCB(t *testing.T, tcb string) []byte {
	t.Helper()
	doc, err := Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return append(append(doc[:len(doc)-1:len(doc)-1], ','), append([]byte(tcb), '}')...)
}

// The defaults accept only up-to-date SGX platforms and name no TDX or SNP
// minimum, and a policy without a TCB section keeps its canonical form.
func TestDefaultTCB(t *testing.T) {
	p := Default()
	if len(p.TCB.SGXAccepted) != 0 || p.TCB.TDXMinTCB != "" || p.TCB.SNPMinTCB != nil {
		t.Fatalf("default TCB section %+v, want empty", p.TCB)
	}
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte(`"tcb"`)) {
		t.Errorf("canonical default policy has a TCB section: %s", doc)
	}
	// An empty section means the same and is written the same.
	q, err := Parse(withTCB(t, `"tcb":{"sgx_accepted":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if doc2, _ := q.Canonical(); !bytes.Equal(doc, doc2) {
		t.Errorf("empty TCB section changed the canonical form:\n%s\n%s", doc, doc2)
	}
	exp, err := TCBExpectations(doc, attest.Expectations{})
	if err != nil {
		t.Fatal(err)
	}
	if len(exp.AcceptedTCB) != 0 || exp.MinTDXTCB != nil || exp.MinSNPTCB != nil {
		t.Errorf("default policy's expectations %+v, want the zero TCB expectations", exp)
	}
}

func TestTCBRoundTrip(t *testing.T) {
	doc := withTCB(t, tcbExample)
	p, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c, doc) {
		t.Fatalf("canonical form\n%s\nwant\n%s", c, doc)
	}
}

func TestTCBRefused(t *testing.T) {
	for _, tc := range []struct {
		tcb, want string
	}{
		{`"tcb":{"sgx_accepted":[{"status":"SWHardening","advisories":[]}]}`, `unknown SGX TCB status "SWHardening"`},
		{`"tcb":{"sgx_accepted":[{"status":"UpToDate","advisories":[]}]}`, "always accepted"},
		{`"tcb":{"sgx_accepted":[{"status":"OutOfDate","advisories":["INTEL-SA-00615"]}]}`, "cannot be accepted by an attested policy"},
		{`"tcb":{"sgx_accepted":[{"status":"OutOfDateConfigurationNeeded","advisories":[]}]}`, "cannot be accepted by an attested policy"},
		{`"tcb":{"sgx_accepted":[{"status":"Revoked","advisories":[]}]}`, "cannot be accepted"},
		{`"tcb":{"sgx_accepted":[{"status":"ConfigurationNeeded","advisories":[]},{"status":"ConfigurationNeeded","advisories":[]}]}`, "listed twice"},
		{`"tcb":{"sgx_accepted":[{"status":"SWHardeningNeeded"}]}`, "advisories"},
		{`"tcb":{"sgx_accepted":[{"status":"SWHardeningNeeded","advisories":["SA-00615"]}]}`, `advisory "SA-00615"`},
		{`"tcb":{"sgx_accepted":[{"status":"SWHardeningNeeded","advisories":["intel-sa-00615"]}]}`, "INTEL-SA-"},
		{`"tcb":{"sgx_accepted":[{"status":"SWHardeningNeeded","advisories":["INTEL-SA-00615","INTEL-SA-00615"]}]}`, "listed twice"},
		{`"tcb":{"sgx_accepted":[{"status":"SWHardeningNeeded","advisories":[],"any":true}]}`, "unknown field"},
		{`"tcb":{"sgx":[]}`, "unknown field"},
		{`"tcb":{"tdx_min_tcb":"0300"}`, "32 lowercase hex digits"},
		{`"tcb":{"tdx_min_tcb":"0300050000000000000000000000000A"}`, "32 lowercase hex digits"},
		{`"tcb":{"tdx_min_tcb":"00000000000000000000000000000000"}`, "all zero"},
		{`"tcb":{"snp_min_tcb":{"bootloader":3,"tee":0,"snp":8,"microcode":256}}`, "0..255"},
		{`"tcb":{"snp_min_tcb":{"bootloader":-1,"tee":0,"snp":8,"microcode":1}}`, "0..255"},
		{`"tcb":{"snp_min_tcb":{"bootloader":0,"tee":0,"snp":0,"microcode":0}}`, "all zero"},
	} {
		_, err := Parse(withTCB(t, tc.tcb))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", tc.tcb, err, tc.want)
		}
	}
	if _, err := TCBExpectations([]byte(`{"version":1}`), attest.Expectations{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("TCBExpectations of an invalid policy: %v", err)
	}
}

// The attested policy adds the SGX statuses it accepts to the client's,
// and raises the client's TDX and SNP minimums to its own, byte by byte:
// it never lowers what the client requires.
func TestTCBExpectations(t *testing.T) {
	base := attest.Expectations{
		Measurements: [][]byte{{1}},
		AcceptedTCB:  []attest.AcceptedTCB{{Status: "OutOfDate", AnyAdvisory: true}},
		MinTDXTCB:    []byte{2, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
	}
	exp, err := TCBExpectations(withTCB(t, tcbExample), base)
	if err != nil {
		t.Fatal(err)
	}
	want := []attest.AcceptedTCB{
		{Status: "OutOfDate", AnyAdvisory: true},
		{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}},
		{Status: "ConfigurationNeeded", Advisories: []string{}},
	}
	if !slices.EqualFunc(exp.AcceptedTCB, want, func(a, b attest.AcceptedTCB) bool {
		return a.Status == b.Status && a.AnyAdvisory == b.AnyAdvisory && slices.Equal(a.Advisories, b.Advisories)
	}) {
		t.Errorf("accepted %+v, want %+v", exp.AcceptedTCB, want)
	}
	if w := []byte{3, 9, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}; !bytes.Equal(exp.MinTDXTCB, w) {
		t.Errorf("TDX minimum %v, want %v", exp.MinTDXTCB, w)
	}
	if w := []byte{3, 0, 8, 115}; !bytes.Equal(exp.MinSNPTCB, w) {
		t.Errorf("SNP minimum %v, want %v", exp.MinSNPTCB, w)
	}
	if len(exp.Measurements) != 1 || len(base.AcceptedTCB) != 1 || base.MinTDXTCB[0] != 2 {
		t.Errorf("base expectations changed or lost: %+v, %+v", base, exp)
	}
}
