package snp

import (
	"bytes"
	"context"
	"testing"
)

// The identity carries what a caller pins through attest.Expectations:
// HOST_DATA, the VMPL and the reported TCB's four security patch levels as
// the platform's TCB.
func TestIdentityPinnableFields(t *testing.T) {
	v := realVerifier(t)
	ev := realEvidence(t)
	r, err := v.VerifyReport(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.HostData) != 32 || !bytes.Equal(id.HostData, r.HostData) {
		t.Errorf("HOST_DATA %x, want %x", id.HostData, r.HostData)
	}
	if uint32(id.VMPL) != r.VMPL {
		t.Errorf("VMPL %d, want %d", id.VMPL, r.VMPL)
	}
	tcb := r.TCB()
	if want := []byte{tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode}; !bytes.Equal(id.PlatformTCB, want) {
		t.Errorf("platform TCB %v, want %v (%v)", id.PlatformTCB, want, tcb)
	}
	if id.MRConfigID != nil || id.RTMRs[0] != nil || id.TCBStatus != "" {
		t.Errorf("identity has TDX or SGX fields: %+v", id)
	}
}
