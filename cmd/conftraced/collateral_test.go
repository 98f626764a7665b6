package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/internal/cmdtest"
)

// On SGX the backend serves Intel's collateral with its quotes, from a
// directory the operator keeps fresh or from a PCCS; clients refuse SGX
// evidence without it, so starting without either is a usage error, as is
// collateral for a TEE that has none.
func TestCollateralFlags(t *testing.T) {
	pol, _ := writePolicy(t)
	data := filepath.Join(t.TempDir(), "data")
	collateral := "../../attest/sgx/testdata"
	rel := filepath.Join(t.TempDir(), "release.txt") // read before the TEE opens, checked after
	if err := os.WriteFile(rel, []byte("conftrace release v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--data", data, "--policy", pol, "--release", rel}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	for _, tc := range []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"sgx without collateral", with("--tee", "sgx"), "--tee sgx needs --collateral DIR or --pccs URL", true},
		{"both sources", with("--tee", "sgx", "--collateral", collateral, "--pccs", "https://pccs.example"), "not both", true},
		{"collateral for sim", with("--collateral", collateral), "--collateral and --pccs apply to --tee sgx only", true},
		{"pccs for tdx", with("--tee", "tdx", "--pccs", "https://pccs.example"), "--tee sgx only", true},
		{"pccs not a URL", with("--tee", "sgx", "--pccs", "pccs.example"), "http or https URL", true},
		{"collateral not a directory", with("--tee", "sgx", "--collateral", filepath.Join(t.TempDir(), "none")), "collateral directory", true},
		// This machine is no SGX enclave: with collateral configured, that
		// is what conftraced says.
		{"sgx absent", with("--tee", "sgx", "--collateral", collateral), "not running under Gramine-SGX", false},
		{"sgx absent, pccs", with("--tee", "sgx", "--pccs", "https://pccs.example:8081/"), "not running under Gramine-SGX", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log cmdtest.SyncBuffer
			err := run(t.Context(), tc.args, &log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			var ue usageError
			if errors.As(err, &ue) != tc.usage {
				t.Errorf("usage error (exit 2) = %t, want %t", !tc.usage, tc.usage)
			}
		})
	}
}
