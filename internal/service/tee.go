package service

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/internal/tee/gramine"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	teesnp "github.com/conftrace/conftrace/internal/tee/snp"
	teetdx "github.com/conftrace/conftrace/internal/tee/tdx"
)

// SimKeyFile is the simulated TEE's platform key inside the data directory.
// Keeping it there keeps the sealing key, and so the sealed store, usable
// across restarts of the same binary.
const SimKeyFile = "sim-platform.key"

// ErrUnknownTEE is returned (wrapped) by CheckTEE and OpenTEE for a kind of
// TEE that conftrace does not run in.
var ErrUnknownTEE = fmt.Errorf("want %s, %s, %s or %s", attest.Sim, attest.SGX, attest.TDX, attest.SNP)

// CheckTEE reports whether conftrace can run in the kind of TEE named, so
// that a wrong name fails before anything is read or created.
func CheckTEE(kind attest.TEE) error {
	switch kind {
	case attest.Sim, attest.SGX, attest.TDX, attest.SNP:
		return nil
	}
	return fmt.Errorf("TEE %q: %w", kind, ErrUnknownTEE)
}

// OpenTEE opens the trusted execution environment of the kind named, for a
// backend whose data directory is dataDir, with no options: an SGX
// backend opened so serves evidence without collateral, which clients
// refuse (see OpenTEEWith). It fails with the reason when the hardware
// interface is absent.
func OpenTEE(kind attest.TEE, dataDir string) (tee.TEE, error) {
	return OpenTEEWith(kind, dataDir, TEEOptions{})
}

// TEEOptions are what a TEE may need beyond its kind and data directory.
type TEEOptions struct {
	// SGXCollateral provides the Intel-signed collateral that an SGX
	// backend serves with each quote (gramine.Options.Collateral), so
	// that clients can judge the platform's TCB.
	SGXCollateral sgx.CollateralSource
	// Logger hears what the TEE reports to the operator, such as a
	// collateral source that failed; nil discards.
	Logger *slog.Logger
}

// OpenTEEWith is OpenTEE with options.
func OpenTEEWith(kind attest.TEE, dataDir string, opts TEEOptions) (tee.TEE, error) {
	switch kind {
	case attest.Sim:
		return teesim.New(teesim.Options{KeyFile: filepath.Join(dataDir, SimKeyFile)})
	case attest.SGX:
		// Under Gramine-SGX; see deploy/gramine.
		return gramine.New(gramine.Options{Collateral: opts.SGXCollateral, Logger: opts.Logger})
	case attest.TDX:
		return teetdx.New(teetdx.Options{})
	case attest.SNP:
		return teesnp.New(teesnp.Options{})
	}
	return nil, CheckTEE(kind)
}

// measurement returns the measurement that t attests, when the code inside
// the TEE can know it (sim, SGX); confidential VMs cannot read their own
// launch measurement, which verifiers take from the evidence.
func measurement(t tee.TEE) []byte {
	if m, ok := t.(interface{ Measurement() []byte }); ok {
		return m.Measurement()
	}
	return nil
}
