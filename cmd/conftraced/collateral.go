package main

import (
	"net/url"
	"os"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
)

// collateralSource returns where an SGX backend takes the Intel-signed
// collateral it serves with each quote: the directory dir, which the
// operator keeps fresh and conftraced reads at every attestation, or the
// PCCS (or Intel PCS) at pccs. Exactly one is required on SGX, since
// clients refuse SGX evidence without collateral; neither may be given for
// another TEE.
func collateralSource(tee attest.TEE, dir, pccs string) (sgx.CollateralSource, error) {
	switch {
	case tee != attest.SGX && (dir != "" || pccs != ""):
		return nil, usagef("--collateral and --pccs apply to --tee sgx only")
	case tee != attest.SGX:
		return nil, nil
	case dir != "" && pccs != "":
		return nil, usagef("--collateral or --pccs, not both")
	case dir != "":
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, usagef("--collateral %s: not a collateral directory", dir)
		}
		return sgx.CollateralDir(dir), nil
	case pccs != "":
		if u, err := url.Parse(pccs); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("--pccs %q: want an http or https URL", pccs)
		}
		return &sgx.PCS{BaseURL: pccs}, nil
	}
	return nil, usagef("--tee sgx needs --collateral DIR or --pccs URL: phones refuse SGX evidence without Intel's collateral")
}
