package transparency

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// releaseView is the release statement the bundle carries, as the page
// shows it.
type releaseView struct {
	Sequence     uint64
	TEE          attest.TEE
	Measurements []string
	// Signer, ProductID and MinSVN admit SGX code by signer instead.
	Signer            string
	ProductID, MinSVN uint16
	PolicySHA256      string
	Note              string
	// Signers are the keys that signed it, named where the policy's
	// governance set names them.
	Signers []namedKey
	// Admits is empty if the statement admits the attested code and
	// policy, or says why not; it is empty too when the code could not
	// be read (Known is then false).
	Admits string
	Known  bool
}

// newReleaseView reads the bundle's release statement f, whose signatures
// release.Parse checks, and whether it admits id (if known) and the
// policy whose canonical form is doc.
func newReleaseView(f []byte, id *attest.Identity, doc []byte, p *policy.Policy) (*releaseView, error) {
	r, err := release.Parse(f)
	if err != nil {
		return nil, err
	}
	st := r.Statement
	v := &releaseView{
		Sequence: st.Sequence, TEE: st.TEE, Note: st.Note,
		Signer: hex.EncodeToString(st.Signer), ProductID: st.ProductID, MinSVN: st.MinSVN,
		PolicySHA256: hex.EncodeToString(st.PolicySHA256[:]),
	}
	for _, m := range st.Measurements {
		v.Measurements = append(v.Measurements, hex.EncodeToString(m))
	}
	for _, s := range r.Signatures {
		name := ""
		if p != nil {
			for _, m := range p.Governance {
				if bytes.Equal(s.PublicKey, m.PublicKey) {
					name = m.Name
				}
			}
		}
		v.Signers = append(v.Signers, namedKey{name, hex.EncodeToString(s.PublicKey)})
	}
	if id != nil {
		v.Known = true
		if err := st.Admits(*id, sha256.Sum256(doc)); err != nil {
			v.Admits = strings.TrimPrefix(err.Error(), "release: ")
		}
	}
	return v, nil
}
