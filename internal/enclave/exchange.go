package enclave

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
)

// Exchange answers a phone's daily exchange: its exposure check and, when
// it carries them, the poll of its test's result and the upload of its
// report. Whatever it carries, it reads nothing from the store and writes
// nothing to it (an upload waits in the journal for the clock), and its
// answer has one size, so that the host can tell an infected phone's
// exchange from any other neither by its size, its timing nor the store.
//
// The upload is authorized by the authorization it carries or, when it has
// none, by the result it polls: a phone whose user consented sends its
// secret and the upload flag together. An upload refused (already made,
// expired) is said in the answer; the check and the poll are still
// answered.
func (e *Enclave) Exchange(ctx context.Context, r api.ExchangeRequest) (api.ExchangeResponse, error) {
	defer clear(r.Secret)
	defer clear(r.Authorization)
	if r.Flags&api.ExchangePoll != 0 && len(r.Secret) != api.TestSecretSize {
		return api.ExchangeResponse{}, api.Errorf(api.CodeMalformed, "secret of %d bytes, want %d", len(r.Secret), api.TestSecretSize)
	}
	rep, err := e.parseReport(r.Report, e.policy.Limits.MaxCheckSightings)
	clear(r.Report)
	if err != nil {
		return api.ExchangeResponse{}, err
	}
	defer rep.Clear()
	w := e.reportWindow(e.now())
	if err := e.checkReport(rep, w, false); err != nil {
		return api.ExchangeResponse{}, err
	}
	ts := teks(rep)
	allowed := e.checks.Allow(e.now(), ts...)
	clear(ts)
	if !allowed {
		return api.ExchangeResponse{}, api.Errorf(api.CodeRateLimited, "a daily key of this report was checked %d times today already", e.checks.Limit())
	}
	own, err := ownRPIs(rep)
	if err != nil {
		return api.ExchangeResponse{}, api.Errorf(api.CodeMalformed, "report: %v", err)
	}
	defer clear(own)
	resp := api.ExchangeResponse{Exposure: e.exposure(rep, own, w)}
	if err := e.certifyExchange(&resp, r.Flags, r.CertificateNonce); err != nil {
		return api.ExchangeResponse{}, err
	}

	var prep *preparedUpload
	var preperr error
	var grant *orderGrant // the order authorization it uploads under (order.go)
	if r.Flags&api.ExchangeUpload != 0 {
		// Before the lock: an upload's work but its index insert.
		prep, grant, preperr = e.prepareExchangeUpload(rep, r.Authorization)
		defer prep.clear()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var polled []byte
	if r.Flags&api.ExchangePoll != 0 {
		polled = e.recordKey(tableResults, api.TestCode(r.Secret))
	}
	if r.Flags&api.ExchangeUpload != 0 {
		var up api.UploadResponse
		var err error
		if grant != nil {
			up, err = e.orderUploadLocked(grant, prep, preperr)
		} else {
			up, err = e.exchangeUploadLocked(r.Authorization, polled, prep, preperr)
		}
		var ae *api.Error
		switch {
		case errors.As(err, &ae):
			resp.UploadError = ae
		case err != nil:
			return api.ExchangeResponse{}, err
		default:
			resp.Upload = &up
			if grant != nil {
				withdrawOrder(&resp.Exposure, grant)
			}
		}
	}
	if polled != nil {
		// After the upload, so that the poll says it was made.
		poll := e.pollLocked(polled)
		resp.Result = &poll
	}
	e.stats.exchanged(rep.Keys, resp)
	return resp, nil
}

// exchangeUploadLocked takes the prepared upload p (or refuses it with
// perr, the error preparing it) under authorization, or, when there is
// none, under the result the exchange polls. What is wrong with the
// authorization is said before what is wrong with the report. The caller
// holds e.mu.
func (e *Enclave) exchangeUploadLocked(authorization, polled []byte, p *preparedUpload, perr error) (api.UploadResponse, error) {
	now := e.now()
	var key []byte
	var res *result
	switch {
	case authorization != nil:
		var err error
		if key, res, err = e.checkAuthorization(authorization, now); err != nil {
			return api.UploadResponse{}, err
		}
	case polled != nil:
		var ok bool
		res, ok = e.results[string(polled)]
		switch {
		case !ok || res.Result != api.Positive:
			return api.UploadResponse{}, api.Errorf(api.CodeNotAuthorized, "no positive result for the polled test: nothing authorizes an upload")
		case res.uploaded:
			return api.UploadResponse{}, api.Errorf(api.CodeAlreadyUsed, "the upload of this test's result was already made")
		}
		key = polled
	default:
		return api.UploadResponse{}, api.Errorf(api.CodeNotAuthorized, "an upload needs an authorization or the poll of a positive result")
	}
	if perr != nil {
		return api.UploadResponse{}, perr
	}
	return e.uploadLocked(key, res, p)
}

// maxErrorMessage bounds the message of a refusal the bound below allows
// for; refusals of the backend's own making are shorter.
const maxErrorMessage = 400

// AnswerBound returns the encoded size of the largest answer the policy
// allows, to any request: an exchange with every part at its largest, a
// trace check, or a refusal. The HTTP layer pads every answer to it, so
// that no answer's size tells what was asked or what the answer is.
func (e *Enclave) AnswerBound() int {
	p := e.policy
	longest := api.ExchangeResponse{
		Exposure: e.largestExposureAnswer(),
		Result: &api.PollResultResponse{Result: api.Negative, UploadAuthorization: make([]byte, api.AuthorizationSize),
			ExpiresAt: math.MaxInt64, Uploaded: true, UploadPending: true},
		Upload:      &api.UploadResponse{Sightings: p.Limits.MaxUploadSightings, Keys: contactlog.MaxKeys, Durable: true, DurableBy: math.MaxInt64},
		UploadError: &api.Error{Code: api.CodeUnknownAuthority, Message: strings.Repeat("x", maxErrorMessage)},
		Certificate: largestCertificate(),
	}
	b, _ := json.Marshal(longest)
	refusal, _ := json.Marshal(api.Error{Code: api.CodeUnknownAuthority, Message: strings.Repeat("x", maxErrorMessage)})
	return max(len(b)+64, e.TraceResponseBound(), len(refusal)+64)
}

// teks returns the TEKs of a report's keys.
func teks(r contactlog.Report) []enid.TEK {
	ts := make([]enid.TEK, len(r.Keys))
	for i, k := range r.Keys {
		ts[i] = k.TEK
	}
	return ts
}
