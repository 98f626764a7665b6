package release_test

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/release"
)

// A health authority and an auditor govern a deployment: phones pin both
// their keys, and accept a backend only when both signed a statement that
// admits its code and policy.
func Example() {
	ha, _ := release.GenerateKey("health-authority")
	auditor, _ := release.GenerateKey("auditor")
	gov := &release.Governance{Members: []release.Member{ha.Member(), auditor.Member()}}

	// Release 1: the build the auditor reproduced, under the published
	// policy. Both sign; the operator starts the backend with the file.
	mrenclave := sha256.Sum256([]byte("conftraced v1.0.0 enclave"))
	policy := []byte(`{"version":1,"retention_days":14}`)
	st := release.Statement{
		Sequence:     1,
		TEE:          attest.SGX,
		Measurements: [][]byte{mrenclave[:]},
		PolicySHA256: sha256.Sum256(policy),
		Note:         "conftrace v1.0.0",
	}
	f, _ := release.Sign(st, ha)
	f, _ = release.Cosign(f, auditor)

	// A phone checks the attested identity and policy against it, and
	// remembers the sequence number it accepted.
	id := attest.Identity{TEE: attest.SGX, Measurement: mrenclave[:]}
	accepted, err := gov.Admit(f, id, sha256.Sum256(policy), 0)
	fmt.Println("release 1:", err, accepted.Sequence)

	// The operator cannot lengthen retention on its own: the statement
	// names the policy's hash.
	longer := []byte(`{"version":1,"retention_days":60}`)
	_, err = gov.Admit(f, id, sha256.Sum256(longer), accepted.Sequence)
	fmt.Println("policy change:", errors.Is(err, release.ErrPolicyNotAdmitted))

	// Nor run another build.
	other := sha256.Sum256([]byte("some other enclave"))
	_, err = gov.Admit(f, attest.Identity{TEE: attest.SGX, Measurement: other[:]}, sha256.Sum256(policy), accepted.Sequence)
	fmt.Println("other build:", errors.Is(err, release.ErrCodeNotAdmitted))

	// A statement only the health authority signed is not enough.
	st.Sequence = 2
	unilateral, _ := release.Sign(st, ha)
	_, err = gov.Admit(unilateral, id, sha256.Sum256(policy), accepted.Sequence)
	fmt.Println("one signature:", errors.Is(err, release.ErrMissingSignature))
	// Output:
	// release 1: <nil> 1
	// policy change: true
	// other build: true
	// one signature: true
}
