package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// The release commands are for the members of a deployment's governance
// set (see package release and docs/governance.md): they make their keys,
// sign release statements, and check what they or others signed.

// runReleaseKeygen makes a governance member's signing key.
func runReleaseKeygen(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "release keygen", "release keygen --name NAME --out FILE\n\n"+
		"Writes a new Ed25519 governance signing key to FILE (mode 0600; keep it\n"+
		"offline) and prints its line for the governance file, which phones pin:\n\n"+
		"  conftrace release keygen --name auditor --out auditor.key > auditor.member\n"+
		"  { echo 'conftrace governance v1'; cat *.member; } > governance.txt")
	name := fs.String("name", "", "the member's `name`, one word (required)")
	out := fs.String("out", "", "the private key `file` to create (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *name == "":
		return usagef("--name is required")
	case *out == "":
		return usagef("--out is required")
	}
	if err := release.CheckMemberName(*name); err != nil {
		return usageError{err.Error()}
	}
	k, err := release.GenerateKey(*name)
	if err != nil {
		return err
	}
	b, err := k.MarshalPEM()
	if err != nil {
		return err
	}
	// Never replace a key: its public half may be pinned already.
	if err := atomicfile.Create(*out, b, 0o600); err != nil {
		return err
	}
	fmt.Fprint(cio.stdout, k.Member().Line())
	fmt.Fprintf(cio.stderr, "governance key of %s written to %s (keep it secret); its governance line is on standard output\n", *name, *out)
	return nil
}

// statementFlags are the flags that make a new release statement.
type statementFlags struct {
	sequence     uint64
	tee          string
	measurements measurementsFlag
	rtmrs        rtmrsFlag
	signer       string
	productID    uint
	minSVN       uint
	policyFile   string
	note         string
}

func (f *statementFlags) register(fs *flag.FlagSet) {
	fs.Uint64Var(&f.sequence, "sequence", 0, "the statement's sequence `number`, above every earlier release's")
	fs.StringVar(&f.tee, "tee", "", "the `TEE` the build runs in: sim, sgx, tdx or snp")
	fs.Var(&f.measurements, "measurement", "admit the build of this measurement in `hex` (repeatable)")
	fs.Var(&f.rtmrs, "tdx-rtmr", "on tdx, admit only guests whose runtime measurement register holds this value,\n"+
		"`INDEX=HEX` (index 0 to 3, 48 bytes of hex; repeatable): the kernel, its command line\n"+
		"and the initrd with conftraced measure into RTMR 1 and 2 (deploy/tdx)")
	fs.StringVar(&f.signer, "sgx-mrsigner", "", "instead of measurements, admit SGX enclaves signed by this MRSIGNER (`hex`)")
	fs.UintVar(&f.productID, "sgx-product-id", 0, "with --sgx-mrsigner: the enclaves' ISVPRODID")
	fs.UintVar(&f.minSVN, "sgx-min-svn", 0, "with --sgx-mrsigner: the lowest ISVSVN admitted")
	fs.StringVar(&f.policyFile, "policy", "", "the policy `file` the build must enforce, as conftraced reads it")
	fs.StringVar(&f.note, "note", "", "what the release is, for people, e.g. \"conftrace v1.4.2, commit 3f2a9c1\"")
}

// statement returns the statement the flags describe.
func (f *statementFlags) statement(fs *flag.FlagSet) (release.Statement, error) {
	switch {
	case f.policyFile == "":
		return release.Statement{}, usagef("--policy is required")
	case f.productID > 0xffff || f.minSVN > 0xffff:
		return release.Statement{}, usagef("--sgx-product-id and --sgx-min-svn are 0 to 65535")
	case f.signer == "" && (isSet(fs, "sgx-product-id") || isSet(fs, "sgx-min-svn")):
		return release.Statement{}, usagef("--sgx-product-id and --sgx-min-svn go with --sgx-mrsigner")
	}
	doc, err := os.ReadFile(f.policyFile)
	if err != nil {
		return release.Statement{}, fmt.Errorf("--policy: %w", err)
	}
	p, err := policy.Parse(doc)
	if err != nil {
		return release.Statement{}, fmt.Errorf("--policy %s: %w", f.policyFile, err)
	}
	// The canonical form is what the backend serves and attests.
	canon, err := p.Canonical()
	if err != nil {
		return release.Statement{}, err
	}
	st := release.Statement{Sequence: f.sequence, TEE: attest.TEE(f.tee), Measurements: f.measurements,
		ProductID: uint16(f.productID), MinSVN: uint16(f.minSVN), PolicySHA256: sha256.Sum256(canon), Note: f.note}
	for i, r := range f.rtmrs {
		st.RTMRs[i] = r
	}
	if f.signer != "" {
		if st.Signer, err = hex.DecodeString(f.signer); err != nil {
			return release.Statement{}, usagef("--sgx-mrsigner %q: not hex", f.signer)
		}
	}
	if err := st.Validate(); err != nil {
		return release.Statement{}, usageError{err.Error()}
	}
	return st, nil
}

// runReleaseSign signs a release statement, new or made by another member.
func runReleaseSign(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "release sign", "release sign --key FILE --out FILE --in FILE\n"+
		"       conftrace release sign --key FILE --out FILE --sequence N --tee TEE\n"+
		"           (--measurement HEX ... [--tdx-rtmr I=HEX ...] | --sgx-mrsigner HEX --sgx-product-id N --sgx-min-svn N)\n"+
		"           --policy FILE [--note TEXT]\n\n"+
		"Signs a release statement with a governance key: one that another member\n"+
		"signed (--in; --out may be the same file), or a new one that admits a build and\n"+
		"the policy it must enforce. Prints what was signed. Sign only what you checked:\n"+
		"that the measurements are those you reproduced from the release's source, and\n"+
		"that the policy is the one published.")
	keyFile := fs.String("key", "", "the member's private key `file` (release keygen) (required)")
	out := fs.String("out", "", "the release `file` to write (required)")
	in := fs.String("in", "", "the release `file` to add a signature to, instead of a new statement")
	var sf statementFlags
	sf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	newStatement := false
	fs.Visit(func(f *flag.Flag) {
		newStatement = newStatement || f.Name != "key" && f.Name != "out" && f.Name != "in"
	})
	switch {
	case *keyFile == "":
		return usagef("--key is required")
	case *out == "":
		return usagef("--out is required")
	case *in != "" && newStatement:
		return usagef("--in adds a signature to a statement; the statement's flags make a new one")
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	key, err := release.ParseKey(b)
	if err != nil {
		return fmt.Errorf("--key %s: %w", *keyFile, err)
	}
	signed, err := signRelease(fs, key, *in, *out, &sf)
	if err != nil {
		return err
	}
	r, err := release.Parse(signed)
	if err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "signed as %s, in %s:\n", key.Name, *out)
	printRelease(cio.stdout, r, nil)
	return nil
}

// signRelease signs the statement of file in, or the new one sf describes,
// with key, and writes the signed file to out.
func signRelease(fs *flag.FlagSet, key *release.Key, in, out string, sf *statementFlags) ([]byte, error) {
	if in != "" {
		f, err := os.ReadFile(in)
		if err != nil {
			return nil, fmt.Errorf("--in: %w", err)
		}
		signed, err := release.Cosign(f, key)
		if err != nil {
			return nil, fmt.Errorf("--in %s: %w", in, err)
		}
		return signed, atomicfile.Write(out, signed, 0o644)
	}
	st, err := sf.statement(fs)
	if err != nil {
		return nil, err
	}
	signed, err := release.Sign(st, key)
	if err != nil {
		return nil, err
	}
	// A new statement never replaces a file: it may be one that others
	// signed.
	return signed, atomicfile.Create(out, signed, 0o644)
}

// runReleaseVerify checks that every member of a governance set signed a
// release statement, and prints it.
func runReleaseVerify(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "release verify", "release verify --governance FILE --release FILE [--policy FILE]\n\n"+
		"Checks that every member of the governance set signed the release statement\n"+
		"and, with --policy, that it admits that policy file; prints the statement.\n"+
		"Phones pinned to the set accept a backend under it only so.")
	govFile := fs.String("governance", "", "the governance `file` phones pin (required)")
	relFile := fs.String("release", "", "the release `file` (required)")
	policyFile := fs.String("policy", "", "a policy `file` the statement must admit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *govFile == "":
		return usagef("--governance is required")
	case *relFile == "":
		return usagef("--release is required")
	}
	gb, err := os.ReadFile(*govFile)
	if err != nil {
		return fmt.Errorf("--governance: %w", err)
	}
	gov, err := release.ParseGovernance(gb)
	if err != nil {
		return fmt.Errorf("--governance %s: %w", *govFile, err)
	}
	rb, err := os.ReadFile(*relFile)
	if err != nil {
		return fmt.Errorf("--release: %w", err)
	}
	r, err := gov.Verify(rb)
	if err != nil {
		return fmt.Errorf("--release %s: %w", *relFile, err)
	}
	if *policyFile != "" {
		if err := checkPolicyFile(*policyFile, r.Statement); err != nil {
			return err
		}
	}
	printRelease(cio.stdout, r, gov)
	fmt.Fprintf(cio.stdout, "signed by every member of the governance set: %s\n", memberNames(gov))
	return nil
}

// checkPolicyFile reports whether st admits the policy in file.
func checkPolicyFile(file string, st release.Statement) error {
	doc, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--policy: %w", err)
	}
	p, err := policy.Parse(doc)
	if err != nil {
		return fmt.Errorf("--policy %s: %w", file, err)
	}
	canon, err := p.Canonical()
	if err != nil {
		return err
	}
	if h := sha256.Sum256(canon); h != st.PolicySHA256 {
		return fmt.Errorf("--policy %s: %w: its canonical form's SHA-256 is %x, the statement's %x", file, release.ErrPolicyNotAdmitted, h, st.PolicySHA256)
	}
	return nil
}

// printRelease writes the statement and who signed it, by member name
// where gov knows the key.
func printRelease(w io.Writer, r *release.Release, gov *release.Governance) {
	body, err := r.Statement.Marshal()
	if err != nil { // Parse validated it already
		fmt.Fprintf(w, "(statement not printable: %v)\n", err)
	}
	w.Write(body)
	for _, s := range r.Signatures {
		fmt.Fprintf(w, "signed by %x", []byte(s.PublicKey))
		if gov != nil {
			name := "(not a member)"
			if m, ok := gov.MemberOf(s.PublicKey); ok {
				name = m.Name
			}
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintln(w)
	}
}
