package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/ohttp"
)

// fakeBackend answers every flow. It decodes reports as the enclave does,
// so that a body the server passes on undecoded is refused, and records
// what reached it.
type fakeBackend struct {
	// bound is what AnswerBound says; 0 means defaultBound.
	bound     int
	mu        sync.Mutex
	exchanges []api.ExchangeRequest
	imports   [][]byte
}

// defaultBound fits every answer of the fake, and pads to the 3 KiB class.
const defaultBound = 3000

var fakeLimits = contactlog.Limits{MaxKeys: 30, MaxSightings: 100}

func (*fakeBackend) SubmitResult(context.Context, api.SignedResult) (api.SubmitResultResponse, error) {
	return api.SubmitResultResponse{Stored: true}, nil
}

// Exchange answers as the enclave would for a positive, not yet uploaded
// result: the poll hands out an authorization, an upload is taken when
// something authorizes it and refused in the answer otherwise.
func (f *fakeBackend) Exchange(_ context.Context, r api.ExchangeRequest) (api.ExchangeResponse, error) {
	f.mu.Lock()
	f.exchanges = append(f.exchanges, api.ExchangeRequest{Flags: r.Flags, Secret: bytes.Clone(r.Secret), Authorization: bytes.Clone(r.Authorization),
		CertificateNonce: bytes.Clone(r.CertificateNonce), Report: bytes.Clone(r.Report)})
	f.mu.Unlock()
	rep, err := contactlog.ParseReport(r.Report, fakeLimits)
	if err != nil {
		return api.ExchangeResponse{}, api.Errorf(api.CodeMalformed, "report: %v", err)
	}
	resp := api.ExchangeResponse{Exposure: api.ExposureResponse{Exposed: true, LastExposure: "2024-03-09", Reciprocal: true}}
	if r.Flags&api.ExchangePoll != 0 {
		resp.Result = &api.PollResultResponse{Result: api.Positive, UploadAuthorization: bytes.Repeat([]byte{7}, api.AuthorizationSize), ExpiresAt: 1_700_000_000}
	}
	if r.Flags&api.ExchangeCertificate != 0 {
		// Not a certificate: the server does not look into it.
		resp.Certificate = slices.Concat([]byte("certificate for "), r.CertificateNonce)
	}
	if r.Flags&api.ExchangeUpload != 0 {
		if r.Authorization == nil && r.Secret == nil {
			resp.UploadError = api.Errorf(api.CodeNotAuthorized, "nothing authorizes this upload")
		} else {
			resp.Upload = &api.UploadResponse{Sightings: len(rep.Sightings), Keys: len(rep.Keys), DurableBy: 1_700_000_000}
		}
	}
	return resp, nil
}

// errDisk is an internal failure, whose details must not reach the client.
var errDisk = errors.New("disk on fire")

func (*fakeBackend) SubmitTrace(_ context.Context, t api.SignedTrace) (api.SubmitTraceResponse, error) {
	if t.Authority == "fail" {
		return api.SubmitTraceResponse{}, errDisk
	}
	return api.SubmitTraceResponse{Points: 1}, nil
}

func (*fakeBackend) CheckTrace(context.Context, api.TraceCheckRequest) (api.TraceCheckResponse, error) {
	return api.TraceCheckResponse{Exposed: true, LastExposure: "2024-03-09"}, nil
}

func (f *fakeBackend) ImportGAEN(_ context.Context, r api.ImportRequest) (api.ImportResponse, error) {
	f.mu.Lock()
	f.imports = append(f.imports, bytes.Clone(r.Export))
	f.mu.Unlock()
	if !bytes.HasPrefix(r.Export, []byte("PK")) {
		return api.ImportResponse{}, api.Errorf(api.CodeMalformed, "not a zip file")
	}
	return api.ImportResponse{Region: "XX", Imported: 1}, nil
}

func (f *fakeBackend) AnswerBound() int {
	if f.bound == 0 {
		return defaultBound
	}
	return f.bound
}

// received returns the exchanges that reached the backend.
func (f *fakeBackend) received() []api.ExchangeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.exchanges)
}

func newTestServer(t testing.TB) (*Server, *fakeBackend) {
	return newTestServerBound(t, 0)
}

// newTestServerBound returns a server whose backend bounds its answers at
// bound (0: defaultBound).
func newTestServerBound(t testing.TB, bound int) (*Server, *fakeBackend) {
	key, err := ohttp.GenerateKey(1, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBackend{bound: bound}
	s, err := New(Config{Backend: fb, Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	return s, fb
}

// innerRequest returns an inner request as clients send it: dated (the
// gateway refuses undated requests as possible replays) and, when
// contentType is set, typed.
func innerRequest(method, path, contentType string, body []byte) *bhttp.Request {
	h := []bhttp.Field{{Name: "date", Value: time.Now().UTC().Format(http.TimeFormat)}}
	if contentType != "" {
		h = append(h, bhttp.Field{Name: "content-type", Value: contentType})
	}
	return &bhttp.Request{Method: method, Scheme: "https", Authority: api.InnerAuthority, Path: path, Header: h, Content: body}
}

// serveOnce serves plain as the gateway serves a request it has not seen
// (a fresh request id).
func serveOnce(ctx context.Context, s *Server, plain []byte) []byte {
	var id [16]byte
	rand.Read(id[:])
	return s.serveInner(ctx, plain, id)
}

// inner returns the encoding, unpadded, of a POST of body to path.
func inner(t testing.TB, path, body string) []byte {
	b, err := innerRequest(http.MethodPost, path, "", []byte(body)).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testReport returns the encoding of a report of one daily key and two
// sightings it covers.
func testReport(t testing.TB) []byte {
	start := enid.Interval(2_900_000).RollingStart()
	r := contactlog.Report{
		Keys: []contactlog.DailyKey{{TEK: enid.TEK{1}, Start: start, Period: enid.RollingPeriod}},
		Sightings: []contactlog.Sighting{
			{Heard: enid.RPI{2}, Interval: start + 3, Minutes: 5, Attenuation: 50},
			{Heard: enid.RPI{3}, Interval: start + 4, Minutes: 10, Attenuation: 60},
		},
	}
	b, err := r.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exchangeBody returns the body of an exchange request.
func exchangeBody(t testing.TB, r api.ExchangeRequest) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeInner(t *testing.T) {
	s, _ := newTestServer(t)
	ctx := context.Background()
	report := testReport(t)
	secret := bytes.Repeat([]byte{1}, api.TestSecretSize)
	check := string(exchangeBody(t, api.ExchangeRequest{Report: report}))
	both := string(exchangeBody(t, api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: secret, Report: report}))
	// Every answer pads to the class of the backend's bound, 3 KiB.
	const size = 3 << 10
	for _, tc := range []struct {
		name   string
		req    []byte
		status int
	}{
		{"exchange", inner(t, api.PathExchange, check), http.StatusOK},
		{"exchange that polls and uploads", inner(t, api.PathExchange, both), http.StatusOK},
		{"decoy", inner(t, api.PathDecoy, "filler"), http.StatusOK},
		{"refused exchange", inner(t, api.PathExchange, ""), http.StatusBadRequest},
		{"trace check", inner(t, api.PathCheckTrace, `{"trace":""}`), http.StatusOK},
		{"result", inner(t, api.PathSubmitResult, `{"authority":"lab"}`), http.StatusOK},
		{"internal failure", inner(t, api.PathSubmitTrace, `{"authority":"fail"}`), http.StatusInternalServerError},
		{"unknown field", inner(t, api.PathSubmitTrace, `{"x":1}`), http.StatusBadRequest},
		{"trailing JSON", inner(t, api.PathSubmitTrace, `{} {}`), http.StatusBadRequest},
		{"unknown path", inner(t, "/v1/nope", `{}`), http.StatusNotFound},
		{"removed poll path", inner(t, api.PathPollResult, `{"secret":""}`), http.StatusNotFound},
		{"removed upload path", inner(t, api.PathUpload, strings.Repeat("A", api.AuthorizationSize)+string(report)), http.StatusNotFound},
		{"removed exposure path", inner(t, api.PathCheckExposure, string(report)), http.StatusNotFound},
		{"garbage", []byte{0xff, 0xfe}, http.StatusBadRequest},
	} {
		out := serveOnce(ctx, s, tc.req)
		r, err := bhttp.ParseResponse(out, 0)
		if err != nil {
			t.Fatalf("%s: answer does not parse: %v", tc.name, err)
		}
		if r.Status != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, r.Status, r.Content, tc.status)
		}
		if len(out) != size {
			t.Errorf("%s: %d bytes, want %d", tc.name, len(out), size)
		}
		if r.Status == http.StatusInternalServerError && strings.Contains(string(r.Content), errDisk.Error()) {
			t.Errorf("%s: the answer %s tells the client the internal error", tc.name, r.Content)
		}
	}
}

// thirdParty is a client of a server's gateway written against package
// ohttp alone, as anyone could write one: it reads the served key list and
// encapsulates inner requests it builds itself.
type thirdParty struct {
	t   *testing.T
	s   *Server
	cfg ohttp.KeyConfig
}

func newThirdParty(t *testing.T, s *Server) thirdParty {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, api.PathKeys, nil))
	cfgs, err := ohttp.ParseKeyConfigs(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ohttp.SelectKeyConfig(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	return thirdParty{t: t, s: s, cfg: cfg}
}

// outer is what a third party learns from one request: the sizes of the
// outer request and answer, as anyone on the path sees them, the size of
// the decapsulated answer, and the answer.
type outer struct {
	reqSize, respSize, plainSize int
	resp                         *bhttp.Response
}

// post sends plain, encapsulated, to the gateway.
func (p thirdParty) post(plain []byte) outer {
	p.t.Helper()
	enc, rc, err := ohttp.EncapsulateRequest(p.cfg, plain)
	if err != nil {
		p.t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, api.PathGateway, bytes.NewReader(enc))
	r.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	rec := httptest.NewRecorder()
	p.s.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		p.t.Fatalf("gateway answered %d: %s", rec.Code, rec.Body.Bytes())
	}
	out, err := rc.DecapsulateResponse(rec.Body.Bytes())
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := bhttp.ParseResponse(out, 0)
	if err != nil {
		p.t.Fatalf("inner answer does not parse: %v", err)
	}
	return outer{reqSize: len(enc), respSize: rec.Body.Len(), plainSize: len(out), resp: resp}
}

// padTest pads an encoded inner request to n bytes with zeros, which
// Binary HTTP ignores: so that requests of every kind have one size.
func padTest(t testing.TB, b []byte, n int) []byte {
	t.Helper()
	if len(b) > n {
		t.Fatalf("an inner request of %d bytes does not fit %d", len(b), n)
	}
	return append(b, make([]byte, n-len(b))...)
}

// Every inner answer has one size, whatever the path, whatever it says
// and whether it refuses: a party that sends same-size requests to every
// inner path, the removed ones included, and watches the wire, gets
// same-size answers, so an answer's size tells nothing of what was asked.
// The size is the class of the backend's answer bound, for any bound.
func TestEveryAnswerOneSize(t *testing.T) {
	for _, tc := range []struct {
		bound, class int
	}{{defaultBound, 3 << 10}, {9000, 12 << 10}} {
		t.Run(fmt.Sprintf("bound %d", tc.bound), func(t *testing.T) { testEveryAnswerOneSize(t, tc.bound, tc.class) })
	}
}

func testEveryAnswerOneSize(t *testing.T, bound, class int) {
	s, fb := newTestServerBound(t, bound)
	p := newThirdParty(t, s)
	report := testReport(t)
	secret := bytes.Repeat([]byte{1}, api.TestSecretSize)
	auth := bytes.Repeat([]byte{2}, api.AuthorizationSize)
	js := func(v any) []byte { return marshal(t, v) }
	post := func(path, ct string, body []byte) []byte {
		b, err := innerRequest(http.MethodPost, path, ct, body).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	get, err := innerRequest(http.MethodGet, api.PathExchange, "", nil).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	const jsonType = "application/json"
	var first *outer
	for _, tc := range []struct {
		name   string
		plain  []byte
		status int
		// code is the refusal's code, when status is not 200.
		code string
	}{
		{"an exposure check", post(api.PathExchange, api.MediaTypeReport, exchangeBody(t, api.ExchangeRequest{Report: report})), http.StatusOK, ""},
		{"a poll", post(api.PathExchange, api.MediaTypeReport, exchangeBody(t, api.ExchangeRequest{Flags: api.ExchangePoll, Secret: secret, Report: report})), http.StatusOK, ""},
		{"a poll and an upload", post(api.PathExchange, api.MediaTypeReport, exchangeBody(t, api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: secret, Report: report})), http.StatusOK, ""},
		{"an authorized upload", post(api.PathExchange, api.MediaTypeReport, exchangeBody(t, api.ExchangeRequest{Flags: api.ExchangeUpload, Authorization: auth, Report: report})), http.StatusOK, ""},
		{"an upload refused in the answer", post(api.PathExchange, api.MediaTypeReport, exchangeBody(t, api.ExchangeRequest{Flags: api.ExchangeUpload, Report: report})), http.StatusOK, ""},
		{"an exchange with a malformed report", post(api.PathExchange, api.MediaTypeReport, exchangeBody(t, api.ExchangeRequest{Report: report[:len(report)-1]})), http.StatusBadRequest, api.CodeMalformed},
		{"a malformed exchange", post(api.PathExchange, api.MediaTypeReport, []byte("not an exchange")), http.StatusBadRequest, api.CodeMalformed},
		{"a result submission", post(api.PathSubmitResult, jsonType, js(api.SignedResult{Authority: "lab", TestCode: "x"})), http.StatusOK, ""},
		{"a trace submission", post(api.PathSubmitTrace, jsonType, js(api.SignedTrace{Authority: "lab"})), http.StatusOK, ""},
		{"a trace submission that fails inside", post(api.PathSubmitTrace, jsonType, js(api.SignedTrace{Authority: "fail"})), http.StatusInternalServerError, api.CodeInternal},
		{"a trace check", post(api.PathCheckTrace, jsonType, js(api.TraceCheckRequest{Trace: []byte{1}})), http.StatusOK, ""},
		{"a GAEN import", post(api.PathImportGAEN, api.MediaTypeZip, []byte("PK\x03\x04 a zip file")), http.StatusOK, ""},
		{"a GAEN import refused", post(api.PathImportGAEN, api.MediaTypeZip, []byte("not a zip file")), http.StatusBadRequest, api.CodeMalformed},
		{"a decoy", post(api.PathDecoy, api.MediaTypeReport, make([]byte, 100)), http.StatusOK, ""},
		{"an unknown path", post("/v1/admin", jsonType, []byte(`{}`)), http.StatusNotFound, api.CodeNotFound},
		{"the removed result poll", post(api.PathPollResult, jsonType, js(api.PollResultRequest{Secret: secret})), http.StatusNotFound, api.CodeNotFound},
		{"the removed upload", post(api.PathUpload, api.MediaTypeReport, append(bytes.Clone(auth), report...)), http.StatusNotFound, api.CodeNotFound},
		{"the removed exposure check", post(api.PathCheckExposure, api.MediaTypeReport, report), http.StatusNotFound, api.CodeNotFound},
		{"a JSON body where a binary one belongs", post(api.PathExchange, jsonType, js(map[string][]byte{"report": report})), http.StatusBadRequest, api.CodeMalformed},
		{"a GET", get, http.StatusMethodNotAllowed, api.CodeMalformed},
		{"not binary HTTP", []byte{0xff, 0xfe, 0xfd}, http.StatusBadRequest, api.CodeMalformed},
	} {
		o := p.post(padTest(t, tc.plain, 1024))
		if first == nil {
			first = &o
		}
		if o.reqSize != first.reqSize {
			t.Fatalf("%s: a request of %d bytes on the wire, the first was %d: the test must send requests of one size", tc.name, o.reqSize, first.reqSize)
		}
		if o.respSize != first.respSize || o.plainSize != class {
			t.Errorf("%s: an answer of %d bytes on the wire (%d inside), want %d (%d inside), the size of every answer", tc.name, o.respSize, o.plainSize, first.respSize, class)
		}
		if o.resp.Status != tc.status {
			t.Errorf("%s: inner status %d (%s), want %d", tc.name, o.resp.Status, o.resp.Content, tc.status)
			continue
		}
		if tc.status == http.StatusOK {
			continue
		}
		var ae api.Error
		if err := json.Unmarshal(o.resp.Content, &ae); err != nil || ae.Code != tc.code {
			t.Errorf("%s: refusal %s, want code %s", tc.name, o.resp.Content, tc.code)
		}
	}
	// The removed paths reached nothing; the exchanges and the malformed
	// exchange with a valid header did.
	if n := len(fb.received()); n != 6 {
		t.Errorf("%d exchanges reached the backend, want 6", n)
	}
}

// answer serves one inner request with a binary body and returns its
// status. It decodes a 200 answer strictly into out and checks that a
// refusal is malformed, with a reason.
func answer(t *testing.T, s *Server, path string, body []byte, out any) int {
	t.Helper()
	req, err := innerRequest(http.MethodPost, path, api.MediaTypeReport, body).MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	r, err := bhttp.ParseResponse(serveOnce(context.Background(), s, req), 0)
	if err != nil {
		t.Fatalf("%s: answer does not parse: %v", path, err)
	}
	var refusal api.Error
	if r.Status != http.StatusOK {
		out = &refusal
	}
	dec := json.NewDecoder(bytes.NewReader(r.Content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s: answer %s does not decode into %T: %v", path, r.Content, out, err)
	}
	if r.Status != http.StatusOK && (refusal.Code != api.CodeMalformed || refusal.Message == "") {
		t.Errorf("%s: refusal %+v, want %s with a reason", path, refusal, api.CodeMalformed)
	}
	return r.Status
}

// An exchange is binary: the server decodes its header (version, flags,
// secret, authorization) and hands the backend the parts as sent, the
// report undecoded, and never reads it as JSON. A body whose header is
// wrong never reaches the backend.
func TestExchangeBinaryBody(t *testing.T) {
	s, fb := newTestServer(t)
	report := testReport(t)
	secret := bytes.Repeat([]byte{0x5a}, api.TestSecretSize)
	auth := bytes.Repeat([]byte{0xa5}, api.AuthorizationSize)
	nonce := bytes.Repeat([]byte{0x3c}, api.CertificateNonceSize)

	for _, tc := range []struct {
		name string
		req  api.ExchangeRequest
		want api.ExchangeResponse
	}{
		{"a check", api.ExchangeRequest{Report: report},
			api.ExchangeResponse{Exposure: api.ExposureResponse{Exposed: true, LastExposure: "2024-03-09", Reciprocal: true}}},
		{"a poll and an upload under it", api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: secret, Report: report},
			api.ExchangeResponse{
				Exposure: api.ExposureResponse{Exposed: true, LastExposure: "2024-03-09", Reciprocal: true},
				Result:   &api.PollResultResponse{Result: api.Positive, UploadAuthorization: bytes.Repeat([]byte{7}, api.AuthorizationSize), ExpiresAt: 1_700_000_000},
				Upload:   &api.UploadResponse{Sightings: 2, Keys: 1, DurableBy: 1_700_000_000},
			}},
		{"an upload under an authorization", api.ExchangeRequest{Flags: api.ExchangeUpload, Authorization: auth, Report: report},
			api.ExchangeResponse{
				Exposure: api.ExposureResponse{Exposed: true, LastExposure: "2024-03-09", Reciprocal: true},
				Upload:   &api.UploadResponse{Sightings: 2, Keys: 1, DurableBy: 1_700_000_000},
			}},
		{"an upload nothing authorizes", api.ExchangeRequest{Flags: api.ExchangeUpload, Report: report},
			api.ExchangeResponse{
				Exposure:    api.ExposureResponse{Exposed: true, LastExposure: "2024-03-09", Reciprocal: true},
				UploadError: api.Errorf(api.CodeNotAuthorized, "nothing authorizes this upload"),
			}},
		{"a check asking for a certificate", api.ExchangeRequest{Flags: api.ExchangeCertificate, CertificateNonce: nonce, Report: report},
			api.ExchangeResponse{
				Exposure:    api.ExposureResponse{Exposed: true, LastExposure: "2024-03-09", Reciprocal: true},
				Certificate: slices.Concat([]byte("certificate for "), nonce),
			}},
	} {
		before := len(fb.received())
		var got api.ExchangeResponse
		if st := answer(t, s, api.PathExchange, exchangeBody(t, tc.req), &got); st != http.StatusOK {
			t.Fatalf("%s: status %d", tc.name, st)
		}
		if a, b := marshal(t, got), marshal(t, tc.want); !bytes.Equal(a, b) {
			t.Errorf("%s: answer %s, want the backend's %s", tc.name, a, b)
		}
		rs := fb.received()
		if len(rs) != before+1 {
			t.Fatalf("%s: %d exchanges reached the backend, want 1", tc.name, len(rs)-before)
		}
		r := rs[before]
		if r.Flags != tc.req.Flags || !bytes.Equal(r.Secret, tc.req.Secret) || !bytes.Equal(r.Authorization, tc.req.Authorization) || !bytes.Equal(r.Report, report) ||
			(tc.req.Secret == nil) != (r.Secret == nil) || (tc.req.Authorization == nil) != (r.Authorization == nil) ||
			!bytes.Equal(r.CertificateNonce, tc.req.CertificateNonce) || (tc.req.CertificateNonce == nil) != (r.CertificateNonce == nil) {
			t.Errorf("%s: the backend received %+v, want the parts as sent: %+v", tc.name, r, tc.req)
		}
	}

	// A report that does not decode reaches the backend, which refuses it.
	if st := answer(t, s, api.PathExchange, exchangeBody(t, api.ExchangeRequest{Report: report[:len(report)-1]}), nil); st != http.StatusBadRequest {
		t.Errorf("a truncated report: status %d, want %d", st, http.StatusBadRequest)
	}

	// What the header does not allow is refused before the backend.
	valid := exchangeBody(t, api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload | api.ExchangeCertificate,
		Secret: secret, Authorization: auth, CertificateNonce: nonce, Report: report})
	edit := func(f func([]byte)) []byte { b := bytes.Clone(valid); f(b); return b }
	const authAt = 2 + api.TestSecretSize
	const nonceAt = authAt + api.AuthorizationSize
	before := len(fb.received())
	for name, body := range map[string][]byte{
		"empty":                                  nil,
		"one byte":                               valid[:1],
		"a header without its authorization":     valid[:authAt],
		"a header without its certificate nonce": valid[:nonceAt],
		"a header one byte short":                valid[:nonceAt+api.CertificateNonceSize-1],
		"version 0":                              edit(func(b []byte) { b[0] = 0 }),
		// Version 1 had no certificate nonce: its report would be read
		// from the wrong place.
		"version 1":                          edit(func(b []byte) { b[0] = 1 }),
		"version 3":                          edit(func(b []byte) { b[0] = 3 }),
		"unknown flags":                      edit(func(b []byte) { b[1] |= 0x80 }),
		"a secret the flags do not announce": edit(func(b []byte) { b[1] &^= api.ExchangePoll }),
		"an authorization the flags do not announce":    edit(func(b []byte) { b[1] &^= api.ExchangeUpload }),
		"a certificate nonce the flags do not announce": edit(func(b []byte) { b[1] &^= api.ExchangeCertificate }),
		"a certificate asked with a nonce of zeros": edit(func(b []byte) {
			clear(b[nonceAt : nonceAt+api.CertificateNonceSize])
		}),
		// The v1 forms: JSON with base64 fields.
		"JSON":               marshal(t, map[string][]byte{"report": report}),
		"JSON with a secret": marshal(t, map[string][]byte{"secret": secret, "report": report}),
	} {
		if st := answer(t, s, api.PathExchange, body, nil); st != http.StatusBadRequest {
			t.Errorf("%s: status %d, want %d", name, st, http.StatusBadRequest)
		}
	}
	if n := len(fb.received()) - before; n != 0 {
		t.Errorf("%d exchanges with a malformed header reached the backend", n)
	}

	// A GAEN export is binary too: the zip file as the key server
	// published it.
	export := []byte("PK\x03\x04 a zip file, as far as the server knows")
	var imp api.ImportResponse
	if st := answer(t, s, api.PathImportGAEN, export, &imp); st != http.StatusOK || imp.Imported != 1 {
		t.Fatalf("import: status %d, %+v; want 200 and the backend's answer", st, imp)
	}
	if st := answer(t, s, api.PathImportGAEN, marshal(t, map[string][]byte{"export": export}), nil); st != http.StatusBadRequest {
		t.Errorf("import as JSON: status %d, want %d", st, http.StatusBadRequest)
	}
	fb.mu.Lock()
	imports := slices.Clone(fb.imports)
	fb.mu.Unlock()
	if len(imports) == 0 || !bytes.Equal(imports[0], export) {
		t.Errorf("the backend received exports %q, want the zip file as sent", imports)
	}
	// A decoy's filler is taken as it is, and answered empty.
	var decoy api.DecoyResponse
	if st := answer(t, s, api.PathDecoy, []byte("any filler {"), &decoy); st != http.StatusOK {
		t.Errorf("decoy: status %d, want 200", st)
	}
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzServeInner checks that any decapsulated plaintext gets a well-formed
// answer, padded to at least the size of every answer, and never a panic.
func FuzzServeInner(f *testing.F) {
	report := testReport(f)
	f.Add(inner(f, api.PathExchange, string(exchangeBody(f, api.ExchangeRequest{Report: report}))))
	f.Add(inner(f, api.PathExchange, string(exchangeBody(f, api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: make([]byte, api.TestSecretSize), Report: report}))))
	f.Add(inner(f, api.PathSubmitResult, `{"authority":"a"}`))
	f.Add(inner(f, api.PathDecoy, ""))
	f.Add([]byte{0, 3, 'G', 'E', 'T'})
	s, _ := newTestServer(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		out := serveOnce(context.Background(), s, b)
		class, err := bhttp.SizeClass(len(out))
		if err != nil || class != len(out) || len(out) < 3<<10 {
			t.Fatalf("answer of %d bytes is not a padded size class of at least the answers' %d", len(out), 3<<10)
		}
		if _, err := bhttp.ParseResponse(out, 0); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
	})
}
