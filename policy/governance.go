package policy

import (
	"crypto/ed25519"

	"github.com/conftrace/conftrace/release"
)

// GovernanceMember is one member of the governance set that a backend
// trusts to admit its successors (see [Policy.Governance]).
type GovernanceMember struct {
	// Name names the member, as in a governance file.
	Name string `json:"name"`
	// PublicKey is the member's Ed25519 public key.
	PublicKey []byte `json:"public_key"`
}

// GovernanceSet returns the policy's governance set, or nil when it names
// none. The policy must be valid.
func (p Policy) GovernanceSet() (*release.Governance, error) {
	if len(p.Governance) == 0 {
		return nil, nil
	}
	g := &release.Governance{}
	for _, m := range p.Governance {
		g.Members = append(g.Members, release.Member{Name: m.Name, PublicKey: ed25519.PublicKey(m.PublicKey)})
	}
	if err := g.Validate(); err != nil {
		return nil, invalidf("governance: %v", err)
	}
	return g, nil
}

// validateGovernance checks the governance set as a governance file would
// be checked: valid names, Ed25519 keys, no member twice.
func (p Policy) validateGovernance() error {
	_, err := p.GovernanceSet()
	return err
}
