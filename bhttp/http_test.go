package bhttp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestRequestThroughHandler(t *testing.T) {
	// Client side: a standard request becomes Binary HTTP...
	hr, err := http.NewRequest(http.MethodPost, "https://backend.example/v1/upload?day=3", strings.NewReader("tuples"))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/octet-stream")
	hr.Header.Add("X-Multi", "one")
	hr.Header.Add("X-Multi", "two")
	hr.Header.Set("Connection", "keep-alive")
	r, err := FromHTTPRequest(hr, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		Method: "POST", Scheme: "https", Authority: "backend.example", Path: "/v1/upload?day=3",
		Header:  []Field{{"content-type", "application/octet-stream"}, {"x-multi", "one"}, {"x-multi", "two"}},
		Content: []byte("tuples"),
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("FromHTTPRequest = %+v, want %+v", r, want)
	}
	enc, err := r.MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}

	// ...and the gateway side serves it with an ordinary handler.
	dec, err := ParseRequest(enc, 0)
	if err != nil {
		t.Fatal(err)
	}
	in, err := dec.HTTPRequest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST backend.example/v1/upload", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if string(body) != "tuples" || r.URL.Query().Get("day") != "3" || len(r.Header.Values("X-Multi")) != 2 {
			http.Error(w, "bad request seen by handler", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "stored")
	})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, in)
	resp, err := FromHTTPResponse(rec.Result(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusCreated || string(resp.Content) != "stored" {
		t.Fatalf("response %d %q, want 201 \"stored\"", resp.Status, resp.Content)
	}
	for _, f := range resp.Header {
		if f.Name == "content-length" {
			t.Error("content-length carried in Binary HTTP")
		}
	}

	// Back on the client, the response reads like any other.
	renc, err := resp.MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	rdec, err := ParseResponse(renc, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := rdec.HTTPResponse()
	body, _ := io.ReadAll(out.Body)
	if out.StatusCode != 201 || out.Header.Get("Content-Type") != "text/plain" || string(body) != "stored" || out.ContentLength != 6 {
		t.Fatalf("HTTPResponse = %d %v %q", out.StatusCode, out.Header, body)
	}
}

func TestHTTPRequestHostFromHeader(t *testing.T) {
	r := &Request{Method: "GET", Scheme: "https", Path: "/x", Header: []Field{{"host", "h.example"}}, Trailer: []Field{{"t", "v"}}}
	hr, err := r.HTTPRequest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if hr.Host != "h.example" || hr.URL.Host != "h.example" || hr.Header.Get("Host") != "" || hr.Trailer.Get("T") != "v" || hr.RequestURI != "/x" {
		t.Fatalf("Host %q URL %v header %v trailer %v", hr.Host, hr.URL, hr.Header, hr.Trailer)
	}
}

func TestHTTPConversionErrors(t *testing.T) {
	big := httptest.NewRequest(http.MethodPost, "https://a/", bytes.NewReader(make([]byte, 2000)))
	if _, err := FromHTTPRequest(big, 1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized request body: %v, want ErrTooLarge", err)
	}
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(make([]byte, 2000)))}
	if _, err := FromHTTPResponse(resp, 1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized response body: %v, want ErrTooLarge", err)
	}
	bad := &http.Response{StatusCode: 200, Header: http.Header{"X": {" padded"}}}
	if _, err := FromHTTPResponse(bad, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("header value with leading space: %v, want ErrMalformed", err)
	}
	for _, path := range []string{"no-slash", "*"} {
		if _, err := (&Request{Method: "GET", Path: path}).HTTPRequest(context.Background()); !errors.Is(err, ErrMalformed) {
			t.Errorf("path %q: %v, want ErrMalformed", path, err)
		}
	}
}
