package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/policy"
)

// nameFileFlag is a repeatable NAME=FILE flag (--authority,
// --gaen-export-key).
type nameFileFlag = authorityFlag

// authorityFlag is a repeatable --authority NAME=FILE flag.
type authorityFlag []struct{ name, file string }

func (a *authorityFlag) String() string {
	if a == nil {
		return ""
	}
	s := make([]string, len(*a))
	for i, x := range *a {
		s[i] = x.name + "=" + x.file
	}
	return strings.Join(s, " ")
}

func (a *authorityFlag) Set(s string) error {
	name, file, ok := strings.Cut(s, "=")
	if !ok || name == "" || file == "" {
		return fmt.Errorf("%q: want NAME=FILE", s)
	}
	*a = append(*a, struct{ name, file string }{name, file})
	return nil
}

// sgxAcceptFlag is a repeatable --sgx-accept STATUS=ADVISORY,... flag.
type sgxAcceptFlag []policy.SGXAccepted

func (a *sgxAcceptFlag) String() string {
	if a == nil {
		return ""
	}
	s := make([]string, len(*a))
	for i, x := range *a {
		s[i] = x.Status + "=" + strings.Join(x.Advisories, ",")
	}
	return strings.Join(s, " ")
}

func (a *sgxAcceptFlag) Set(s string) error {
	status, list, ok := strings.Cut(s, "=")
	if !ok || status == "" {
		return fmt.Errorf("%q: want STATUS=ADVISORY,... (an empty list accepts only TCB levels that name no advisory)", s)
	}
	advisories := []string{}
	if list != "" {
		advisories = strings.Split(list, ",")
	}
	*a = append(*a, policy.SGXAccepted{Status: status, Advisories: advisories})
	return nil
}

// runPolicyInit writes a policy listing the given health authorities, with
// the default retention, risk scoring and limits.
func runPolicyInit(ctx context.Context, cio cmdIO, args []string) error {
	def := policy.Default()
	fs := newFlags(cio, "policy init", "policy init --authority NAME=FILE.pub [--authority ...] --out FILE [--retention-days N]\n"+
		"       [--matching reciprocal|one_sided|reciprocal,one_sided] [--gaen-export-key NAME=FILE.pem ...]\n"+
		"       [--sgx-accept STATUS=ADVISORY,... ...] [--tdx-min-tcb HEX] [--snp-min-tcb B,T,S,M] [--max-order N]\n"+
		"       [--statistics-epsilon E] [--certificate-days N] [--certificate-single-use] [--operator-contact TEXT] [--force]\n\n"+
		"Writes a policy for the backend, conftraced: the health authorities whose signed\n"+
		"results the backend accepts, how uploads match, the GAEN key servers whose signed\n"+
		"exports it imports, the platforms phones accept, and the default retention, risk\n"+
		"scoring and limits. Edit the JSON for other values; the backend refuses an\n"+
		"invalid policy. Phones refuse a TDX or SNP backend whose policy names no minimum TCB.")
	var auths authorityFlag
	fs.Var(&auths, "authority", "an authority's `NAME=FILE` with its public key, from authority keygen (repeatable; at least one)")
	matching := fs.String("matching", strings.Join(def.Matching, ","), "the `rules` by which uploads match, comma-separated: reciprocal (both phones\n"+
		"heard each other), one_sided (the phone heard an infected user's identifier, GAEN's rule)")
	var exportKeys nameFileFlag
	fs.Var(&exportKeys, "gaen-export-key", "a GAEN key server's export signing key, `NAME=FILE` with a PEM SubjectPublicKeyInfo\n"+
		"(ECDSA P-256); exports it signed are imported for one-sided matching (repeatable)")
	var sgxAccept sgxAcceptFlag
	fs.Var(&sgxAccept, "sgx-accept", "accept SGX platforms of this TCB status when every advisory their TCB level names is\n"+
		"listed, `STATUS=ADVISORY,...` (SWHardeningNeeded, ConfigurationNeeded or\n"+
		"ConfigurationAndSWHardeningNeeded; repeatable); UpToDate is always accepted")
	tdxMin := fs.String("tdx-min-tcb", "", "the lowest TEE_TCB_SVN phones accept from a TDX platform, 32 hex `digits`")
	snpMin := fs.String("snp-min-tcb", "", "the lowest reported TCB phones accept from an SEV-SNP platform,\n"+
		"`bootloader,tee,snp,microcode` (decimal)")
	out := fs.String("out", "", "the policy `file` to write (required)")
	days := fs.Int("retention-days", def.RetentionDays, "how many `days` of uploads the backend keeps")
	maxOrder := fs.Int("max-order", 1, "n-order notifications: the highest `order` of exposure phones are told, 1 to 3; above 1,\n"+
		"exposed phones may warn their own contacts, order k needing 2^(k-1) times order 1's weighted minutes")
	statsEpsilon := fs.String("statistics-epsilon", "", "release public statistics with discrete Laplace noise of this ε per count per day\n"+
		"(`EPSILON`, such as 0.5; docs/statistics.md); none are released without it")
	certDays := fs.Int("certificate-days", 0, "exposure certificates are valid for `N` days from their issue (default: the retention)")
	certOnce := fs.Bool("certificate-single-use", false, "ask verifiers to accept each exposure certificate once (docs/certificates.md)")
	contact := fs.String("operator-contact", "", "how the public reaches the backend's operator (`TEXT`, such as an address),\n"+
		"shown on the transparency page")
	force := fs.Bool("force", false, "replace an existing --out file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if len(auths) == 0 {
		return usagef("give at least one --authority NAME=FILE: without one no test can be declared positive")
	}
	if *maxOrder < 1 || *maxOrder > policy.MaxOrderLimit {
		return usagef("--max-order %d: want 1 to %d", *maxOrder, policy.MaxOrderLimit)
	}
	p := def
	p.RetentionDays = *days
	if *statsEpsilon != "" {
		m, err := policy.ParseEpsilon(*statsEpsilon)
		if err != nil {
			return usagef("--statistics-epsilon: %v", err)
		}
		p.Statistics = policy.NewStatistics(m)
	}
	p.Orders = policy.DefaultOrders(*maxOrder, p.Risk.MinimumWeightedMinutes)
	if *certDays != 0 || *certOnce {
		p.Certificates = policy.Certificates{SingleUse: *certOnce, ValidDays: *certDays}
		if *certDays == 0 {
			p.Certificates.ValidDays = p.RetentionDays
		}
	}
	p.OperatorContact = *contact
	p.TCB.SGXAccepted = sgxAccept
	p.TCB.TDXMinTCB = strings.ToLower(*tdxMin)
	if *snpMin != "" {
		m, err := parseSNPMinTCB(*snpMin)
		if err != nil {
			return usagef("--snp-min-tcb %q: want bootloader,tee,snp,microcode, each a decimal number from 0 to 255", *snpMin)
		}
		p.TCB.SNPMinTCB = &policy.SNPTCB{Bootloader: int(m.Bootloader), TEE: int(m.TEE), SNP: int(m.SNP), Microcode: int(m.Microcode)}
	}
	p.Matching = nil
	if *matching != "" {
		p.Matching = strings.Split(*matching, ",")
	}
	var err error
	if p.GAENExportKeys, err = readExportKeys(exportKeys); err != nil {
		return err
	}
	if p.Authorities, err = readAuthorities(auths); err != nil {
		return err
	}
	// Every field comes from the flags, so an invalid policy is a usage error.
	canon, err := p.Canonical()
	if err != nil {
		return usagef("%v", err)
	}
	doc, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding policy: %w", err)
	}
	doc = append(doc, '\n')
	if *force {
		err = atomicfile.Write(*out, doc, 0o644)
	} else {
		err = atomicfile.Create(*out, doc, 0o644)
		if err != nil {
			err = fmt.Errorf("%w (use --force to replace it)", err)
		}
	}
	if err != nil {
		return err
	}
	names := make([]string, len(p.Authorities))
	for i, a := range p.Authorities {
		names[i] = a.Name
	}
	orders := ""
	if p.MaxOrder() > 1 {
		orders = fmt.Sprintf("; notifies up to order %d", p.MaxOrder())
	}
	fmt.Fprintf(cio.stdout, "wrote %s: authorities %s; matching %s%s; %d GAEN export keys; retention %d days; %s; policy sha256 %x\n",
		*out, strings.Join(names, ", "), strings.Join(p.Matching, ","), orders, len(p.GAENExportKeys), p.RetentionDays, platformsAccepted(p.TCB), sha256.Sum256(canon))
	return nil
}

// platformsAccepted says in a few words which platforms phones accept
// under t.
func platformsAccepted(t policy.TCB) string {
	s := []string{"SGX UpToDate"}
	for _, a := range t.SGXAccepted {
		s = append(s, fmt.Sprintf("SGX %s with %d advisories", a.Status, len(a.Advisories)))
	}
	if t.TDXMinTCB != "" {
		s = append(s, "TDX from "+t.TDXMinTCB)
	}
	if m := t.SNPMinTCB; m != nil {
		s = append(s, fmt.Sprintf("SNP from %d,%d,%d,%d", m.Bootloader, m.TEE, m.SNP, m.Microcode))
	}
	return "accepts " + strings.Join(s, ", ")
}

// readExportKeys reads the --gaen-export-key files: PEM SubjectPublicKeyInfo,
// which policy validation then checks is ECDSA P-256.
func readExportKeys(keys nameFileFlag) ([]policy.ExportKey, error) {
	var out []policy.ExportKey
	for _, k := range keys {
		b, err := os.ReadFile(k.file)
		if err != nil {
			return nil, fmt.Errorf("--gaen-export-key %s: %w", k.name, err)
		}
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("--gaen-export-key %s: %s holds no PEM \"PUBLIC KEY\" block", k.name, k.file)
		}
		out = append(out, policy.ExportKey{Name: k.name, PublicKey: block.Bytes})
	}
	return out, nil
}

// readAuthorities reads the --authority files, refusing a key whose PEM
// names another authority.
func readAuthorities(auths authorityFlag) ([]policy.Authority, error) {
	var out []policy.Authority
	for _, a := range auths {
		b, err := os.ReadFile(a.file)
		if err != nil {
			return nil, fmt.Errorf("--authority %s: %w", a.name, err)
		}
		pemName, pub, err := authority.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("--authority %s: %s: %w", a.name, a.file, err)
		}
		if pemName != "" && pemName != a.name {
			return nil, fmt.Errorf("--authority %s: %s is the key of authority %q", a.name, a.file, pemName)
		}
		out = append(out, policy.Authority{Name: a.name, PublicKey: pub})
	}
	return out, nil
}
