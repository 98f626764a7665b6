package relay

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/conftrace/conftrace/ohttp"
)

func TestRelayForwardsWithoutClientIdentity(t *testing.T) {
	var got *http.Request
	var gotBody []byte
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context())
		gotBody, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", ohttp.MediaTypeResponse)
		w.Write([]byte("sealed response"))
	}))
	defer gw.Close()
	rl, err := New(gw.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rl)
	defer front.Close()

	req, _ := http.NewRequest(http.MethodPost, front.URL, bytes.NewReader([]byte("sealed request")))
	req.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	req.Header.Set("Cookie", "session=alice")
	req.Header.Set("User-Agent", "alice-phone")
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "sealed response" || resp.Header.Get("Content-Type") != ohttp.MediaTypeResponse {
		t.Fatalf("relay answered %d %q", resp.StatusCode, body)
	}
	if string(gotBody) != "sealed request" {
		t.Fatalf("gateway got %q", gotBody)
	}
	for _, h := range []string{"Cookie", "X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
		if v := got.Header.Get(h); v != "" {
			t.Errorf("gateway saw %s: %q", h, v)
		}
	}
	if ua := got.Header.Get("User-Agent"); ua != "conftrace-relay" {
		t.Errorf("gateway saw user agent %q", ua)
	}

	for _, tc := range []struct {
		method, ct string
		body       []byte
		want       int
	}{
		{http.MethodGet, ohttp.MediaTypeRequest, nil, http.StatusMethodNotAllowed},
		{http.MethodPost, "application/json", []byte("{}"), http.StatusUnsupportedMediaType},
		{http.MethodPost, ohttp.MediaTypeRequest, make([]byte, MaxBody+1), http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest(tc.method, front.URL, bytes.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.ct, resp.StatusCode, tc.want)
		}
	}
}
