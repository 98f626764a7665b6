package tdx

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	attesttdx "github.com/conftrace/conftrace/attest/tdx"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
)

func realQuote(t *testing.T) ([]byte, attest.ReportData) {
	t.Helper()
	q, err := os.ReadFile("testdata/tdx_prod_quote_SPR_E4.dat")
	if err != nil {
		t.Fatal(err)
	}
	var rd attest.ReportData
	copy(rd[:], q[quoteReportDataStart:quoteReportDataEnd])
	return q, rd
}

// fakeTSM is a configfs-tsm whose report subsystem answers like a TDX
// guest's: outblob is quote(inblob).
func fakeTSM(provider string, quote func(inblob []byte) ([]byte, error)) configfsi.Client {
	sub := &faketsm.ReportSubsystem{
		MakeEntry: func() *faketsm.ReportEntry {
			return &faketsm.ReportEntry{
				InAttrs: map[string]*faketsm.ReportAttributeState{
					"inblob":    {},
					"privlevel": {},
				},
				// faketsm answers reads of a fresh entry from this cache only.
				ROAttrs: map[string][]byte{"provider": []byte(provider + "\n")},
			}
		},
		CheckInAttr: func(_ *faketsm.ReportEntry, attr string, contents []byte) error {
			if attr == "inblob" && len(contents) > 64 {
				return syscall.EINVAL
			}
			return nil
		},
		ReadAttr: func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
			switch attr {
			case "provider":
				return []byte(provider + "\n"), nil
			case "outblob":
				return quote(e.InAttrs["inblob"].Value)
			case "auxblob":
				return nil, nil
			}
			return nil, os.ErrNotExist
		},
		Random: rand.Reader,
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}

func TestAttestRoundTrip(t *testing.T) {
	quote, rd := realQuote(t)
	tsm := fakeTSM("tdx_guest", func(inblob []byte) ([]byte, error) {
		if !bytes.Equal(inblob, rd[:]) {
			return nil, syscall.EINVAL
		}
		return quote, nil
	})
	g, err := New(Options{TSM: tsm})
	if err != nil {
		t.Fatal(err)
	}
	if g.TEE() != attest.TDX {
		t.Errorf("TEE() = %q", g.TEE())
	}
	ev, err := g.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.TEE != attest.TDX || !bytes.Equal(ev.Data, quote) {
		t.Fatalf("evidence %q with %d bytes, want the quote", ev.TEE, len(ev.Data))
	}
	// What the attester produces is what the verifier accepts.
	v := attesttdx.NewVerifier(attesttdx.VerifierOptions{Now: func() time.Time { return time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC) }})
	// The quote's own TEE_TCB_SVN as the minimum: the TCB is judged.
	q, err := v.VerifyQuote(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	id, err := attest.Verify(context.Background(), ev, rd, attest.Expectations{MinTDXTCB: q.TEETCBSVN}, v)
	if err != nil {
		t.Fatal(err)
	}
	if id.ReportData != rd || id.Debug {
		t.Errorf("identity %+v", id)
	}

	// Concurrent attestations use separate report entries.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := g.Attest(context.Background(), rd); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestAttestFailures(t *testing.T) {
	quote, rd := realQuote(t)
	var other attest.ReportData
	other[0] = 1
	tests := []struct {
		name  string
		quote func([]byte) ([]byte, error)
		rd    attest.ReportData
		want  string
	}{
		{"quote for other report data", func([]byte) ([]byte, error) { return quote, nil }, other, "does not carry the requested report data"},
		{"short quote", func([]byte) ([]byte, error) { return quote[:100], nil }, rd, "does not carry the requested report data"},
		{"kernel error", func([]byte) ([]byte, error) { return nil, syscall.EIO }, rd, "configfs-tsm report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(Options{TSM: fakeTSM("tdx_guest", tt.quote)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = g.Attest(context.Background(), tt.rd)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Attest: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAttestCanceled(t *testing.T) {
	_, rd := realQuote(t)
	release := make(chan struct{})
	g, err := New(Options{TSM: fakeTSM("tdx_guest", func([]byte) ([]byte, error) {
		<-release
		return nil, syscall.EIO
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := g.Attest(ctx, rd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Attest with a stuck quoting service: %v, want deadline exceeded", err)
	}
}

func TestNewOtherProvider(t *testing.T) {
	_, err := New(Options{TSM: fakeTSM("sev_guest", nil)})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"sev_guest"`) {
		t.Errorf("New on an SEV-SNP guest: %v, want ErrNotFound naming the provider", err)
	}
}

func TestNewAbsent(t *testing.T) {
	root := t.TempDir()
	_, err := New(Options{ConfigfsRoot: root})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("New without configfs-tsm: %v", err)
	}
	want := "tee/tdx: TDX guest interface not found: no configfs-tsm at " + filepath.Join(root, "report") + " (not running in a TDX confidential VM?)"
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
	if _, err := os.Stat(filepath.Join(DefaultConfigfsRoot, "report")); err == nil {
		t.Skip("this machine has configfs-tsm")
	}
	_, err = New(Options{})
	want = "tee/tdx: TDX guest interface not found: no configfs-tsm at /sys/kernel/config/tsm/report (not running in a TDX confidential VM?)"
	if err == nil || err.Error() != want {
		t.Errorf("New on a machine without TDX: %v\nwant %s", err, want)
	}
}

// A directory that looks like configfs-tsm but is not one (no kernel behind
// it) fails cleanly, and the report entry New created is removed again.
func TestNewPlainDirectory(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "report"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{ConfigfsRoot: root})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("New on a plain directory: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "report"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("report entries left behind: %v", entries)
	}
}

func TestSealingKey(t *testing.T) {
	g, err := New(Options{TSM: fakeTSM("tdx_guest", nil)})
	if err != nil {
		t.Fatal(err)
	}
	k, err := g.SealingKey(context.Background())
	if !errors.Is(err, ErrNoSealingKey) {
		t.Fatalf("SealingKey: %v, want ErrNoSealingKey", err)
	}
	if k != ([32]byte{}) {
		t.Error("SealingKey returned key material with its error")
	}
	for _, want := range []string{"attested peer", "key broker", "recovery key", "docs/key-release.md"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
