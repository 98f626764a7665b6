package transparency

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/policy"
)

// The real SGX quote and collateral of attest/sgx's test data, valid at
// realTime; see its README.
var (
	sgxTestdata = filepath.Join("..", "..", "attest", "sgx", "testdata")
	realTime    = time.Unix(1671497404, 0)
)

func realSGXEvidence(t *testing.T) attest.Evidence {
	t.Helper()
	quote, err := os.ReadFile(filepath.Join(sgxTestdata, "quote_v3_ecdsa_p256_pck_chain.bin"))
	if err != nil {
		t.Fatal(err)
	}
	col, err := sgx.ReadCollateralDir(sgxTestdata)
	if err != nil {
		t.Fatal(err)
	}
	c, err := col.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return attest.Evidence{TEE: attest.SGX, Data: quote, Collateral: c}
}

// pageOf returns the text of a page whose evidence proved id, under a
// policy with the TCB rules given: the page of a real TEE, which a test
// cannot attest.
func pageOf(t *testing.T, id attest.Identity, rules policy.TCB) string {
	t.Helper()
	p := policy.Default()
	p.TCB = rules
	pg := New(testBundle(t, canonical(t, p), nil, teesim.Options{Measurement: testMeasurement}), nil, nil)
	pg.view.TEE, pg.view.TEEName, pg.view.Simulated = id.TEE, teeNames[id.TEE], false
	pg.view.Identity = newIdentityView(id)
	tcb := judgeTCB(id, rules)
	pg.view.TCB = &tcb
	_, page := get(t, pg, "backend.example")
	return text(page)
}

func TestSGXStatusFromCollateral(t *testing.T) {
	ev := realSGXEvidence(t)
	vs, err := verifiers(realTime)
	if err != nil {
		t.Fatal(err)
	}
	var id attest.Identity
	for _, v := range vs {
		if v.TEE() == attest.SGX {
			if id, err = v.Verify(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	if id.TCBStatus != attest.TCBSWHardeningNeeded {
		t.Fatalf("TCB status %q, want %s", id.TCBStatus, attest.TCBSWHardeningNeeded)
	}
	stated := "Intel's collateral, served with the evidence, gives this platform the TCB status SWHardeningNeeded, naming the advisories INTEL-SA-00615, INTEL-SA-00657"
	both := policy.TCB{SGXAccepted: []policy.SGXAccepted{{Status: attest.TCBSWHardeningNeeded, Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}}}
	txt := pageOf(t, id, both)
	mustContain(t, txt, stated,
		"The policy accepts UpToDate platforms, and SWHardeningNeeded ones whose advisories are among INTEL-SA-00615, INTEL-SA-00657.",
		"By the policy's rules, this platform is accepted.",
		"Measurement (MRENCLAVE) 68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f",
		"Signer (MRSIGNER) 9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a",
		"--tee sgx --measurement 68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f",
	)
	mustNotContain(t, txt, "Simulated", "--allow-simulated")

	one := policy.TCB{SGXAccepted: []policy.SGXAccepted{{Status: attest.TCBSWHardeningNeeded, Advisories: []string{"INTEL-SA-00615"}}}}
	mustContain(t, pageOf(t, id, one), stated, "By the policy's rules, this platform is refused: tcb_advisories mismatch:", "of which INTEL-SA-00657 not accepted")
	mustContain(t, pageOf(t, id, policy.TCB{}), "The policy accepts UpToDate platforms.", "this platform is refused: tcb_status")

	id.TCBStatus, id.TCBAdvisoryIDs = "", nil
	txt = pageOf(t, id, both)
	mustContain(t, txt, "The evidence came without Intel's collateral, so nothing states its TCB status.",
		"Not judged: SGX evidence without collateral. Phones refuse such evidence.")
	mustNotContain(t, txt, "this platform is accepted", "gives this platform the TCB status")
}

func TestRealQuoteOfAnotherBundle(t *testing.T) {
	// A genuine quote whose report data is not this bundle's binding is
	// refused, after it verified: the page never shows another
	// backend's identity as this one's.
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	b.Evidence = realSGXEvidence(t)
	b.IssuedAt, b.NotAfter = realTime.Unix(), realTime.Add(time.Hour).Unix()
	_, err := readEvidence(t.Context(), b)
	if err == nil || !strings.Contains(err.Error(), "does not bind") {
		t.Fatalf("real quote of another bundle: %v, want a binding error", err)
	}
}

func TestTDXAndSNPAgainstMinimums(t *testing.T) {
	tdxTCB := []byte{3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	tdx := attest.Identity{TEE: attest.TDX, Measurement: make([]byte, 48), PlatformTCB: tdxTCB, RTMRs: [4][]byte{make([]byte, 48), make([]byte, 48), make([]byte, 48), make([]byte, 48)}}
	for _, tc := range []struct {
		min  string
		want []string
	}{
		{"03000500000000000000000000000000", []string{"The policy's minimum: 03000500000000000000000000000000", "By the policy's rules, this platform is accepted."}},
		{"03000600000000000000000000000000", []string{"By the policy's rules, this platform is refused: platform_tcb mismatch:", "byte 2 5 < 6"}},
		{"", []string{"The policy names no minimum TCB for this TEE.", "Not judged: tdx evidence, and no minimum tdx TCB to compare its TCB with. Phones refuse such evidence."}},
	} {
		txt := pageOf(t, tdx, policy.TCB{TDXMinTCB: tc.min})
		mustContain(t, txt, append(tc.want, "Intel TDX confidential VM", "The evidence states the platform's TCB: 03000500000000000000000000000000", "RTMR 3")...)
	}
	snp := attest.Identity{TEE: attest.SNP, Measurement: make([]byte, 48), PlatformTCB: []byte{3, 0, 8, 115}}
	txt := pageOf(t, snp, policy.TCB{SNPMinTCB: &policy.SNPTCB{Bootloader: 3, SNP: 8, Microcode: 116}})
	mustContain(t, txt, "AMD SEV-SNP confidential VM",
		"The evidence states the platform's TCB: bootloader 3, TEE 0, SNP firmware 8, microcode 115",
		"The policy's minimum: bootloader 3, TEE 0, SNP firmware 8, microcode 116",
		"this platform is refused: platform_tcb mismatch:", "microcode 115 < 116",
		"deploy/snp/README.md")
}
