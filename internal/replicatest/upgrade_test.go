package replicatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// writeRelease writes a release statement admitting build m under the
// policy of SHA-256 policySHA, with sequence seq, signed by keys in turn,
// and returns its path.
func writeRelease(t *testing.T, seq uint64, m []byte, policySHA [sha256.Size]byte, keys ...*release.Key) string {
	t.Helper()
	f, err := release.Sign(release.Statement{Sequence: seq, TEE: attest.Sim, Measurements: [][]byte{m}, PolicySHA256: policySHA}, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		if f, err = release.Cosign(f, k); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "release.txt")
	if err := os.WriteFile(path, f, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpgrade is the upgrade path between two builds, as an operator
// runs it: the running build hands the store's key-encryption key to the
// next one, which its policy's governance set signed as the successor
// (a higher sequence number, and here a changed policy too), and what
// was uploaded under the old build matches under the new one. Builds the
// set did not admit get nothing: one only one member signed, one of an
// older sequence number (a non-successor), and one no statement admits.
func TestUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds conftraced twice and runs it over PostgreSQL")
	}
	storeURL := pgtest.URL(t)
	oldBuild := buildConftraced(t)
	// Another build of the same source: only the toolchain's build ID
	// differs, which is enough for another measurement (the simulated
	// TEE measures the executable's bytes).
	newBuild := buildConftraced(t, "-ldflags=-buildid=replicatest-successor")
	if bytes.Equal(oldBuild.measurement, newBuild.measurement) {
		t.Fatalf("the two builds have one measurement, %x", oldBuild.measurement)
	}
	var gov []*release.Key
	for _, name := range []string{"health-authority", "auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		gov = append(gov, k)
	}
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	oldPol := testPolicy(lab)
	for _, k := range gov {
		oldPol.Governance = append(oldPol.Governance, policy.GovernanceMember{Name: k.Name, PublicKey: k.PublicKey()})
	}
	newPol := oldPol
	newPol.RetentionDays++
	oldPolicy, oldSHA := writePolicy(t, oldPol)
	newPolicy, newSHA := writePolicy(t, newPol)

	old := start(t, "old build", oldBuild, replicaArgs(newMachine(t), oldPolicy, storeURL, "",
		"--release", writeRelease(t, 2, oldBuild.measurement, oldSHA, gov...))...)
	pos, con := newDevices(t, 1), newDevices(t, 1)
	meet(t, con, pos)
	oldClient, err := newClient(t.Context(), old.url(), oldBuild.measurement)
	if err != nil {
		t.Fatal(err)
	}
	ph := &phones{cl: &cluster{clients: []*client.Client{oldClient}}, pol: oldPol, lab: lab, tookUpload: func(*client.Client) {}}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := ph.uploadPositive(ctx, pos[0], 0); err != nil {
		t.Fatalf("uploading under the old build: %v", err)
	}

	for _, tt := range []struct {
		name    string
		release []string
		why     string
	}{
		{"a build only one member signed", []string{"--release", writeRelease(t, 3, newBuild.measurement, newSHA, gov[0])}, "not signed by every governance member"},
		{"a build of an older release", []string{"--release", writeRelease(t, 1, newBuild.measurement, newSHA, gov...)}, "sequence 1, and 2 was accepted"},
		{"a build no release admits", nil, "no release statement"},
	} {
		out := refused(t, tt.name, newBuild, replicaArgs(newMachine(t), newPolicy, storeURL, old.url(), tt.release...)...)
		for _, want := range []string{"403", "code not admitted", tt.why} {
			if !strings.Contains(out, want) {
				t.Errorf("%s did not start, but not for the old build's refusal (%q):\n%s", tt.name, want, out)
			}
		}
	}

	next := start(t, "new build", newBuild, replicaArgs(newMachine(t), newPolicy, storeURL, old.url(),
		"--release", writeRelease(t, 3, newBuild.measurement, newSHA, gov...))...)
	waitLog(t, next, msgObtainedKEK)
	waitLog(t, old, msgRefusedKEK)
	waitLog(t, old, msgReleasedKEK)
	// The upgrade is done: the old build stops.
	old.stop(t)
	c, err := newClient(t.Context(), next.url(), newBuild.measurement)
	if err != nil {
		t.Fatal(err)
	}
	if err := awaitUploaded(ctx, c, pos[0]); err != nil {
		t.Errorf("the new build lost the upload acknowledged under the old one: %v", err)
	}
	ph = &phones{cl: &cluster{clients: []*client.Client{c}}, pol: newPol}
	if r, err := ph.check(ctx, con[0], 0); err != nil || !r.Exposed {
		t.Errorf("the contact under the new build: %s, %v; want exposed by the upload made under the old one", fmtAnswer(r), err)
	}
}
