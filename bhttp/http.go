package bhttp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// isConnectionField reports whether name (lowercase) is a
// connection-specific header field, which HTTP/2, and so Binary HTTP, must
// not carry (RFC 9113, section 8.2.2), or content-length, which the
// encoding makes redundant.
func isConnectionField(name string) bool {
	switch name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "te", "content-length":
		return true
	}
	return false
}

// HTTPRequest returns r as an incoming *http.Request, ready for an
// http.Handler: URL, Host, RequestURI, header, trailer, body and
// ContentLength are set. A gateway uses it to serve a decapsulated request.
// An empty path means "/"; the asterisk form ("OPTIONS *") is refused.
func (r *Request) HTTPRequest(ctx context.Context) (*http.Request, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	host := r.Authority
	header := toHTTPHeader(r.Header)
	if host == "" {
		host = header.Get("Host")
	}
	header.Del("Host")
	scheme := r.Scheme
	if scheme == "" {
		scheme = "https"
	}
	path := r.Path
	switch path {
	case "":
		path = "/"
	case "*":
		return nil, fmt.Errorf("%w: asterisk-form request target not supported", ErrMalformed)
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, fmt.Errorf("%w: path %q: %v", ErrMalformed, r.Path, err)
	}
	u.Scheme, u.Host = scheme, host
	hr, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(r.Content))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	hr.Host = host
	hr.RequestURI = u.RequestURI()
	hr.Header = header
	hr.ContentLength = int64(len(r.Content))
	if len(r.Trailer) > 0 {
		hr.Trailer = toHTTPHeader(r.Trailer)
	}
	return hr, nil
}

// FromHTTPRequest converts an outgoing *http.Request to a Request, reading
// at most maxSize bytes of its body (maxSize <= 0 means MaxSize; a longer
// body is an error wrapping ErrTooLarge). Header names are lowercased and
// sorted, so equal requests encode equally; connection-specific fields are
// dropped. A client uses it to build the plaintext of an Oblivious HTTP
// request.
func FromHTTPRequest(hr *http.Request, maxSize int) (*Request, error) {
	if hr.URL == nil {
		return nil, fmt.Errorf("%w: request without URL", ErrMalformed)
	}
	content, err := readBody(hr.Body, maxSize)
	if err != nil {
		return nil, err
	}
	method := hr.Method
	if method == "" {
		method = http.MethodGet
	}
	scheme := hr.URL.Scheme
	if scheme == "" {
		scheme = "https"
	}
	host := hr.Host
	if host == "" {
		host = hr.URL.Host
	}
	r := &Request{
		Method:    method,
		Scheme:    scheme,
		Authority: host,
		Path:      hr.URL.RequestURI(),
		Header:    fromHTTPHeader(hr.Header),
		Content:   content,
		Trailer:   fromHTTPHeader(hr.Trailer),
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// HTTPResponse returns r as an *http.Response whose body reads r.Content.
func (r *Response) HTTPResponse() *http.Response {
	hr := &http.Response{
		Status:        strconv.Itoa(r.Status) + " " + http.StatusText(r.Status),
		StatusCode:    r.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        toHTTPHeader(r.Header),
		Body:          io.NopCloser(bytes.NewReader(r.Content)),
		ContentLength: int64(len(r.Content)),
	}
	if len(r.Trailer) > 0 {
		hr.Trailer = toHTTPHeader(r.Trailer)
	}
	return hr
}

// FromHTTPResponse converts hr to a Response, reading at most maxSize bytes
// of its body (maxSize <= 0 means MaxSize; a longer body is an error
// wrapping ErrTooLarge) and closing it. A gateway can serve a request into
// an httptest.ResponseRecorder and convert its Result. Header names are
// lowercased and sorted; connection-specific fields are dropped.
func FromHTTPResponse(hr *http.Response, maxSize int) (*Response, error) {
	content, err := readBody(hr.Body, maxSize)
	if err != nil {
		return nil, err
	}
	r := &Response{
		Status:  hr.StatusCode,
		Header:  fromHTTPHeader(hr.Header),
		Content: content,
		Trailer: fromHTTPHeader(hr.Trailer),
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

func readBody(body io.ReadCloser, maxSize int) ([]byte, error) {
	if body == nil || body == http.NoBody {
		return nil, nil
	}
	defer body.Close()
	if maxSize <= 0 {
		maxSize = MaxSize
	}
	b, err := io.ReadAll(io.LimitReader(body, int64(maxSize)+1))
	if err != nil {
		return nil, fmt.Errorf("bhttp: reading body: %w", err)
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, maxSize)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

func toHTTPHeader(fs []Field) http.Header {
	h := make(http.Header, len(fs))
	for _, f := range fs {
		h.Add(f.Name, f.Value)
	}
	return h
}

func fromHTTPHeader(h http.Header) []Field {
	names := make([]string, 0, len(h))
	for name := range h {
		if !isConnectionField(strings.ToLower(name)) {
			names = append(names, name)
		}
	}
	sort.Slice(names, func(i, j int) bool { return strings.ToLower(names[i]) < strings.ToLower(names[j]) })
	var fs []Field
	for _, name := range names {
		for _, v := range h[name] {
			fs = append(fs, Field{Name: strings.ToLower(name), Value: v})
		}
	}
	return fs
}
