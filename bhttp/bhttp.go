// Package bhttp encodes and decodes Binary HTTP messages (RFC 9292), the
// plaintext that Oblivious HTTP (package ohttp) encrypts.
//
// A [Request] or [Response] is a whole HTTP message held in memory: control
// data (method, scheme, authority and path, or a status code), header
// fields, content and trailer fields. [Request.MarshalBinary] and
// [Response.MarshalBinary] produce the known-length encoding, leaving out
// empty trailing sections as RFC 9292 allows; [ParseRequest] and
// [ParseResponse] read it back, refusing anything malformed.
//
// # Padding to size classes
//
// The length of an encrypted message is visible to everyone who carries it,
// and in a contact-tracing system the length alone can say a lot: an upload
// of fourteen days of contacts is longer than an exposure poll. RFC 9292
// lets a sender append zero bytes to a message, so [Request.MarshalPadded]
// and [Response.MarshalPadded] pad every message to the smallest of a
// ladder of fixed sizes (see [SizeClasses]): 1 KiB, 1.5 KiB, 2 KiB, 3 KiB,
// 4 KiB and so on, each at most 1.5 times the one below, up to 1 MiB. An
// observer then learns only the size class. Messages longer than
// [MaxSize] are refused with [ErrTooLarge]: split them instead.
//
// # What the decoder accepts
//
// Only the known-length framing (indicators 0 and 1) is supported; the
// indeterminate-length framing is refused with [ErrUnsupported]. A response
// may carry informational (1xx) responses before the final one: the decoder
// checks and then drops them, since a buffered message can't act on them.
// Field names must be lowercase and values must follow the HTTP/2 rules, as
// RFC 9292 requires; pseudo-fields (names starting with ':') are refused.
// Integers must use their shortest encoding ([ErrInvalidVarint]). After the
// message only zero bytes may follow ([ErrPadding]). Every length is checked
// against a caller-chosen maximum message size before anything is
// allocated ([ErrTooLarge]).
//
// For a gateway that serves decoded requests with a net/http handler,
// [Request.HTTPRequest] and [FromHTTPResponse] convert to and from the
// standard library's types; a client uses [FromHTTPRequest] and
// [Response.HTTPResponse].
package bhttp

import (
	"errors"
	"fmt"
	"strings"
)

// The errors that ParseRequest and ParseResponse wrap, one for each way a
// message can be refused. Test for them with errors.Is.
var (
	// ErrTruncated means the input ended inside the message.
	ErrTruncated = errors.New("bhttp: truncated message")
	// ErrPadding means a non-zero byte follows the message where only
	// zero padding may.
	ErrPadding = errors.New("bhttp: non-zero bytes after the message")
	// ErrTooLarge means the message, or a length inside it, exceeds the
	// maximum size, or a message is too long for the largest size class.
	ErrTooLarge = errors.New("bhttp: message too large")
	// ErrInvalidVarint means an integer was not in its shortest encoding.
	ErrInvalidVarint = errors.New("bhttp: integer not in shortest encoding")
	// ErrMalformed means the message is well framed but invalid: a wrong
	// framing indicator for the kind of message, a status code out of
	// range, or a field name or value HTTP does not allow.
	ErrMalformed = errors.New("bhttp: malformed message")
	// ErrUnsupported means a valid RFC 9292 feature this package does not
	// implement: the indeterminate-length framing.
	ErrUnsupported = errors.New("bhttp: unsupported message framing")
)

// Framing indicators (RFC 9292, section 3.3).
const (
	framingKnownRequest  = 0
	framingKnownResponse = 1
	framingIndetRequest  = 2
	framingIndetResponse = 3
)

// Field is one field line of a header or trailer section. Names are
// lowercase, as in HTTP/2; a name may repeat.
type Field struct {
	Name  string
	Value string
}

// Request is an HTTP request in Binary HTTP form.
type Request struct {
	// Method is the request method, such as "GET" or "POST".
	Method string
	// Scheme is the target URI's scheme, usually "https".
	Scheme string
	// Authority is the target URI's authority (host and optional port);
	// it may be empty, in which case a "host" header field may carry it.
	Authority string
	// Path is the target's path and query, such as "/v1/poll?x=1".
	Path string
	// Header holds the header fields in order.
	Header []Field
	// Content is the request content (body).
	Content []byte
	// Trailer holds the trailer fields in order.
	Trailer []Field
}

// Response is a final HTTP response in Binary HTTP form.
type Response struct {
	// Status is the final status code, 200 to 599.
	Status int
	// Header holds the header fields in order.
	Header []Field
	// Content is the response content (body).
	Content []byte
	// Trailer holds the trailer fields in order.
	Trailer []Field
}

// MarshalBinary returns the known-length encoding of r without padding.
// Empty trailing sections are left out (RFC 9292, section 3.1).
func (r *Request) MarshalBinary() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	b := appendVarint(nil, framingKnownRequest)
	for _, s := range []string{r.Method, r.Scheme, r.Authority, r.Path} {
		b = appendString(b, s)
	}
	return appendSections(b, r.Header, r.Content, r.Trailer), nil
}

// MarshalPadded returns the encoding of r padded with zeros to its size
// class, or an error wrapping ErrTooLarge if it exceeds MaxSize.
func (r *Request) MarshalPadded() ([]byte, error) {
	b, err := r.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return Pad(b)
}

// MarshalBinary returns the known-length encoding of r without padding.
// Empty trailing sections are left out (RFC 9292, section 3.1).
func (r *Response) MarshalBinary() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	b := appendVarint(nil, framingKnownResponse)
	b = appendVarint(b, uint64(r.Status))
	return appendSections(b, r.Header, r.Content, r.Trailer), nil
}

// MarshalPadded returns the encoding of r padded with zeros to its size
// class, or an error wrapping ErrTooLarge if it exceeds MaxSize.
func (r *Response) MarshalPadded() ([]byte, error) {
	b, err := r.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return Pad(b)
}

// ParseRequest decodes a known-length Binary HTTP request, which may be
// followed by zero padding. Inputs longer than maxSize bytes, and lengths
// inside the message larger than maxSize, are refused with ErrTooLarge;
// maxSize <= 0 means MaxSize.
func ParseRequest(b []byte, maxSize int) (*Request, error) {
	d, err := newDecoder(b, maxSize)
	if err != nil {
		return nil, err
	}
	f, err := d.varint("framing indicator")
	if err != nil {
		return nil, err
	}
	switch f {
	case framingKnownRequest:
	case framingIndetRequest:
		return nil, fmt.Errorf("%w: indeterminate-length request", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: framing indicator %d is not a request", ErrMalformed, f)
	}
	r := new(Request)
	for _, c := range []struct {
		name string
		dst  *string
	}{{"method", &r.Method}, {"scheme", &r.Scheme}, {"authority", &r.Authority}, {"path", &r.Path}} {
		s, err := d.bytes(c.name)
		if err != nil {
			return nil, err
		}
		*c.dst = string(s)
	}
	if r.Header, r.Content, r.Trailer, err = d.sections(); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// ParseResponse decodes a known-length Binary HTTP response, which may be
// followed by zero padding. Informational (1xx) responses before the final
// one are checked and dropped. Inputs longer than maxSize bytes, and
// lengths inside the message larger than maxSize, are refused with
// ErrTooLarge; maxSize <= 0 means MaxSize.
func ParseResponse(b []byte, maxSize int) (*Response, error) {
	d, err := newDecoder(b, maxSize)
	if err != nil {
		return nil, err
	}
	f, err := d.varint("framing indicator")
	if err != nil {
		return nil, err
	}
	switch f {
	case framingKnownResponse:
	case framingIndetResponse:
		return nil, fmt.Errorf("%w: indeterminate-length response", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: framing indicator %d is not a response", ErrMalformed, f)
	}
	r := new(Response)
	for {
		status, err := d.varint("status code")
		if err != nil {
			return nil, err
		}
		if status < 100 || status > 599 {
			return nil, fmt.Errorf("%w: status code %d", ErrMalformed, status)
		}
		r.Status = int(status)
		if status >= 200 {
			break
		}
		// An informational response's header section is not optional:
		// the final response must follow it.
		raw, err := d.bytes("informational header section")
		if err != nil {
			return nil, err
		}
		if _, err := parseFields(raw, "informational header"); err != nil {
			return nil, err
		}
	}
	if r.Header, r.Content, r.Trailer, err = d.sections(); err != nil {
		return nil, err
	}
	return r, nil
}

func newDecoder(b []byte, maxSize int) (*decoder, error) {
	if maxSize <= 0 {
		maxSize = MaxSize
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the limit of %d", ErrTooLarge, len(b), maxSize)
	}
	return &decoder{b: b, maxSize: uint64(maxSize)}, nil
}

// sections reads the header section, content and trailer section, each of
// which may be cut off (meaning empty), then checks the padding.
func (d *decoder) sections() (header []Field, content []byte, trailer []Field, err error) {
	if d.empty() {
		return nil, nil, nil, nil
	}
	raw, err := d.bytes("header section")
	if err != nil {
		return nil, nil, nil, err
	}
	if header, err = parseFields(raw, "header"); err != nil {
		return nil, nil, nil, err
	}
	if d.empty() {
		return header, nil, nil, nil
	}
	c, err := d.bytes("content")
	if err != nil {
		return nil, nil, nil, err
	}
	if len(c) > 0 {
		content = append([]byte(nil), c...)
	}
	if d.empty() {
		return header, content, nil, nil
	}
	if raw, err = d.bytes("trailer section"); err != nil {
		return nil, nil, nil, err
	}
	if trailer, err = parseFields(raw, "trailer"); err != nil {
		return nil, nil, nil, err
	}
	for i, c := range d.b[d.off:] {
		if c != 0 {
			return nil, nil, nil, fmt.Errorf("%w: byte 0x%02x at offset %d", ErrPadding, c, d.off+i)
		}
	}
	return header, content, trailer, nil
}

// parseFields decodes the field lines of one field section. A field line
// that overruns the section is reported as truncated.
func parseFields(raw []byte, section string) ([]Field, error) {
	d := &decoder{b: raw, maxSize: maxVarint}
	var fs []Field
	for !d.empty() {
		name, err := d.bytes(section + " field name")
		if err != nil {
			return nil, err
		}
		value, err := d.bytes(section + " field value")
		if err != nil {
			return nil, err
		}
		f := Field{Name: string(name), Value: string(value)}
		if err := f.validate(); err != nil {
			return nil, fmt.Errorf("%w (%s field %d)", err, section, len(fs))
		}
		fs = append(fs, f)
	}
	return fs, nil
}

func appendString(b []byte, s string) []byte {
	b = appendVarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFields(b []byte, fs []Field) []byte {
	n := 0
	for _, f := range fs {
		n += varintLen(len(f.Name)) + len(f.Name) + varintLen(len(f.Value)) + len(f.Value)
	}
	b = appendVarint(b, uint64(n))
	for _, f := range fs {
		b = appendString(b, f.Name)
		b = appendString(b, f.Value)
	}
	return b
}

// appendSections appends the header section, content and trailer section,
// leaving out those that are empty and followed only by empty ones.
func appendSections(b []byte, header []Field, content []byte, trailer []Field) []byte {
	switch {
	case len(trailer) > 0:
		b = appendFields(b, header)
		b = appendVarint(b, uint64(len(content)))
		b = append(b, content...)
		return appendFields(b, trailer)
	case len(content) > 0:
		b = appendFields(b, header)
		b = appendVarint(b, uint64(len(content)))
		return append(b, content...)
	case len(header) > 0:
		return appendFields(b, header)
	}
	return b
}

func varintLen(n int) int {
	switch {
	case n < 1<<6:
		return 1
	case n < 1<<14:
		return 2
	case n < 1<<30:
		return 4
	}
	return 8
}

func (r *Request) validate() error {
	if r.Method == "" || !isToken(r.Method, false) {
		return fmt.Errorf("%w: method %q is not an HTTP token", ErrMalformed, r.Method)
	}
	for _, c := range []struct{ name, v string }{{"scheme", r.Scheme}, {"authority", r.Authority}, {"path", r.Path}} {
		if !isVisibleASCII(c.v) {
			return fmt.Errorf("%w: %s %q has characters outside visible ASCII", ErrMalformed, c.name, c.v)
		}
	}
	return validateFields(r.Header, r.Trailer)
}

func (r *Response) validate() error {
	if r.Status < 200 || r.Status > 599 {
		return fmt.Errorf("%w: final status code %d not in 200..599", ErrMalformed, r.Status)
	}
	return validateFields(r.Header, r.Trailer)
}

func validateFields(header, trailer []Field) error {
	for i, f := range header {
		if err := f.validate(); err != nil {
			return fmt.Errorf("%w (header field %d)", err, i)
		}
	}
	for i, f := range trailer {
		if err := f.validate(); err != nil {
			return fmt.Errorf("%w (trailer field %d)", err, i)
		}
	}
	return nil
}

// validate applies the HTTP/2 field rules that RFC 9292 adopts (RFC 9113,
// section 8.2.1), minus pseudo-fields, which this package never carries.
func (f Field) validate() error {
	if f.Name == "" {
		return fmt.Errorf("%w: empty field name", ErrMalformed)
	}
	if f.Name[0] == ':' {
		return fmt.Errorf("%w: pseudo-field %q", ErrMalformed, f.Name)
	}
	if !isToken(f.Name, true) {
		return fmt.Errorf("%w: field name %q is not a lowercase HTTP token", ErrMalformed, f.Name)
	}
	if strings.ContainsAny(f.Value, "\x00\r\n") {
		return fmt.Errorf("%w: field %q value contains NUL, CR or LF", ErrMalformed, f.Name)
	}
	if v := f.Value; v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
		return fmt.Errorf("%w: field %q value has leading or trailing whitespace", ErrMalformed, f.Name)
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2),
// optionally without uppercase letters.
func isToken(s string, lower bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case 'A' <= c && c <= 'Z':
			if lower {
				return false
			}
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
