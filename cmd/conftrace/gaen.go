package main

import (
	"context"
	"fmt"
	"os"
)

// maxExportFile bounds the export file read from disk; the backend takes at
// most one padded message anyway.
const maxExportFile = 1 << 20

// runGAENImport sends a GAEN key export to a backend, which imports it if
// its policy lists the key that signed it.
func runGAENImport(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "gaen import", "gaen import --server URL --export FILE.zip [--measurement HEX ...] [--allow-simulated]\n\n"+
		"Verifies the backend's attestation, then sends it a GAEN key export (the zip a\n"+
		"GAEN key server publishes, export.bin and export.sig) through Oblivious HTTP.\n"+
		"The backend checks the signature against the GAEN export keys of its attested\n"+
		"policy and matches the export's daily keys one-sided until retention drops\n"+
		"them. Prints what it imported and what it skipped.")
	var backend backendFlags
	backend.register(fs)
	export := fs.String("export", "", "the export `file` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *backend.server == "":
		return usagef("--server is required")
	case *export == "":
		return usagef("--export is required")
	}
	st, err := os.Stat(*export)
	if err != nil {
		return fmt.Errorf("--export: %w", err)
	}
	if st.Size() > maxExportFile {
		return fmt.Errorf("--export %s: %d bytes; the backend takes exports of at most %d bytes (split the batch)", *export, st.Size(), maxExportFile)
	}
	zip, err := os.ReadFile(*export)
	if err != nil {
		return fmt.Errorf("--export: %w", err)
	}
	c, err := backend.client(ctx)
	if err != nil {
		return err
	}
	resp, err := c.ImportGAEN(ctx, zip)
	if err != nil {
		return refused("the export", err)
	}
	if resp.Duplicate {
		fmt.Fprintf(cio.stdout, "already imported: export of %s signed by %s\n", resp.Region, resp.SignedBy)
		return nil
	}
	fmt.Fprintf(cio.stdout, "imported %d keys, skipped %d (outside the retention window or invalid): export of %s signed by %s\n",
		resp.Imported, resp.Skipped, resp.Region, resp.SignedBy)
	return nil
}
