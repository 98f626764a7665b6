package sgx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
)

func sgxEvidence(quote []byte, c *Collateral, t testing.TB) attest.Evidence {
	t.Helper()
	ev := attest.Evidence{TEE: attest.SGX, Data: quote}
	if c != nil {
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ev.Collateral = b
	}
	return ev
}

func TestPinnedRoot(t *testing.T) {
	sum := sha256.Sum256(intelRoot().Raw)
	if got := hex.EncodeToString(sum[:]); got != RootCertSHA256 {
		t.Fatalf("embedded root SHA-256 %s, want %s", got, RootCertSHA256)
	}
	if intelRoot().Subject.CommonName != "Intel SGX Root CA" {
		t.Fatalf("embedded root is %q", intelRoot().Subject)
	}
}

func TestVerifyRealQuote(t *testing.T) {
	ctx := context.Background()
	want := attest.Identity{
		TEE:         attest.SGX,
		Measurement: mustHex(t, "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f"),
		Signer:      mustHex(t, "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a"),
		ProductID:   0,
		SVN:         0,
		Debug:       false,
	}
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	want.ReportData = q.Report.ReportData

	for _, tc := range []struct {
		name       string
		opts       VerifierOptions
		collateral *Collateral // carried in the evidence
		status     string
	}{
		{"without collateral", VerifierOptions{Time: realTime}, nil, ""},
		{"collateral in evidence", VerifierOptions{Time: realTime}, realCollateral(t), "SWHardeningNeeded"},
		{"collateral in options", VerifierOptions{Time: realTime, Collateral: realCollateral(t), RequireCollateral: true}, nil, "SWHardeningNeeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := NewVerifier(tc.opts).Verify(ctx, sgxEvidence(realQuote(t), tc.collateral, t))
			if err != nil {
				t.Fatal(err)
			}
			w := want
			w.TCBStatus = tc.status
			if !equalIdentity(id, w) {
				t.Fatalf("identity\n got %+v\nwant %+v", id, w)
			}
		})
	}
}

func TestVerifyRealQuoteExpectations(t *testing.T) {
	// The platform of the real quote needs software hardening (INTEL-SA-00615,
	// INTEL-SA-00657): the default expectations refuse it, and a caller
	// that accepts SWHardeningNeeded gets the identity.
	ctx := context.Background()
	v := NewVerifier(VerifierOptions{Time: realTime})
	ev := sgxEvidence(realQuote(t), realCollateral(t), t)
	q, _ := ParseQuote(ev.Data)
	rd := attest.ReportData(q.Report.ReportData)
	mrenclave := q.Report.MREnclave[:]

	_, err := attest.Verify(ctx, ev, rd, attest.Expectations{Measurements: [][]byte{mrenclave}}, v)
	var mm *attest.MismatchError
	if !errors.As(err, &mm) || mm.Field != "tcb_status" {
		t.Fatalf("default expectations: %v, want a tcb_status mismatch", err)
	}
	exp := attest.Expectations{Measurements: [][]byte{mrenclave}, AcceptedTCB: []attest.AcceptedTCB{{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}}}
	if _, err := attest.Verify(ctx, ev, rd, exp, v); err != nil {
		t.Fatalf("accepting SWHardeningNeeded: %v", err)
	}
	other := bytes.Clone(mrenclave)
	other[0] ^= 1
	exp.Measurements = [][]byte{other}
	if _, err := attest.Verify(ctx, ev, rd, exp, v); !errors.As(err, &mm) || mm.Field != "measurement" {
		t.Fatalf("other measurement: %v, want a measurement mismatch", err)
	}
}

// TestVerifyRealQuoteFlipped flips one byte in each part of the real quote
// and checks that verification fails with the error for that part.
func TestVerifyRealQuoteFlipped(t *testing.T) {
	raw := realQuote(t)
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	const (
		sigOff      = sigDataOffset
		akOff       = sigOff + ecdsaSigSize
		qeOff       = akOff + ecdsaKeySize
		qeSigOff    = qeOff + ReportBodySize
		authLenOff  = qeSigOff + ecdsaSigSize
		authDataOff = authLenOff + 2
	)
	certTypeOff := authDataOff + len(q.QEAuthData)
	certDataOff := certTypeOff + 6
	// The leaf certificate's base64 begins after the 28-byte BEGIN line.
	leafOff := certDataOff + 28 + 300

	for _, tc := range []struct {
		name string
		off  int
		want error
	}{
		{"header version", 0, ErrVersion},
		{"header key type", 2, ErrKeyType},
		{"header QE SVN", 8, ErrQuoteSignature},
		{"header PCE SVN", 10, ErrQuoteSignature},
		{"header QE vendor ID", 12, ErrQuoteSignature},
		{"header user data", 28, ErrQuoteSignature},
		{"report CPUSVN", HeaderSize, ErrQuoteSignature},
		{"report attributes (DEBUG)", HeaderSize + 48, ErrQuoteSignature},
		{"report MRENCLAVE", HeaderSize + 64, ErrQuoteSignature},
		{"report MRSIGNER", HeaderSize + 128, ErrQuoteSignature},
		{"report ISVSVN", HeaderSize + 258, ErrQuoteSignature},
		{"report data", HeaderSize + 320, ErrQuoteSignature},
		{"report data last byte", signedSize - 1, ErrQuoteSignature},
		{"signature data length", signedSize, ErrLength},
		{"quote signature r", sigOff, ErrQuoteSignature},
		{"quote signature s", sigOff + 63, ErrQuoteSignature},
		{"attestation key x", akOff, ErrQEReportData},
		{"attestation key y", akOff + 63, ErrQEReportData},
		{"QE report MRSIGNER", qeOff + 128, ErrQEReportSignature},
		{"QE report ISVSVN", qeOff + 258, ErrQEReportSignature},
		{"QE report data", qeOff + 320, ErrQEReportSignature},
		{"QE report signature", qeSigOff, ErrQEReportSignature},
		{"QE report signature s", qeSigOff + 40, ErrQEReportSignature},
		{"QE auth data", authDataOff, ErrQEReportData},
		{"QE auth data last byte", certTypeOff - 1, ErrQEReportData},
		{"certification data type", certTypeOff, ErrCertDataType},
		{"certification data length", certTypeOff + 2, ErrLength},
		{"certification data BEGIN line", certDataOff + 5, ErrPCKChain},
		{"certification data leaf certificate", leafOff, ErrPCKChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(raw)
			b[tc.off] ^= 0x01
			_, err := NewVerifier(VerifierOptions{Time: realTime}).Verify(context.Background(), attest.Evidence{TEE: attest.SGX, Data: b})
			if !errors.Is(err, tc.want) {
				t.Fatalf("flipped byte %d: %v, want %v", tc.off, err, tc.want)
			}
		})
	}
}

func TestVerifyRealQuoteCertificateValidity(t *testing.T) {
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	for _, tc := range []struct {
		name string
		at   time.Time
	}{
		{"after the PCK certificate's NotAfter", leaf.NotAfter.Add(time.Second)},
		{"before the PCK certificate's NotBefore", leaf.NotBefore.Add(-time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(VerifierOptions{Time: tc.at}).Verify(context.Background(), sgxEvidence(realQuote(t), nil, t))
			var invalid x509.CertificateInvalidError
			if !errors.Is(err, ErrPCKChain) || !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
				t.Fatalf("at %s: %v, want ErrPCKChain wrapping an x509 Expired error", tc.at, err)
			}
		})
	}
}

// TestVerifyUntrustedChain re-signs the real quote's QE report under a
// self-made certificate hierarchy, which is what a forger without Intel's
// keys can do.
func TestVerifyUntrustedChain(t *testing.T) {
	raw := realQuote(t)
	fake := newTestPKI(t, defaultExt())
	resign := func(chain []byte) []byte {
		q, err := ParseQuote(raw)
		if err != nil {
			t.Fatal(err)
		}
		q.CertData = chain
		q.QEReportSignature = signP256(t, fake.pckKey, q.QEReport.Marshal())
		return q.Marshal()
	}
	for _, tc := range []struct {
		name  string
		chain []byte
		want  error
	}{
		{"self-made root", pemChain(fake.pck, fake.pckCA, fake.root), ErrUntrustedRoot},
		{"Intel root appended to a self-made CA", pemChain(fake.pck, fake.pckCA, intelRoot()), ErrPCKChain},
		{"no root", pemChain(fake.pck, fake.pckCA), ErrPCKChain},
		{"self-made root, as a 4-certificate chain", pemChain(fake.pck, fake.pckCA, fake.root, intelRoot()), ErrPCKChain},
		{"leaf only", pemChain(fake.pck), ErrPCKChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(VerifierOptions{Time: testTime}).Verify(context.Background(), attest.Evidence{TEE: attest.SGX, Data: resign(tc.chain)})
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRealCollateralFailures(t *testing.T) {
	good := realCollateral(t)
	tamper := func(f func(c *Collateral)) *Collateral {
		c := *good
		f(&c)
		return &c
	}
	replace := func(b []byte, old, new string) []byte {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("%q not in document", old)
		}
		return bytes.Replace(b, []byte(old), []byte(new), 1)
	}
	fake := newTestPKI(t, defaultExt())
	ti, _, err := parseTCBInfo(good.TCBInfo)
	if err != nil {
		t.Fatal(err)
	}
	qi, _, err := parseQEIdentity(good.QEIdentity)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := ParseQuote(realQuote(t))
	pck, _ := parseCertChain(q.CertData)

	for _, tc := range []struct {
		name string
		c    *Collateral
		at   time.Time
		want error
	}{
		{"TCB info level lowered", tamper(func(c *Collateral) {
			c.TCBInfo = replace(c.TCBInfo, `"pcesvn":13},"tcbDate":"2022-08-10T00:00:00Z","tcbStatus":"SWHardeningNeeded"`,
				`"pcesvn":13},"tcbDate":"2022-08-10T00:00:00Z","tcbStatus":"UpToDate"`)
		}), realTime, ErrCollateralSignature},
		{"TCB info nextUpdate extended", tamper(func(c *Collateral) {
			c.TCBInfo = replace(c.TCBInfo, `"nextUpdate":"2023-01-18`, `"nextUpdate":"2033-01-18`)
		}), realTime, ErrCollateralSignature},
		{"TCB info signature", tamper(func(c *Collateral) {
			c.TCBInfo = replace(c.TCBInfo, `"signature":"00eb`, `"signature":"01eb`)
		}), realTime, ErrCollateralSignature},
		{"QE identity ISVSVN lowered", tamper(func(c *Collateral) {
			c.QEIdentity = replace(c.QEIdentity, `{"isvsvn":6}`, `{"isvsvn":9}`)
		}), realTime, ErrCollateralSignature},
		{"QE identity MRSIGNER", tamper(func(c *Collateral) {
			c.QEIdentity = replace(c.QEIdentity, `"mrsigner":"8C4F`, `"mrsigner":"8C4E`)
		}), realTime, ErrCollateralSignature},
		{"TCB info swapped for QE identity", tamper(func(c *Collateral) {
			c.TCBInfo = replace(c.QEIdentity, `"enclaveIdentity"`, `"tcbInfo"`)
		}), realTime, ErrCollateral},
		{"TCB signing chain from a self-made root", tamper(func(c *Collateral) {
			c.TCBSigningChain = pemChain(fake.tcbSigner, fake.root)
		}), realTime, ErrUntrustedRoot},
		{"TCB signing chain is the PCK chain", tamper(func(c *Collateral) {
			c.TCBSigningChain = q.CertData
		}), realTime, ErrCollateralSignature},
		{"TCB signing chain without root", tamper(func(c *Collateral) {
			certs, _ := parseCertChain(c.TCBSigningChain)
			c.TCBSigningChain = pemChain(certs[0])
		}), realTime, ErrCollateralSignature},
		{"past the TCB info's nextUpdate", good, ti.NextUpdate.Add(time.Second), ErrCollateralExpired},
		{"past the QE identity's nextUpdate", good, qi.NextUpdate.Add(time.Second), ErrCollateralExpired},
		{"before the TCB info's issueDate", good, ti.IssueDate.Add(-time.Second), ErrCollateralExpired},
		{"PCK CRL from the wrong issuer", tamper(func(c *Collateral) {
			c.PCKCRL = crl(t, fake.pckCA, fake.pckCAKey, realTime.Add(-time.Hour))
		}), realTime, ErrCollateralSignature},
		{"root CA CRL from the wrong issuer", tamper(func(c *Collateral) {
			c.RootCACRL = crl(t, fake.root, fake.rootKey, realTime.Add(-time.Hour), pck[1])
		}), realTime, ErrCollateralSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(VerifierOptions{Time: tc.at, Collateral: tc.c})
			_, err := v.Verify(context.Background(), sgxEvidence(realQuote(t), nil, t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRequireCollateral(t *testing.T) {
	v := NewVerifier(VerifierOptions{Time: realTime, RequireCollateral: true})
	_, err := v.Verify(context.Background(), sgxEvidence(realQuote(t), nil, t))
	if !errors.Is(err, ErrNoCollateral) {
		t.Fatalf("%v, want ErrNoCollateral", err)
	}
}

func TestVerifyWrongEvidence(t *testing.T) {
	v := &Verifier{}
	if v.TEE() != attest.SGX {
		t.Fatalf("TEE() = %q", v.TEE())
	}
	for _, ev := range []attest.Evidence{
		{TEE: attest.Sim, Data: realQuote(t)},
		{TEE: attest.TDX, Data: realQuote(t)},
	} {
		if _, err := v.Verify(context.Background(), ev); err == nil {
			t.Errorf("%s evidence accepted", ev.TEE)
		}
	}
	ev := attest.Evidence{TEE: attest.SGX, Data: realQuote(t), Collateral: []byte("{not json")}
	if _, err := v.Verify(context.Background(), ev); !errors.Is(err, ErrCollateral) {
		t.Errorf("malformed collateral: %v, want ErrCollateral", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := v.Verify(ctx, sgxEvidence(realQuote(t), nil, t)); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}

// TestVerifyDebugEnclave checks a debug enclave, which only a synthetic
// hierarchy can produce here: the identity says Debug, and the default
// expectations refuse it.
func TestVerifyDebugEnclave(t *testing.T) {
	ctx := context.Background()
	p := newTestPKI(t, defaultExt())
	report := testReport()
	report.Attributes.Flags |= FlagDebug
	c := p.collateral(t, p.tcbInfoBody(platformLevelJSON{comp: [16]int{}, pceSVN: 0, status: "UpToDate"}), qeIdentityBody(8, "UpToDate"))
	ev := sgxEvidence(p.quote(t, report, testQE(), nil), c, t)
	v := p.verifier(VerifierOptions{})

	id, err := v.Verify(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Debug || id.TCBStatus != "UpToDate" || !bytes.Equal(id.Measurement, report.MREnclave[:]) || id.ProductID != 7 || id.SVN != 3 {
		t.Fatalf("identity %+v, want debug, UpToDate, the synthetic MRENCLAVE, product 7, SVN 3", id)
	}
	rd := attest.ReportData(report.ReportData)
	_, err = attest.Verify(ctx, ev, rd, attest.Expectations{}, v)
	var mm *attest.MismatchError
	if !errors.As(err, &mm) || mm.Field != "debug" {
		t.Fatalf("default expectations: %v, want a debug mismatch", err)
	}
	if _, err := attest.Verify(ctx, ev, rd, attest.Expectations{AllowDebug: true}, v); err != nil {
		t.Fatalf("AllowDebug: %v", err)
	}
	// The same hierarchy is refused by a verifier that pins Intel's root.
	if _, err := NewVerifier(VerifierOptions{Time: testTime}).Verify(ctx, ev); !errors.Is(err, ErrUntrustedRoot) {
		t.Fatalf("Intel-pinned verifier: %v, want ErrUntrustedRoot", err)
	}
}

// TestTCBStatus checks how the platform and QE TCB levels decide the
// status, on a synthetic platform with component SVNs 5 5 2 2 3 1 0 5 and
// PCESVN 11, and a QE with ISVSVN 8.
func TestTCBStatus(t *testing.T) {
	comps := func(c ...int) [16]int { var a [16]int; copy(a[:], c); return a }
	platform := comps(5, 5, 2, 2, 3, 1, 0, 5)
	higher := comps(5, 5, 2, 2, 3, 1, 0, 6) // component 8 above the platform's
	level := func(c [16]int, pce int, status string) platformLevelJSON {
		return platformLevelJSON{comp: c, pceSVN: pce, status: status}
	}
	qeUpToDate := []any{8, "UpToDate", 2, "OutOfDate"}

	for _, tc := range []struct {
		name     string
		levels   []platformLevelJSON
		qeLevels []any
		want     string
		err      error
	}{
		{"exact level", []platformLevelJSON{level(platform, 11, "UpToDate")}, qeUpToDate, "UpToDate", nil},
		{"first level too high", []platformLevelJSON{level(higher, 11, "UpToDate"), level(platform, 11, "SWHardeningNeeded")}, qeUpToDate, "SWHardeningNeeded", nil},
		{"PCESVN too high", []platformLevelJSON{level(platform, 12, "UpToDate"), level(platform, 10, "OutOfDate")}, qeUpToDate, "OutOfDate", nil},
		{"first of several matching", []platformLevelJSON{level(comps(4), 5, "ConfigurationNeeded"), level(comps(), 0, "OutOfDate")}, qeUpToDate, "ConfigurationNeeded", nil},
		{"ConfigurationAndSWHardeningNeeded", []platformLevelJSON{level(platform, 11, "ConfigurationAndSWHardeningNeeded")}, qeUpToDate, "ConfigurationAndSWHardeningNeeded", nil},
		{"OutOfDateConfigurationNeeded", []platformLevelJSON{level(platform, 11, "OutOfDateConfigurationNeeded")}, qeUpToDate, "OutOfDateConfigurationNeeded", nil},
		{"platform revoked", []platformLevelJSON{level(higher, 11, "UpToDate"), level(platform, 11, "Revoked")}, qeUpToDate, "", ErrRevoked},
		{"no platform level", []platformLevelJSON{level(higher, 11, "UpToDate"), level(platform, 12, "OutOfDate")}, qeUpToDate, "", ErrTCBLevel},
		{"QE out of date, platform up to date", []platformLevelJSON{level(platform, 11, "UpToDate")}, []any{9, "UpToDate", 8, "OutOfDate"}, "OutOfDate", nil},
		{"QE out of date, platform SW hardening", []platformLevelJSON{level(platform, 11, "SWHardeningNeeded")}, []any{9, "UpToDate", 8, "OutOfDate"}, "OutOfDate", nil},
		{"QE out of date, platform configuration", []platformLevelJSON{level(platform, 11, "ConfigurationNeeded")}, []any{9, "UpToDate", 8, "OutOfDate"}, "OutOfDateConfigurationNeeded", nil},
		{"QE out of date, platform configuration and SW hardening", []platformLevelJSON{level(platform, 11, "ConfigurationAndSWHardeningNeeded")}, []any{9, "UpToDate", 8, "OutOfDate"}, "OutOfDateConfigurationNeeded", nil},
		{"QE out of date, platform out of date", []platformLevelJSON{level(platform, 11, "OutOfDate")}, []any{9, "UpToDate", 8, "OutOfDate"}, "OutOfDate", nil},
		{"QE revoked", []platformLevelJSON{level(platform, 11, "UpToDate")}, []any{9, "UpToDate", 8, "Revoked"}, "", ErrRevoked},
		{"no QE level", []platformLevelJSON{level(platform, 11, "UpToDate")}, []any{10, "UpToDate", 9, "OutOfDate"}, "", ErrTCBLevel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPKI(t, defaultExt())
			c := p.collateral(t, p.tcbInfoBody(tc.levels...), qeIdentityBody(tc.qeLevels...))
			id, err := p.verifier(VerifierOptions{}).Verify(context.Background(), sgxEvidence(p.quote(t, testReport(), testQE(), nil), c, t))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("%v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.TCBStatus != tc.want {
				t.Fatalf("TCB status %q, want %q", id.TCBStatus, tc.want)
			}
		})
	}
}

func TestSyntheticCollateralFailures(t *testing.T) {
	p := newTestPKI(t, defaultExt())
	up := platformLevelJSON{comp: [16]int{}, pceSVN: 0, status: "UpToDate"}
	with := func(m map[string]any, k string, v any) map[string]any { m[k] = v; return m }
	otherQE := testQE()
	otherQE.MRSigner[0] ^= 1
	prodQE := testQE()
	prodQE.ISVProdID = 2
	miscQE := testQE()
	miscQE.MiscSelect = 1
	attrQE := testQE()
	attrQE.Attributes.Flags |= FlagDebug // a debug quoting enclave
	xfrmQE := testQE()
	xfrmQE.Attributes.XFRM = 0xff // XFRM is masked out

	for _, tc := range []struct {
		name    string
		tcbInfo map[string]any
		qeID    map[string]any
		qe      ReportBody
		want    error
	}{
		{"other FMSPC", with(p.tcbInfoBody(up), "fmspc", "00906EA10001"), qeIdentityBody(0, "UpToDate"), testQE(), ErrPlatformMismatch},
		{"other PCE ID", with(p.tcbInfoBody(up), "pceId", "0100"), qeIdentityBody(0, "UpToDate"), testQE(), ErrPlatformMismatch},
		{"QE MRSIGNER", p.tcbInfoBody(up), qeIdentityBody(0, "UpToDate"), otherQE, ErrQEIdentity},
		{"QE ISVPRODID", p.tcbInfoBody(up), qeIdentityBody(0, "UpToDate"), prodQE, ErrQEIdentity},
		{"QE MISCSELECT", p.tcbInfoBody(up), qeIdentityBody(0, "UpToDate"), miscQE, ErrQEIdentity},
		{"QE ATTRIBUTES", p.tcbInfoBody(up), qeIdentityBody(0, "UpToDate"), attrQE, ErrQEIdentity},
		{"QE XFRM outside the mask", p.tcbInfoBody(up), qeIdentityBody(0, "UpToDate"), xfrmQE, nil},
		{"TCB info version 2", with(p.tcbInfoBody(up), "version", 2), qeIdentityBody(0, "UpToDate"), testQE(), ErrCollateral},
		{"TCB info for TDX", with(p.tcbInfoBody(up), "id", "TDX"), qeIdentityBody(0, "UpToDate"), testQE(), ErrCollateral},
		{"TCB info unknown status", p.tcbInfoBody(platformLevelJSON{status: "Fine"}), qeIdentityBody(0, "UpToDate"), testQE(), ErrCollateral},
		{"TCB info not yet issued", with(p.tcbInfoBody(up), "issueDate", testTime.Add(time.Hour).Format(time.RFC3339)), qeIdentityBody(0, "UpToDate"), testQE(), ErrCollateralExpired},
		{"QE identity for QVE", p.tcbInfoBody(up), with(qeIdentityBody(0, "UpToDate"), "id", "QVE"), testQE(), ErrCollateral},
		{"QE identity expired", p.tcbInfoBody(up), with(qeIdentityBody(0, "UpToDate"), "nextUpdate", testTime.Add(-time.Minute).Format(time.RFC3339)), testQE(), ErrCollateralExpired},
		{"QE identity short MRSIGNER", p.tcbInfoBody(up), with(qeIdentityBody(0, "UpToDate"), "mrsigner", "8C8C"), testQE(), ErrCollateral},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcbInfo := signDoc(t, p.tcbSignerKey, "tcbInfo", tc.tcbInfo)
			qeID := signDoc(t, p.tcbSignerKey, "enclaveIdentity", tc.qeID)
			// Build the collateral without NewCollateral's checks, to see
			// what the verifier makes of it.
			c := &Collateral{TCBInfo: tcbInfo, QEIdentity: qeID, TCBSigningChain: pemChain(p.tcbSigner, p.root)}
			v := p.verifier(VerifierOptions{Collateral: c})
			_, err := v.Verify(context.Background(), sgxEvidence(p.quote(t, testReport(), tc.qe, nil), nil, t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}

func TestCRL(t *testing.T) {
	p := newTestPKI(t, defaultExt())
	other := newTestPKI(t, defaultExt())
	before := testTime.Add(-time.Hour)
	for _, tc := range []struct {
		name       string
		pckCRL     []byte
		rootCACRL  []byte
		want       error
		wantStatus string
	}{
		{"PCK certificate not listed", crl(t, p.pckCA, p.pckCAKey, before, other.pck), crl(t, p.root, p.rootKey, before), nil, "UpToDate"},
		{"PCK certificate revoked", crl(t, p.pckCA, p.pckCAKey, before, other.pck, p.pck), nil, ErrRevoked, ""},
		{"PCK CA revoked", nil, crl(t, p.root, p.rootKey, before, p.pckCA), ErrRevoked, ""},
		{"PCK CRL signed by the root", crl(t, p.root, p.rootKey, before), nil, ErrCollateralSignature, ""},
		{"PCK CRL expired", crl(t, p.pckCA, p.pckCAKey, testTime.Add(-48*time.Hour)), nil, ErrCollateralExpired, ""},
		{"root CA CRL not yet valid", nil, crl(t, p.root, p.rootKey, testTime.Add(time.Hour)), ErrCollateralExpired, ""},
		{"PCK CRL garbage", []byte("garbage"), nil, ErrCollateral, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.collateral(t, p.tcbInfoBody(platformLevelJSON{status: "UpToDate"}), qeIdentityBody(0, "UpToDate"))
			c.PCKCRL, c.RootCACRL = tc.pckCRL, tc.rootCACRL
			id, err := p.verifier(VerifierOptions{Collateral: c}).Verify(context.Background(), sgxEvidence(p.quote(t, testReport(), testQE(), nil), nil, t))
			if !errors.Is(err, tc.want) || (err == nil && id.TCBStatus != tc.wantStatus) {
				t.Fatalf("%v (status %q), want %v", err, id.TCBStatus, tc.want)
			}
		})
	}
}

func TestCollateralRoundTrip(t *testing.T) {
	c := realCollateral(t)
	p := newTestPKI(t, defaultExt())
	c.PCKCRL = crl(t, p.pckCA, p.pckCAKey, testTime)
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCollateral(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.TCBInfo, c.TCBInfo) || !bytes.Equal(back.QEIdentity, c.QEIdentity) ||
		!bytes.Equal(back.TCBSigningChain, c.TCBSigningChain) || !bytes.Equal(back.PCKCRL, c.PCKCRL) || back.RootCACRL != nil {
		t.Fatal("ParseCollateral(Marshal(c)) differs from c")
	}
}

func TestNewCollateralIssuerChainHeader(t *testing.T) {
	// PCS sends the issuer chain URL-encoded in a response header.
	chain := readTestdata(t, "tcb_info_v3_fmspc_00606A000000_certs.pem")
	var enc strings.Builder
	for _, c := range chain {
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			enc.WriteByte(c)
		} else {
			enc.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	c, err := NewCollateral(readTestdata(t, "tcb_info_v3_fmspc_00606A000000.json"), readTestdata(t, "qe_identity_v2.json"), []byte(enc.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.TCBSigningChain, chain) {
		t.Fatal("URL-encoded chain not decoded to the PEM chain")
	}
	id, err := NewVerifier(VerifierOptions{Time: realTime, Collateral: c}).Verify(context.Background(), sgxEvidence(realQuote(t), nil, t))
	if err != nil || id.TCBStatus != "SWHardeningNeeded" {
		t.Fatalf("%v, status %q", err, id.TCBStatus)
	}
}

func TestNewCollateralErrors(t *testing.T) {
	ti := readTestdata(t, "tcb_info_v3_fmspc_00606A000000.json")
	qi := readTestdata(t, "qe_identity_v2.json")
	chain := readTestdata(t, "tcb_info_v3_fmspc_00606A000000_certs.pem")
	for _, tc := range []struct {
		name          string
		ti, qi, chain []byte
	}{
		{"TCB info not JSON", []byte("<html>"), qi, chain},
		{"TCB info and QE identity swapped", qi, ti, chain},
		{"QE identity empty", ti, nil, chain},
		{"chain empty", ti, qi, nil},
		{"chain bad URL encoding", ti, qi, []byte("%zz")},
		{"chain not a certificate", ti, qi, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
		{"signature not hex", ti, bytes.Replace(qi, []byte(`"signature":"6b`), []byte(`"signature":"zz`), 1), chain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewCollateral(tc.ti, tc.qi, tc.chain); !errors.Is(err, ErrCollateral) {
				t.Fatalf("%v, want ErrCollateral", err)
			}
		})
	}
}

func FuzzParseCollateral(f *testing.F) {
	real := realCollateral(f)
	b, err := real.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"tcb_info":"{}","qe_identity":"{}","tcb_signing_chain":""}`))
	f.Add([]byte(`{"pck_crl":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCollateral(b)
		if err != nil {
			return
		}
		m, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCollateral(m)
		if err != nil {
			t.Fatalf("re-parsing marshalled collateral: %v", err)
		}
		if !bytes.Equal(back.TCBInfo, c.TCBInfo) || !bytes.Equal(back.QEIdentity, c.QEIdentity) || !bytes.Equal(back.TCBSigningChain, c.TCBSigningChain) ||
			!bytes.Equal(back.PCKCRL, c.PCKCRL) || !bytes.Equal(back.RootCACRL, c.RootCACRL) {
			t.Fatal("collateral does not round-trip")
		}
	})
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalIdentity(a, b attest.Identity) bool {
	return a.TEE == b.TEE && bytes.Equal(a.Measurement, b.Measurement) && bytes.Equal(a.Signer, b.Signer) &&
		a.ProductID == b.ProductID && a.SVN == b.SVN && a.Debug == b.Debug && a.TCBStatus == b.TCBStatus && a.ReportData == b.ReportData
}
