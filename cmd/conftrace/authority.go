package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/policy"
)

// runAuthorityKeygen makes a health authority's signing key pair.
func runAuthorityKeygen(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority keygen", "authority keygen --out FILE [--name NAME]\n\n"+
		"Writes a new Ed25519 signing key to FILE (mode 0600; keep it secret) and its\n"+
		"public half to FILE.pub, which goes into the policy (conftrace policy init).")
	out := fs.String("out", "", "the private key `file` to create; the public key goes to FILE.pub (required)")
	name := fs.String("name", "", "the authority's `name` in the policy (default: FILE's base name without extension)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if !isSet(fs, "name") {
		base := filepath.Base(*out)
		*name = strings.TrimSuffix(base, filepath.Ext(base))
	}
	if err := checkAuthorityName(*name); err != nil {
		return err
	}
	key, err := authority.GenerateKey(*name)
	if err != nil {
		return err
	}
	priv, pub, err := key.MarshalPEM()
	if err != nil {
		return err
	}
	// Refuse to replace either file: overwriting a key in use would lock
	// the authority out of the policy that lists the old one.
	pubFile := *out + ".pub"
	if _, err := os.Lstat(pubFile); err == nil {
		return fmt.Errorf("%s already exists; not replacing it", pubFile)
	}
	if err := atomicfile.Create(*out, priv, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Create(pubFile, pub, 0o644); err != nil {
		os.Remove(*out)
		return err
	}
	fmt.Fprintf(cio.stdout, "authority %s: private key %s (keep it secret), public key %s (for the policy)\n", *name, *out, pubFile)
	return nil
}

// checkAuthorityName refuses names the policy refuses or that a PEM
// header cannot carry unchanged.
func checkAuthorityName(name string) error {
	if err := policy.CheckAuthorityName(name); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// runAuthorityResult signs a test result and submits it to a backend
// whose attestation the authority verified.
func runAuthorityResult(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "authority result", "authority result --server URL --key FILE --code CODE (--positive|--negative)\n"+
		"    [--test-date YYYY-MM-DD] [--symptom-onset YYYY-MM-DD] [--measurement HEX ...] [--allow-simulated]\n\n"+
		"Signs the result of the test with the code the patient showed, and submits it\n"+
		"to the backend after verifying the backend's attestation.")
	var backend backendFlags
	backend.register(fs)
	keyFile := fs.String("key", "", "the authority's private key `file`, from authority keygen (required)")
	code := fs.String("code", "", "the test `code` the patient's device shows (required)")
	positive := fs.Bool("positive", false, "the test is positive")
	negative := fs.Bool("negative", false, "the test is negative")
	testDateStr := fs.String("test-date", "", "the `date` the sample was taken, YYYY-MM-DD (default: today, UTC)")
	onsetStr := fs.String("symptom-onset", "", "the `date` symptoms began, YYYY-MM-DD, if known")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *backend.server == "":
		return usagef("--server is required")
	case *keyFile == "":
		return usagef("--key is required")
	case *code == "":
		return usagef("--code is required")
	case *positive == *negative:
		return usagef("give exactly one of --positive and --negative")
	}
	if _, err := api.NormalizeTestCode(*code); err != nil {
		return usagef("--code: %v", err)
	}
	result := api.Negative
	if *positive {
		result = api.Positive
	}
	now := time.Now()
	testDate := now.UTC()
	if *testDateStr != "" {
		d, err := time.Parse(api.DateLayout, *testDateStr)
		if err != nil {
			return usagef("--test-date %q: want YYYY-MM-DD", *testDateStr)
		}
		testDate = d
	}
	var onset time.Time
	if *onsetStr != "" {
		d, err := time.Parse(api.DateLayout, *onsetStr)
		if err != nil {
			return usagef("--symptom-onset %q: want YYYY-MM-DD", *onsetStr)
		}
		onset = d
	}

	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("reading key: %w", err)
	}
	key, err := authority.ParsePrivateKeyPEM(pem)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	c, err := backend.client(ctx)
	if err != nil {
		return err
	}
	signed, err := key.SignResult(*code, result, testDate, onset, now)
	if err != nil {
		return err
	}
	if err := c.SubmitResult(ctx, signed); err != nil {
		return refused("the result", err)
	}
	fmt.Fprintf(cio.stdout, "submitted: %s result for test %s, signed by %s\n", result, signed.TestCode, key.Name)
	return nil
}

// refused words a backend's refusal (an *api.Error) so that its code and
// message reach the user; other errors pass through.
func refused(what string, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return fmt.Errorf("the backend refused %s: %w", what, err)
	}
	return err
}

// isSet reports whether the flag called name was given.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
