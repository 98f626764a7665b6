package sgx

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// A CollateralSource provides the current collateral for a platform, named
// by its FMSPC ([Quote.FMSPC]). A backend asks it for each quote it
// serves, so that clients receive collateral with the evidence
// ([attest.Evidence.Collateral]) and can judge the platform's TCB without
// fetching anything themselves. [CollateralDir] and [PCS] implement it.
type CollateralSource interface {
	Collateral(ctx context.Context, fmspc [6]byte) (*Collateral, error)
}

// CollateralDir is a directory of collateral that the operator keeps
// fresh, in the layout [ReadCollateralDir] reads. It is read anew on every
// call, so that a refreshed directory is served from the next attestation
// on. It implements [CollateralSource].
type CollateralDir string

// Collateral reads the directory and checks that its TCB info is for
// fmspc; collateral for another platform fails with [ErrPlatformMismatch].
func (d CollateralDir) Collateral(ctx context.Context, fmspc [6]byte) (*Collateral, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := ReadCollateralDir(string(d))
	if err != nil {
		return nil, err
	}
	if err := c.checkFMSPC(fmspc); err != nil {
		return nil, fmt.Errorf("%w (directory %s)", err, string(d))
	}
	return c, nil
}

// checkFMSPC reports whether c's TCB info is for the platform fmspc.
func (c *Collateral) checkFMSPC(fmspc [6]byte) error {
	ti, _, err := parseTCBInfo(c.TCBInfo)
	if err != nil {
		return err
	}
	if ti.fmspc != fmspc {
		return fmt.Errorf("%w: TCB info for FMSPC %x, want %x", ErrPlatformMismatch, ti.fmspc[:], fmspc[:])
	}
	return nil
}

// PCS fetches collateral from the Intel Provisioning Certification Service
// or a caching service (PCCS) that serves its version 4 API:
//
//	GET <BaseURL>/sgx/certification/v4/tcb?fmspc=<FMSPC>
//	GET <BaseURL>/sgx/certification/v4/qe/identity
//
// with the signing chain in the TCB-Info-Issuer-Chain and
// SGX-Enclave-Identity-Issuer-Chain response headers. It fetches on every
// call and keeps nothing, so what it returns is as fresh as the service's.
// The documents are signed by Intel: a PCCS, or anyone between it and the
// backend, can withhold or replay them but not forge them. Revocation lists
// are not fetched. It implements [CollateralSource].
type PCS struct {
	// BaseURL is the service's root, such as
	// "https://api.trustedservices.intel.com" or a PCCS's
	// "https://pccs.example.org:8081".
	BaseURL string
	// Client sends the requests; nil means a client with a 30-second
	// timeout.
	Client *http.Client
}

// maxPCSResponse bounds a PCS response body: TCB info is a few kilobytes.
const maxPCSResponse = 1 << 20

// Collateral fetches the TCB info for fmspc and the QE identity, and
// checks that they are well formed, for that platform and signed with one
// chain (their signatures are checked by the [Verifier], at its time).
func (p *PCS) Collateral(ctx context.Context, fmspc [6]byte) (*Collateral, error) {
	base, err := url.Parse(p.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("sgx: PCS URL %q: want an http or https URL", p.BaseURL)
	}
	tcbURL := base.JoinPath("sgx/certification/v4/tcb")
	tcbURL.RawQuery = url.Values{"fmspc": {strings.ToUpper(hex.EncodeToString(fmspc[:]))}}.Encode()
	tcb, tcbChain, err := p.get(ctx, tcbURL.String(), "TCB-Info-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	qe, qeChain, err := p.get(ctx, base.JoinPath("sgx/certification/v4/qe/identity").String(), "SGX-Enclave-Identity-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	c, err := NewCollateral(tcb, qe, []byte(tcbChain))
	if err != nil {
		return nil, fmt.Errorf("sgx: collateral from %s: %w", p.BaseURL, err)
	}
	qc, err := NewCollateral(tcb, qe, []byte(qeChain))
	if err != nil {
		return nil, fmt.Errorf("sgx: QE identity issuer chain from %s: %w", p.BaseURL, err)
	}
	// One Collateral carries one chain for both documents.
	if !sameLeaf(c.TCBSigningChain, qc.TCBSigningChain) {
		return nil, fmt.Errorf("%w: %s signs the TCB info and the QE identity with different certificates", ErrCollateral, p.BaseURL)
	}
	if err := c.checkFMSPC(fmspc); err != nil {
		return nil, fmt.Errorf("%w (from %s)", err, p.BaseURL)
	}
	return c, nil
}

// get fetches url and returns its body and the response header named
// chainHeader, which must be present.
func (p *PCS) get(ctx context.Context, url, chainHeader string) (body []byte, chain string, err error) {
	hc := p.Client
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", fmt.Errorf("sgx: PCS request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("sgx: fetching collateral: %w", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxPCSResponse+1))
	switch {
	case err != nil:
		return nil, "", fmt.Errorf("sgx: fetching %s: %w", url, err)
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("sgx: %s answered %s", url, resp.Status)
	case len(body) > maxPCSResponse:
		return nil, "", fmt.Errorf("sgx: %s: response larger than %d bytes", url, maxPCSResponse)
	}
	chain = resp.Header.Get(chainHeader)
	if chain == "" {
		return nil, "", fmt.Errorf("%w: %s answered without a %s header", ErrCollateral, url, chainHeader)
	}
	return body, chain, nil
}

// sameLeaf reports whether two PEM chains begin with the same certificate.
func sameLeaf(a, b []byte) bool {
	ca, errA := parseCertChain(a)
	cb, errB := parseCertChain(b)
	return errA == nil && errB == nil && bytes.Equal(ca[0].Raw, cb[0].Raw)
}
