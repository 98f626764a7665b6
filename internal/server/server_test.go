package server

import (
	"context"
	"net/http"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/ohttp"
)

// fakeBackend answers every flow; it refuses polls to exercise errors.
type fakeBackend struct{}

func (fakeBackend) SubmitResult(context.Context, api.SignedResult) (api.SubmitResultResponse, error) {
	return api.SubmitResultResponse{Stored: true}, nil
}
func (fakeBackend) PollResult(context.Context, api.PollResultRequest) (api.PollResultResponse, error) {
	return api.PollResultResponse{}, api.Errorf(api.CodeMalformed, "refused")
}
func (fakeBackend) Upload(context.Context, api.UploadRequest) (api.UploadResponse, error) {
	return api.UploadResponse{Accepted: 1}, nil
}
func (fakeBackend) CheckExposure(context.Context, api.ExposureRequest) (api.ExposureResponse, error) {
	return api.ExposureResponse{Exposed: true}, nil
}
func (fakeBackend) ExposureResponseBound() int { return 3000 }
func (fakeBackend) SubmitTrace(context.Context, api.SignedTrace) (api.SubmitTraceResponse, error) {
	return api.SubmitTraceResponse{Points: 1}, nil
}
func (fakeBackend) CheckTrace(context.Context, api.TraceCheckRequest) (api.TraceCheckResponse, error) {
	return api.TraceCheckResponse{}, nil
}
func (fakeBackend) TraceResponseBound() int { return 9000 }

func newTestServer(t testing.TB) *Server {
	key, err := ohttp.GenerateKey(1, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Backend: fakeBackend{}, Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func inner(t testing.TB, path, body string) []byte {
	b, err := (&bhttp.Request{Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: path, Content: []byte(body)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeInner(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		req    []byte
		status int
		size   int // padded size the answer must have, if not 0
	}{
		{"exposure pads to the bound's class", inner(t, api.PathCheckExposure, `{"tuples":""}`), http.StatusOK, 4096},
		{"decoy pads like an exposure answer", inner(t, api.PathDecoy, `{"filler":""}`), http.StatusOK, 4096},
		{"trace check pads to its bound's class", inner(t, api.PathCheckTrace, `{"trace":""}`), http.StatusOK, 16384},
		{"upload", inner(t, api.PathUpload, `{"authorization":"","tuples":""}`), http.StatusOK, 1024},
		{"backend refusal", inner(t, api.PathPollResult, `{"secret":""}`), http.StatusBadRequest, 0},
		{"unknown field", inner(t, api.PathUpload, `{"x":1}`), http.StatusBadRequest, 0},
		{"trailing JSON", inner(t, api.PathUpload, `{} {}`), http.StatusBadRequest, 0},
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

// FuzzServeInner checks that any decapsulated plaintext gets a well-formed,
// padded Binary HTTP answer and never a panic.
func FuzzServeInner(f *testing.F) {
	f.Add(inner(f, api.PathCheckExposure, `{"tuples":"AQAAAAA="}`))
	f.Add(inner(f, api.PathSubmitResult, `{"authority":"a"}`))
	f.Add([]byte{0, 3, 'G', 'E', 'T'})
	s := newTestServer(f)
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
