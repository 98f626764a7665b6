package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/ohttp"
)

// fakeBackend answers every flow; it refuses polls to exercise errors. It
// decodes reports as the enclave does, so that a body the server passes on
// undecoded is refused, and records what reached it.
type fakeBackend struct {
	mu      sync.Mutex
	uploads []api.UploadRequest
	checks  []api.ExposureRequest
	imports [][]byte
}

func (*fakeBackend) SubmitResult(context.Context, api.SignedResult) (api.SubmitResultResponse, error) {
	return api.SubmitResultResponse{Stored: true}, nil
}
func (*fakeBackend) PollResult(context.Context, api.PollResultRequest) (api.PollResultResponse, error) {
	return api.PollResultResponse{}, api.Errorf(api.CodeMalformed, "refused")
}

var fakeLimits = contactlog.Limits{MaxKeys: 30, MaxSightings: 100}

func (f *fakeBackend) Upload(_ context.Context, r api.UploadRequest) (api.UploadResponse, error) {
	f.mu.Lock()
	f.uploads = append(f.uploads, api.UploadRequest{Authorization: bytes.Clone(r.Authorization), Report: bytes.Clone(r.Report)})
	f.mu.Unlock()
	rep, err := contactlog.ParseReport(r.Report, fakeLimits)
	if err != nil {
		return api.UploadResponse{}, api.Errorf(api.CodeMalformed, "report: %v", err)
	}
	return api.UploadResponse{Sightings: len(rep.Sightings), Keys: len(rep.Keys)}, nil
}
func (f *fakeBackend) CheckExposure(_ context.Context, r api.ExposureRequest) (api.ExposureResponse, error) {
	f.mu.Lock()
	f.checks = append(f.checks, api.ExposureRequest{Report: bytes.Clone(r.Report)})
	f.mu.Unlock()
	if _, err := contactlog.ParseReport(r.Report, fakeLimits); err != nil {
		return api.ExposureResponse{}, api.Errorf(api.CodeMalformed, "report: %v", err)
	}
	return api.ExposureResponse{Exposed: true}, nil
}
func (*fakeBackend) ExposureResponseBound() int { return 3000 }
func (*fakeBackend) SubmitTrace(context.Context, api.SignedTrace) (api.SubmitTraceResponse, error) {
	return api.SubmitTraceResponse{Points: 1}, nil
}
func (*fakeBackend) CheckTrace(context.Context, api.TraceCheckRequest) (api.TraceCheckResponse, error) {
	return api.TraceCheckResponse{}, nil
}
func (*fakeBackend) TraceResponseBound() int { return 9000 }
func (f *fakeBackend) ImportGAEN(_ context.Context, r api.ImportRequest) (api.ImportResponse, error) {
	f.mu.Lock()
	f.imports = append(f.imports, bytes.Clone(r.Export))
	f.mu.Unlock()
	if !bytes.HasPrefix(r.Export, []byte("PK")) {
		return api.ImportResponse{}, api.Errorf(api.CodeMalformed, "not a zip file")
	}
	return api.ImportResponse{Region: "XX", Imported: 1}, nil
}

// received returns the uploads and checks that reached the backend.
func (f *fakeBackend) received() ([]api.UploadRequest, []api.ExposureRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.UploadRequest(nil), f.uploads...), append([]api.ExposureRequest(nil), f.checks...)
}

func newTestServer(t testing.TB) (*Server, *fakeBackend) {
	key, err := ohttp.GenerateKey(1, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBackend{}
	s, err := New(Config{Backend: fb, Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	return s, fb
}

func inner(t testing.TB, path, body string) []byte {
	b, err := (&bhttp.Request{Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: path, Content: []byte(body)}).MarshalBinary()
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

func TestServeInner(t *testing.T) {
	s, _ := newTestServer(t)
	ctx := context.Background()
	auth := strings.Repeat("A", api.AuthorizationSize)
	report := string(testReport(t))
	for _, tc := range []struct {
		name   string
		req    []byte
		status int
		size   int // padded size the answer must have, if not 0
	}{
		{"exposure pads to the bound's class", inner(t, api.PathCheckExposure, report), http.StatusOK, 4096},
		{"decoy pads like an exposure answer", inner(t, api.PathDecoy, `{"filler":""}`), http.StatusOK, 4096},
		{"refused exposure pads like an answer", inner(t, api.PathCheckExposure, ""), http.StatusBadRequest, 4096},
		{"trace check pads to its bound's class", inner(t, api.PathCheckTrace, `{"trace":""}`), http.StatusOK, 16384},
		{"upload", inner(t, api.PathUpload, auth+report), http.StatusOK, 1024},
		{"backend refusal", inner(t, api.PathPollResult, `{"secret":""}`), http.StatusBadRequest, 0},
		{"unknown field", inner(t, api.PathSubmitTrace, `{"x":1}`), http.StatusBadRequest, 0},
		{"trailing JSON", inner(t, api.PathSubmitTrace, `{} {}`), http.StatusBadRequest, 0},
		{"unknown path", inner(t, "/v1/nope", `{}`), http.StatusNotFound, 0},
		{"garbage", []byte{0xff, 0xfe}, http.StatusBadRequest, 0},
	} {
		out := s.serveInner(ctx, tc.req)
		r, err := bhttp.ParseResponse(out, 0)
		if err != nil {
			t.Fatalf("%s: answer does not parse: %v", tc.name, err)
		}
		if r.Status != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, r.Status, r.Content, tc.status)
		}
		if tc.size != 0 && len(out) != tc.size {
			t.Errorf("%s: %d bytes, want %d", tc.name, len(out), tc.size)
		}
	}
}

// answer serves one inner request with a binary body and returns its
// status. It decodes a 200 answer strictly into out and checks that a
// refusal is malformed, with a reason.
func answer(t *testing.T, s *Server, path string, body []byte, out any) int {
	t.Helper()
	req, err := (&bhttp.Request{Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: path,
		Header: []bhttp.Field{{Name: "content-type", Value: api.MediaTypeReport}}, Content: body}).MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	r, err := bhttp.ParseResponse(s.serveInner(context.Background(), req), 0)
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

// Uploads and checks carry binary reports: the server hands the backend
// the bytes as sent, split into authorization and report for an upload,
// and never reads them as JSON.
func TestBinaryBodies(t *testing.T) {
	s, fb := newTestServer(t)
	report := testReport(t)
	auth := bytes.Repeat([]byte{0xa5}, api.AuthorizationSize)

	var up api.UploadResponse
	if st := answer(t, s, api.PathUpload, append(bytes.Clone(auth), report...), &up); st != http.StatusOK || up != (api.UploadResponse{Sightings: 2, Keys: 1}) {
		t.Fatalf("upload: status %d, %+v; want 200 and 2 sightings, 1 key", st, up)
	}
	var exp api.ExposureResponse
	if st := answer(t, s, api.PathCheckExposure, report, &exp); st != http.StatusOK || !exp.Exposed {
		t.Fatalf("check: status %d, %+v; want 200 and the backend's answer", st, exp)
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
	uploads, checks := fb.received()
	if len(uploads) != 1 || !bytes.Equal(uploads[0].Authorization, auth) || !bytes.Equal(uploads[0].Report, report) {
		t.Errorf("the backend received uploads %+v, want the authorization and report as sent", uploads)
	}
	if len(checks) != 1 || !bytes.Equal(checks[0].Report, report) {
		t.Errorf("the backend received checks %+v, want the report as sent", checks)
	}

	// The v1 form, JSON with base64 fields, is a malformed report now.
	jsonUpload := marshal(t, map[string][]byte{"authorization": auth, "report": report})
	jsonCheck := marshal(t, map[string][]byte{"report": report})
	for _, tc := range []struct {
		path string
		body []byte
	}{
		{api.PathUpload, jsonUpload},
		{api.PathCheckExposure, jsonCheck},
		{api.PathCheckExposure, nil},
		{api.PathUpload, append(bytes.Clone(auth), report[:len(report)-1]...)},
		{api.PathUpload, auth},
	} {
		if st := answer(t, s, tc.path, tc.body, nil); st != http.StatusBadRequest {
			t.Errorf("%s with a body of %d bytes: status %d, want %d", tc.path, len(tc.body), st, http.StatusBadRequest)
		}
	}

	// An upload too short to hold an authorization is refused before it
	// reaches the backend.
	before, _ := fb.received()
	for _, n := range []int{0, 1, api.AuthorizationSize - 1} {
		if st := answer(t, s, api.PathUpload, auth[:n], nil); st != http.StatusBadRequest {
			t.Errorf("upload of %d bytes: status %d, want %d", n, st, http.StatusBadRequest)
		}
	}
	if after, _ := fb.received(); len(after) != len(before) {
		t.Errorf("%d uploads shorter than an authorization reached the backend", len(after)-len(before))
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

// FuzzServeInner checks that any decapsulated plaintext gets a well-formed,
// padded Binary HTTP answer and never a panic.
func FuzzServeInner(f *testing.F) {
	report := string(testReport(f))
	f.Add(inner(f, api.PathCheckExposure, report))
	f.Add(inner(f, api.PathUpload, strings.Repeat("A", api.AuthorizationSize)+report))
	f.Add(inner(f, api.PathSubmitResult, `{"authority":"a"}`))
	f.Add([]byte{0, 3, 'G', 'E', 'T'})
	s, _ := newTestServer(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		out := s.serveInner(context.Background(), b)
		if _, err := bhttp.SizeClass(len(out)); err != nil || len(out)%1024 != 0 {
			t.Fatalf("answer of %d bytes is not a padded size class", len(out))
		}
		if _, err := bhttp.ParseResponse(out, 0); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
	})
}
