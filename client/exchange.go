package client

import (
	"context"
	"fmt"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
)

// Daily is what a phone sends in its daily exchange with the backend. A
// phone makes one exchange a day, with whatever it has: its report always
// (its daily keys and sightings of the window, for the exposure check), its
// test's secret while it has a test (to poll the result), and, once its
// user consented to share a positive result's contacts, the upload flag
// (the same report is then uploaded). Every exchange has the same shape on
// the wire, so nobody who sees it can tell a phone that polls or uploads,
// an infected one, from any other.
type Daily struct {
	// Report is the phone's daily keys and sightings of the window. Of
	// each RPI the phone heard, only the prefix a report carries
	// (contactlog.RPIPrefixSize bytes) leaves the phone.
	Report contactlog.Report
	// Secret is the test's secret, to poll its result; nil for none.
	Secret []byte
	// Upload uploads Report: under Authorization if set, otherwise under
	// the result that Secret polls. Authorization is a positive result's
	// upload authorization, or the order authorization of an exposure
	// answer (api.ExposureResponse.OrderAuthorization), which uploads the
	// report as a source of the next order; either way the report is the
	// same as the check's, so that the exchange looks like any other.
	Upload        bool
	Authorization []byte
	// CertificateNonce, if not nil, asks for an exposure certificate with
	// this nonce (api.CertificateNonceSize bytes, not all zeros; see
	// NewCertificateNonce): the answer carries one if the phone was
	// exposed.
	CertificateNonce []byte
}

// Exchange makes a phone's daily exchange and returns the backend's answer:
// the exposure check, and the poll and the upload when d asks for them. A
// refused upload is in the answer's UploadError, not an error: the rest was
// answered. The report is checked before anything is sent.
func (c *Client) Exchange(ctx context.Context, d Daily) (api.ExchangeResponse, error) {
	body, err := d.Report.AppendBinary(nil)
	if err != nil {
		return api.ExchangeResponse{}, fmt.Errorf("client: %w", err)
	}
	defer clear(body)
	req := api.ExchangeRequest{Report: body, Secret: d.Secret}
	if d.Secret != nil {
		req.Flags |= api.ExchangePoll
	}
	if d.CertificateNonce != nil {
		req.Flags |= api.ExchangeCertificate
		req.CertificateNonce = d.CertificateNonce
	}
	if d.Upload {
		req.Flags |= api.ExchangeUpload
		req.Authorization = d.Authorization
		if d.Authorization == nil && d.Secret == nil {
			return api.ExchangeResponse{}, fmt.Errorf("client: an upload needs an authorization or the secret of the positive test")
		}
	}
	var resp api.ExchangeResponse
	err = c.call(ctx, api.PathExchange, req, &resp)
	return resp, err
}
