package tdx

import (
	"bytes"
	"context"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// The identity carries what a caller pins through attest.Expectations:
// the RTMRs, MRCONFIGID and the TEE_TCB_SVN as the platform's TCB.
func TestIdentityPinnableFields(t *testing.T) {
	v := realVerifier()
	ev := attest.Evidence{TEE: attest.TDX, Data: realQuote(t)}
	q, err := v.VerifyQuote(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	for i := range RTMRCount {
		if len(id.RTMRs[i]) != MeasurementSize || !bytes.Equal(id.RTMRs[i], q.RTMRs[i]) {
			t.Errorf("RTMR%d %x, want %x", i, id.RTMRs[i], q.RTMRs[i])
		}
	}
	if len(id.MRConfigID) != MeasurementSize || !bytes.Equal(id.MRConfigID, q.MRConfigID) {
		t.Errorf("MRCONFIGID %x, want %x", id.MRConfigID, q.MRConfigID)
	}
	if len(id.PlatformTCB) != TEETCBSVNSize || !bytes.Equal(id.PlatformTCB, q.TEETCBSVN) {
		t.Errorf("platform TCB %x, want the TEE_TCB_SVN %x", id.PlatformTCB, q.TEETCBSVN)
	}
	if id.HostData != nil || id.VMPL != 0 || id.TCBStatus != "" {
		t.Errorf("identity has SNP or SGX fields: %+v", id)
	}
	// The identity's fields are copies.
	id.RTMRs[0][0] ^= 1
	if again, _ := v.Verify(context.Background(), ev); bytes.Equal(again.RTMRs[0], id.RTMRs[0]) {
		t.Error("changing an identity's RTMR changed the next one's")
	}
}
