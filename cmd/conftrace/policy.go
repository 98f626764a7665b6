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

// runPolicyInit writes a policy listing the given health authorities, with
// the default retention, risk scoring and limits.
func runPolicyInit(ctx context.Context, cio cmdIO, args []string) error {
	def := policy.Default()
	fs := newFlags(cio, "policy init", "policy init --authority NAME=FILE.pub [--authority ...] --out FILE [--retention-days N]\n"+
		"       [--matching reciprocal|one_sided|reciprocal,one_sided] [--gaen-export-key NAME=FILE.pem ...] [--force]\n\n"+
		"Writes a policy for the backend, conftraced: the health authorities whose signed\n"+
		"results the backend accepts, how uploads match, the GAEN key servers whose signed\n"+
		"exports it imports, and the default retention, risk scoring and limits. Edit the\n"+
		"JSON for other values; the backend refuses an invalid policy.")
	var auths authorityFlag
	fs.Var(&auths, "authority", "an authority's `NAME=FILE` with its public key, from authority keygen (repeatable; at least one)")
	matching := fs.String("matching", strings.Join(def.Matching, ","), "the `rules` by which uploads match, comma-separated: reciprocal (both phones\n"+
		"heard each other), one_sided (the phone heard an infected user's identifier, GAEN's rule)")
	var exportKeys nameFileFlag
	fs.Var(&exportKeys, "gaen-export-key", "a GAEN key server's export signing key, `NAME=FILE` with a PEM SubjectPublicKeyInfo\n"+
		"(ECDSA P-256); exports it signed are imported for one-sided matching (repeatable)")
	out := fs.String("out", "", "the policy `file` to write (required)")
	days := fs.Int("retention-days", def.RetentionDays, "how many `days` of uploads the backend keeps")
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
	p := def
	p.RetentionDays = *days
	p.Matching = nil
	if *matching != "" {
		p.Matching = strings.Split(*matching, ",")
	}
	for _, k := range exportKeys {
		b, err := os.ReadFile(k.file)
		if err != nil {
			return fmt.Errorf("--gaen-export-key %s: %w", k.name, err)
		}
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "PUBLIC KEY" {
			return fmt.Errorf("--gaen-export-key %s: %s holds no PEM \"PUBLIC KEY\" block", k.name, k.file)
		}
		p.GAENExportKeys = append(p.GAENExportKeys, policy.ExportKey{Name: k.name, PublicKey: block.Bytes})
	}
	for _, a := range auths {
		b, err := os.ReadFile(a.file)
		if err != nil {
			return fmt.Errorf("--authority %s: %w", a.name, err)
		}
		pemName, pub, err := authority.ParsePublicKeyPEM(b)
		if err != nil {
			return fmt.Errorf("--authority %s: %s: %w", a.name, a.file, err)
		}
		if pemName != "" && pemName != a.name {
			return fmt.Errorf("--authority %s: %s is the key of authority %q", a.name, a.file, pemName)
		}
		p.Authorities = append(p.Authorities, policy.Authority{Name: a.name, PublicKey: pub})
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
	fmt.Fprintf(cio.stdout, "wrote %s: authorities %s; matching %s; %d GAEN export keys; retention %d days; policy sha256 %x\n",
		*out, strings.Join(names, ", "), strings.Join(p.Matching, ","), len(p.GAENExportKeys), p.RetentionDays, sha256.Sum256(canon))
	return nil
}
