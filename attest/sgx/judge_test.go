package sgx

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// The real quote, verified as a client verifies it: without collateral it
// is refused by default expectations, since the platform's TCB was not
// judged; with its collateral the platform is SWHardeningNeeded for
// INTEL-SA-00615 and INTEL-SA-00657, refused unless that status is
// accepted together with both advisories.
func TestRealQuoteTCBJudged(t *testing.T) {
	ctx := context.Background()
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	rd := q.Report.ReportData
	v := NewVerifier(VerifierOptions{Time: realTime})

	bare := sgxEvidence(realQuote(t), nil, t)
	if _, err := attest.Verify(ctx, bare, rd, attest.Expectations{}, v); !errors.Is(err, attest.ErrTCBNotJudged) {
		t.Fatalf("no collateral, zero expectations: %v, want ErrTCBNotJudged", err)
	}
	if _, err := attest.Verify(ctx, bare, rd, attest.Expectations{AllowUnjudgedTCB: true}, v); err != nil {
		t.Fatalf("no collateral, AllowUnjudgedTCB: %v", err)
	}

	ev := sgxEvidence(realQuote(t), realCollateral(t), t)
	id, err := v.Verify(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"INTEL-SA-00615", "INTEL-SA-00657"}; id.TCBStatus != "SWHardeningNeeded" || !slices.Equal(id.TCBAdvisoryIDs, want) {
		t.Fatalf("status %q advisories %q, want SWHardeningNeeded %q", id.TCBStatus, id.TCBAdvisoryIDs, want)
	}
	var mm *attest.MismatchError
	for _, tc := range []struct {
		name   string
		accept []attest.AcceptedTCB
		field  string
	}{
		{"default", nil, "tcb_status"},
		{"one advisory", []attest.AcceptedTCB{{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615"}}}, "tcb_advisories"},
		{"other status", []attest.AcceptedTCB{{Status: "ConfigurationAndSWHardeningNeeded", Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}}, "tcb_status"},
		{"both advisories", []attest.AcceptedTCB{{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}}, ""},
	} {
		_, err := attest.Verify(ctx, ev, rd, attest.Expectations{AcceptedTCB: tc.accept}, v)
		if tc.field == "" && err != nil || tc.field != "" && (!errors.As(err, &mm) || mm.Field != tc.field) {
			t.Errorf("%s: %v, want mismatch %q", tc.name, err, tc.field)
		}
	}
}

// The advisories of the quoting enclave's TCB level count too: a QE that
// is out of date makes the status OutOfDate, with the QE's advisories.
func TestTCBAdvisoriesOfQE(t *testing.T) {
	p := newTestPKI(t, defaultExt())
	platform := platformLevelJSON{comp: [16]int{5, 5, 2, 2, 3, 1, 0, 5}, pceSVN: 11, status: "SWHardeningNeeded"}
	tcb := p.tcbInfoBody(platform)
	tcb["tcbLevels"].([]any)[0].(map[string]any)["advisoryIDs"] = []string{"INTEL-SA-00615"}
	qe := qeIdentityBody(9, "UpToDate", 8, "OutOfDate")
	qe["tcbLevels"].([]any)[1].(map[string]any)["advisoryIDs"] = []string{"INTEL-SA-00615", "INTEL-SA-00477"}
	c := p.collateral(t, tcb, qe)
	id, err := p.verifier(VerifierOptions{}).Verify(context.Background(), sgxEvidence(p.quote(t, testReport(), testQE(), nil), c, t))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"INTEL-SA-00477", "INTEL-SA-00615"}; id.TCBStatus != "OutOfDate" || !slices.Equal(id.TCBAdvisoryIDs, want) {
		t.Fatalf("status %q advisories %q, want OutOfDate %q", id.TCBStatus, id.TCBAdvisoryIDs, want)
	}
}

// A CollateralDir is read anew for every quote, and refuses collateral
// for another platform.
func TestCollateralDir(t *testing.T) {
	ctx := context.Background()
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	fmspc, err := q.FMSPC()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := CollateralDir(dir)
	if _, err := src.Collateral(ctx, fmspc); !errors.Is(err, ErrCollateral) {
		t.Fatalf("empty directory: %v, want ErrCollateral", err)
	}
	for _, n := range []string{"tcb_info_v3_fmspc_00606A000000.json", "qe_identity_v2.json", "tcb_info_v3_fmspc_00606A000000_certs.pem"} {
		if err := os.WriteFile(filepath.Join(dir, n), readTestdata(t, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := src.Collateral(ctx, fmspc)
	if err != nil {
		t.Fatalf("after the operator filled it: %v", err)
	}
	if _, err := NewVerifier(VerifierOptions{Time: realTime, Collateral: c, RequireCollateral: true}).Verify(ctx, sgxEvidence(realQuote(t), nil, t)); err != nil {
		t.Fatalf("collateral read from the directory: %v", err)
	}
	other := fmspc
	other[5] ^= 1
	if _, err := src.Collateral(ctx, other); !errors.Is(err, ErrPlatformMismatch) {
		t.Fatalf("collateral for another FMSPC: %v, want ErrPlatformMismatch", err)
	}
}

// fakePCS serves the test collateral at the Intel PCS v4 paths, with the
// issuer chains URL-encoded in the response headers as PCS sends them.
func fakePCS(t *testing.T, mutate func(w http.ResponseWriter, r *http.Request) bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	chain := url.PathEscape(string(readTestdata(t, "tcb_info_v3_fmspc_00606A000000_certs.pem")))
	tcb := readTestdata(t, "tcb_info_v3_fmspc_00606A000000.json")
	qe := readTestdata(t, "qe_identity_v2.json")
	var requests atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if mutate != nil && mutate(w, r) {
			return
		}
		switch {
		case r.Method != http.MethodGet:
			http.Error(w, "method", http.StatusMethodNotAllowed)
		case r.URL.Path == "/sgx/certification/v4/tcb" && strings.EqualFold(r.URL.Query().Get("fmspc"), "00606A000000"):
			w.Header().Set("TCB-Info-Issuer-Chain", chain)
			w.Write(tcb)
		case r.URL.Path == "/sgx/certification/v4/qe/identity":
			w.Header().Set("SGX-Enclave-Identity-Issuer-Chain", chain)
			w.Write(qe)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s, &requests
}

func TestPCS(t *testing.T) {
	ctx := context.Background()
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	fmspc, err := q.FMSPC()
	if err != nil {
		t.Fatal(err)
	}
	s, requests := fakePCS(t, nil)
	pcs := &PCS{BaseURL: s.URL + "/", Client: s.Client()}
	c, err := pcs.Collateral(ctx, fmspc)
	if err != nil {
		t.Fatal(err)
	}
	if requests.Load() != 2 {
		t.Errorf("%d requests, want 2 (TCB info, QE identity)", requests.Load())
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ev := attest.Evidence{TEE: attest.SGX, Data: realQuote(t), Collateral: b}
	id, err := NewVerifier(VerifierOptions{Time: realTime, RequireCollateral: true}).Verify(ctx, ev)
	if err != nil || id.TCBStatus != "SWHardeningNeeded" {
		t.Fatalf("collateral fetched from PCS: status %q, %v", id.TCBStatus, err)
	}

	other := fmspc
	other[0] ^= 1
	if _, err := pcs.Collateral(ctx, other); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown FMSPC: %v, want the 404", err)
	}
}

func TestPCSFailures(t *testing.T) {
	ctx := context.Background()
	fmspc := [6]byte{0x00, 0x60, 0x6A}
	for _, tc := range []struct {
		name   string
		mutate func(w http.ResponseWriter, r *http.Request) bool
		want   string
		is     error
	}{
		{"server error", func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}, "503", nil},
		{"no issuer chain", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/tcb") {
				w.Write(readTestdata(t, "tcb_info_v3_fmspc_00606A000000.json"))
				return true
			}
			return false
		}, "TCB-Info-Issuer-Chain", nil},
		{"garbage TCB info", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/tcb") {
				w.Header().Set("TCB-Info-Issuer-Chain", url.PathEscape(string(readTestdata(t, "tcb_info_v3_fmspc_00606A000000_certs.pem"))))
				w.Write([]byte(`{"tcbInfo":{}`))
				return true
			}
			return false
		}, "", ErrCollateral},
		{"too large", func(w http.ResponseWriter, r *http.Request) bool {
			w.Write(make([]byte, maxPCSResponse+1))
			return true
		}, "larger than", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := fakePCS(t, tc.mutate)
			_, err := (&PCS{BaseURL: s.URL, Client: s.Client()}).Collateral(ctx, fmspc)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("%v, want an error with %q (%v)", err, tc.want, tc.is)
			}
		})
	}
	if _, err := (&PCS{BaseURL: "ftp://pccs.example"}).Collateral(ctx, fmspc); err == nil || !strings.Contains(err.Error(), "http") {
		t.Errorf("non-HTTP base URL: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	s, _ := fakePCS(t, nil)
	if _, err := (&PCS{BaseURL: s.URL, Client: s.Client()}).Collateral(canceled, fmspc); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}

// PCS sends the issuer chain percent-encoded as RFC 3986 has it, which
// leaves the dashes of "-----BEGIN" as they are.
func TestNewCollateralPercentEncodedChain(t *testing.T) {
	chain := readTestdata(t, "tcb_info_v3_fmspc_00606A000000_certs.pem")
	header := url.PathEscape(string(chain))
	if !strings.HasPrefix(header, "-----BEGIN%20CERTIFICATE-----%0A") {
		t.Fatalf("test header begins %q", header[:40])
	}
	c, err := NewCollateral(readTestdata(t, "tcb_info_v3_fmspc_00606A000000.json"), readTestdata(t, "qe_identity_v2.json"), []byte(header))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.TCBSigningChain) != string(chain) {
		t.Fatal("percent-encoded chain not decoded to the PEM chain")
	}
}

// FuzzNewCollateral feeds NewCollateral what a PCS or an operator's
// directory could hold: it must never panic, and whatever it accepts must
// survive the wire form that evidence carries.
func FuzzNewCollateral(f *testing.F) {
	tcb, _ := os.ReadFile("testdata/tcb_info_v3_fmspc_00606A000000.json")
	qe, _ := os.ReadFile("testdata/qe_identity_v2.json")
	chain, _ := os.ReadFile("testdata/tcb_info_v3_fmspc_00606A000000_certs.pem")
	f.Add(tcb, qe, chain)
	f.Add(tcb, qe, []byte(url.PathEscape(string(chain))))
	f.Add(tcb, qe, []byte("%zz"))
	f.Add([]byte(`{"tcbInfo":{},"signature":""}`), qe, chain)
	f.Fuzz(func(t *testing.T, tcb, qe, chain []byte) {
		c, err := NewCollateral(tcb, qe, chain)
		if err != nil {
			return
		}
		b, err := c.Marshal()
		if err != nil {
			return // documents that are not UTF-8 cannot travel as JSON strings
		}
		if _, err := ParseCollateral(b); err != nil {
			t.Fatalf("accepted collateral does not parse back from its wire form: %v", err)
		}
	})
}
