package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/conftrace/conftrace/attest"
)

const governanceHeader = "conftrace governance v1"

// maxMembers bounds a governance set.
const maxMembers = 16

// memberName is what a member's name may be: it is one word of a line.
var memberName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Member is one party whose signature every release needs.
type Member struct {
	Name      string
	PublicKey ed25519.PublicKey
}

// Governance is the set of members who must all sign a release statement
// for a phone pinned to it to accept the release.
type Governance struct {
	Members []Member
}

// CheckMemberName reports whether name can name a member: 1 to 64 letters,
// digits, dots, underscores and hyphens, beginning with a letter or digit.
func CheckMemberName(name string) error {
	if !memberName.MatchString(name) {
		return fmt.Errorf("release: member name %q: want 1 to 64 letters, digits, '.', '_' or '-', beginning with a letter or digit", name)
	}
	return nil
}

// Validate reports the first rule the set breaks.
func (g *Governance) Validate() error {
	if len(g.Members) == 0 || len(g.Members) > maxMembers {
		return fmt.Errorf("release: a governance set of %d members, want 1 to %d", len(g.Members), maxMembers)
	}
	for i, m := range g.Members {
		if err := CheckMemberName(m.Name); err != nil {
			return err
		}
		if len(m.PublicKey) != ed25519.PublicKeySize {
			return fmt.Errorf("release: member %s: a key of %d bytes, want %d", m.Name, len(m.PublicKey), ed25519.PublicKeySize)
		}
		for _, o := range g.Members[:i] {
			if o.Name == m.Name || o.PublicKey.Equal(m.PublicKey) {
				return fmt.Errorf("release: member %s listed twice (by name or by key)", m.Name)
			}
		}
	}
	return nil
}

// Marshal returns the governance file, members in their order.
func (g *Governance) Marshal() ([]byte, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	b := []byte(governanceHeader + "\n")
	for _, m := range g.Members {
		b = append(b, m.Line()...)
	}
	return b, nil
}

// Line returns the member's line of a governance file.
func (m Member) Line() string { return fmt.Sprintf("member %s %x\n", m.Name, []byte(m.PublicKey)) }

// ParseGovernance reads a governance file strictly.
func ParseGovernance(f []byte) (*Governance, error) {
	if len(f) > MaxFileSize {
		return nil, fmt.Errorf("release: governance file of %d bytes, at most %d", len(f), MaxFileSize)
	}
	lines, err := splitLines(f)
	if err != nil {
		return nil, err
	}
	if lines[0] != governanceHeader {
		return nil, fmt.Errorf("release: a governance file must begin with %q", governanceHeader)
	}
	g := &Governance{}
	for _, l := range lines[1:] {
		parts := strings.Split(l, " ")
		if len(parts) != 3 || parts[0] != "member" {
			return nil, fmt.Errorf("release: governance line %q: want \"member NAME KEY\"", l)
		}
		pub, err := hex.DecodeString(parts[2])
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("release: member %s: key %q: want %d bytes of hex", parts[1], parts[2], ed25519.PublicKeySize)
		}
		g.Members = append(g.Members, Member{Name: parts[1], PublicKey: pub})
	}
	b, err := g.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b, f) {
		return nil, errors.New("release: governance file not in canonical form (lowercase hex)")
	}
	return g, nil
}

// Fingerprint returns the SHA-256 of the governance file, by which people
// can compare the sets their phones pinned.
func (g *Governance) Fingerprint() ([sha256.Size]byte, error) {
	b, err := g.Marshal()
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// Verify parses the release file f and checks that every member signed it.
// An error for a missing signature wraps [ErrMissingSignature] and names
// the members whose signature is missing; signatures of others are
// ignored. An empty f fails with [ErrNoRelease].
func (g *Governance) Verify(f []byte) (*Release, error) {
	if len(f) == 0 {
		return nil, ErrNoRelease
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	r, err := Parse(f)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, m := range g.Members {
		if !r.SignedBy(m.PublicKey) {
			missing = append(missing, m.Name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: no signature by %s", ErrMissingSignature, strings.Join(missing, ", "))
	}
	return r, nil
}

// Admit is the rule by which a phone (and, between backends, a key
// release) accepts code: it reports whether the release file f, signed by
// every member, admits code of identity id enforcing the policy whose
// canonical form hashes to policySHA256, with a sequence number of at least
// minSequence, the highest the caller accepted before. It returns the
// statement, whose Sequence the caller remembers. Errors wrap
// [ErrNoRelease], [ErrMissingSignature], [ErrRollback],
// [ErrCodeNotAdmitted] or [ErrPolicyNotAdmitted], or report a malformed
// file.
func (g *Governance) Admit(f []byte, id attest.Identity, policySHA256 [sha256.Size]byte, minSequence uint64) (*Statement, error) {
	r, err := g.Verify(f)
	if err != nil {
		return nil, err
	}
	st := r.Statement
	if st.Sequence < minSequence {
		return nil, fmt.Errorf("%w: sequence %d, and %d was accepted before", ErrRollback, st.Sequence, minSequence)
	}
	if err := st.Admits(id, policySHA256); err != nil {
		return nil, err
	}
	return &st, nil
}

// MemberOf returns the member of g whose key is pub.
func (g *Governance) MemberOf(pub ed25519.PublicKey) (Member, bool) {
	i := slices.IndexFunc(g.Members, func(m Member) bool { return m.PublicKey.Equal(pub) })
	if i < 0 {
		return Member{}, false
	}
	return g.Members[i], true
}
