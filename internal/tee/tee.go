// Package tee defines what the backend needs from the trusted execution
// environment it runs in. Its subpackages are the environments: sim (a
// software stand-in), gramine (Intel SGX under Gramine), tdx and snp
// (confidential VMs). Everything under internal/tee runs inside the TEE.
package tee

import (
	"context"

	"github.com/conftrace/conftrace/attest"
)

// SealingKeySize is the size of the key returned by SealingKey.
const SealingKeySize = 32

// TEE is the environment the backend runs in.
type TEE interface {
	attest.Attester
	// SealingKey returns a key that only the same measured code on the same
	// platform can obtain. The backend wraps its storage key-encryption key
	// with it. Environments that have no such key (confidential VMs without
	// a derived-key interface) return an error that says how the key must
	// reach them instead.
	SealingKey(ctx context.Context) ([SealingKeySize]byte, error)
}
