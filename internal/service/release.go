package service

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/tee"
	"github.com/conftrace/conftrace/release"
)

// checkRelease refuses to start under a release statement that every phone
// pinned to a governance set would refuse anyway, so that an operator
// learns of the mistake at start rather than from phones: one that does not
// parse or whose signatures do not verify, one for another kind of TEE or
// another policy, and, where the TEE knows its own measurement, one that
// does not list it. Whether the right people signed is for phones to judge:
// the backend does not know whom they pin.
func checkRelease(f []byte, t tee.TEE, policyDoc []byte, log *slog.Logger) error {
	if len(f) == 0 {
		if t.TEE() != attest.Sim {
			log.Warn("no release statement (conftraced --release): phones pinned to a governance set refuse this backend")
		}
		return nil
	}
	r, err := release.Parse(f)
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	st := r.Statement
	if st.TEE != t.TEE() {
		return fmt.Errorf("service: the release statement admits %s code, and this backend runs in %s", st.TEE, t.TEE())
	}
	if h := sha256.Sum256(policyDoc); h != st.PolicySHA256 {
		return fmt.Errorf("service: the release statement admits the policy of SHA-256 %x, and this backend's canonical policy hashes to %x", st.PolicySHA256, h)
	}
	if m := measurement(t); m != nil && len(st.Measurements) > 0 && !slices.ContainsFunc(st.Measurements, func(x []byte) bool { return bytes.Equal(x, m) }) {
		return fmt.Errorf("service: the release statement does not list this backend's measurement %x", m)
	}
	log.Info("release statement", "sequence", st.Sequence, "note", st.Note, "signatures", len(r.Signatures),
		"sha256", fmt.Sprintf("%x", sha256.Sum256(f)))
	return nil
}
