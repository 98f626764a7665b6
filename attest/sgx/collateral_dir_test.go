package sgx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// Collateral saved next to a quote judges its TCB, as the same collateral
// given in memory does.
func TestReadCollateralDir(t *testing.T) {
	c, err := ReadCollateralDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewVerifier(VerifierOptions{Time: realTime, Collateral: c, RequireCollateral: true}).
		Verify(context.Background(), attest.Evidence{TEE: attest.SGX, Data: realQuote(t)})
	if err != nil {
		t.Fatal(err)
	}
	if id.TCBStatus != "SWHardeningNeeded" {
		t.Errorf("TCB status %q with the collateral read from testdata, want SWHardeningNeeded", id.TCBStatus)
	}
}

func TestReadCollateralDirErrors(t *testing.T) {
	withFiles := func(names ...string) string {
		dir := t.TempDir()
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join("testdata", n))
			if err != nil {
				b = []byte("not collateral")
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(n)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	const tcb, qe, pem = "tcb_info_v3_fmspc_00606A000000.json", "qe_identity_v2.json", "tcb_info_v3_fmspc_00606A000000_certs.pem"
	for _, c := range []struct {
		name, dir, want string
	}{
		{"empty", t.TempDir(), "want exactly one tcb_info*.json file, found 0"},
		{"no chain", withFiles(tcb, qe), "want exactly one *.pem file, found 0"},
		{"two chains", withFiles(tcb, qe, pem, "other.pem"), "want exactly one *.pem file, found 2"},
		{"garbage TCB info", withFiles("tcb_info_bad.json", qe, pem), "malformed collateral"},
		{"missing directory", filepath.Join(t.TempDir(), "none"), "found 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadCollateralDir(c.dir)
			if !errors.Is(err, ErrCollateral) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadCollateralDir = %v, want ErrCollateral saying %q", err, c.want)
			}
		})
	}
}
