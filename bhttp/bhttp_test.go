package bhttp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// rfc9458Example holds the Binary HTTP messages of RFC 9458, appendix A.
type rfc9458Example struct {
	RequestBHTTP  string `json:"request_bhttp"`
	ResponseBHTTP string `json:"response_bhttp"`
}

func loadExample(t *testing.T) (req, resp []byte) {
	t.Helper()
	raw, err := os.ReadFile("testdata/rfc9458-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var ex rfc9458Example
	if err := json.Unmarshal(raw, &ex); err != nil {
		t.Fatal(err)
	}
	return mustHex(t, ex.RequestBHTTP), mustHex(t, ex.ResponseBHTTP)
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRFC9458ExampleRequest(t *testing.T) {
	raw, _ := loadExample(t)
	r, err := ParseRequest(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{Method: "GET", Scheme: "https", Authority: "example.com", Path: "/"}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("decoded %+v, want %+v", r, want)
	}
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, raw) {
		t.Fatalf("re-encoded %x, want %x", enc, raw)
	}
}

func TestRFC9458ExampleResponse(t *testing.T) {
	_, raw := loadExample(t)
	r, err := ParseResponse(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || r.Header != nil || r.Content != nil || r.Trailer != nil {
		t.Fatalf("decoded %+v, want a bare 200", r)
	}
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, raw) {
		t.Fatalf("re-encoded %x, want %x", enc, raw)
	}
}

// The known-length examples of RFC 9292, section 5.
const (
	rfc9292Request = `
		00034745 54056874 74707300 0a2f6865 6c6c6f2e 74787440 6c0a7573 65722d61
		67656e74 34637572 6c2f372e 31362e33 206c6962 6375726c 2f372e31 362e3320
		4f70656e 53534c2f 302e392e 376c207a 6c69622f 312e322e 3304686f 73740f77
		77772e65 78616d70 6c652e63 6f6d0f61 63636570 742d6c61 6e677561 67650665
		6e2c206d 690000`
	rfc9292Response = `
		0140c800 1d546869 7320636f 6e74656e 7420636f 6e746169 6e732043 524c462e
		0d0a0d07 74726169 6c657204 74657874`
)

func TestRFC9292ExampleRequest(t *testing.T) {
	raw := mustHex(t, rfc9292Request)
	r, err := ParseRequest(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		Method: "GET", Scheme: "https", Authority: "", Path: "/hello.txt",
		Header: []Field{
			{"user-agent", "curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"},
			{"host", "www.example.com"},
			{"accept-language", "en, mi"},
		},
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("decoded %+v, want %+v", r, want)
	}
	// The example ends with an empty content and an empty trailer section,
	// which the encoder leaves out; RFC 9292 notes that both can go.
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, raw[:len(raw)-2]) {
		t.Fatalf("re-encoded %x, want %x", enc, raw[:len(raw)-2])
	}
}

func TestRFC9292ExampleResponse(t *testing.T) {
	raw := mustHex(t, rfc9292Response)
	r, err := ParseResponse(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &Response{
		Status:  200,
		Content: []byte("This content contains CRLF.\r\n"),
		Trailer: []Field{{"trailer", "text"}},
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("decoded %+v, want %+v", r, want)
	}
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, raw) {
		t.Fatalf("re-encoded %x, want %x", enc, raw)
	}
}

func TestInformationalResponsesAreSkipped(t *testing.T) {
	final := &Response{Status: 204, Header: []Field{{"date", "Mon, 27 Jul 2009 12:28:53 GMT"}}}
	body, err := final.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// framing 1, then 102 with one header field and 103 with none, then
	// the final response's status and sections.
	msg := appendVarint(nil, 1)
	msg = appendVarint(msg, 102)
	msg = appendFields(msg, []Field{{"running", `"sleep 15"`}})
	msg = appendVarint(msg, 103)
	msg = appendFields(msg, nil)
	msg = append(msg, body[1:]...)
	got, err := ParseResponse(msg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, final) {
		t.Fatalf("decoded %+v, want %+v", got, final)
	}
}

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5}, 70_000) // content length needs a 4-byte varint
	reqs := []*Request{
		{Method: "POST", Scheme: "https", Authority: "backend.example:8443", Path: "/v1/exposure?day=20000",
			Header:  []Field{{"content-type", "application/octet-stream"}, {"x-a", ""}, {"x-a", "second"}},
			Content: []byte{0, 1, 2, 3}},
		{Method: "PUT", Scheme: "https", Path: "/only-trailer", Trailer: []Field{{"digest", "sha-256=abc"}}},
		{Method: "GET", Scheme: "https", Authority: "a", Path: "/", Content: big},
		{Method: "OPTIONS", Scheme: "", Authority: "", Path: "*"},
		// Field lines whose lengths need 2- and 4-byte varints.
		{Method: "GET", Scheme: "https", Path: "/", Header: []Field{
			{strings.Repeat("n", 100), strings.Repeat("v", 100)},
			{"x-big", strings.Repeat("w", 20_000)},
		}},
	}
	for _, r := range reqs {
		for _, padded := range []bool{false, true} {
			marshal := r.MarshalBinary
			if padded {
				marshal = r.MarshalPadded
			}
			enc, err := marshal()
			if err != nil {
				t.Fatal(err)
			}
			if padded {
				if c, _ := SizeClass(len(enc)); c != len(enc) {
					t.Errorf("padded request is %d bytes, not a size class", len(enc))
				}
			}
			got, err := ParseRequest(enc, 0)
			if err != nil {
				t.Fatalf("%s %s (padded %v): %v", r.Method, r.Path, padded, err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("round trip (padded %v): got %+v, want %+v", padded, got, r)
			}
		}
	}
	resps := []*Response{
		{Status: 200},
		{Status: 404, Header: []Field{{"content-type", "text/plain"}}, Content: []byte("no such test\n")},
		{Status: 599, Content: big, Trailer: []Field{{"server-timing", "db;dur=53"}}},
	}
	for _, r := range resps {
		for _, padded := range []bool{false, true} {
			marshal := r.MarshalBinary
			if padded {
				marshal = r.MarshalPadded
			}
			enc, err := marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseResponse(enc, 0)
			if err != nil {
				t.Fatalf("status %d (padded %v): %v", r.Status, padded, err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("round trip (padded %v): got %+v, want %+v", padded, got, r)
			}
		}
	}
}

func TestSizeClasses(t *testing.T) {
	classes := SizeClasses()
	want := []int{1 << 10, 3 << 9, 2 << 10, 3 << 10, 4 << 10, 6 << 10, 8 << 10, 12 << 10, 16 << 10, 24 << 10, 32 << 10, 48 << 10,
		64 << 10, 96 << 10, 128 << 10, 192 << 10, 256 << 10, 384 << 10, 512 << 10, 768 << 10, 1 << 20}
	if !reflect.DeepEqual(classes, want) {
		t.Fatalf("SizeClasses() = %v, want %v", classes, want)
	}
	if classes[len(classes)-1] != MaxSize {
		t.Fatalf("largest class %d, want MaxSize %d", classes[len(classes)-1], MaxSize)
	}
	classes[0] = 7 // the caller's copy must not change the package's classes
	if SizeClasses()[0] == 7 {
		t.Fatal("SizeClasses returned the package's own array")
	}
	prev := 0
	for _, c := range SizeClasses() {
		for _, n := range []int{prev + 1, c - 1, c} {
			got, err := SizeClass(n)
			if err != nil || got != c {
				t.Errorf("SizeClass(%d) = %d, %v; want %d", n, got, err, c)
			}
			padded, err := Pad(make([]byte, n))
			if err != nil || len(padded) != c {
				t.Errorf("Pad(%d bytes) = %d bytes, %v; want %d", n, len(padded), err, c)
			}
		}
		prev = c
	}
	if _, err := SizeClass(MaxSize + 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("SizeClass(MaxSize+1) error %v, want ErrTooLarge", err)
	}
	r := &Request{Method: "POST", Scheme: "https", Path: "/", Content: make([]byte, MaxSize)}
	if _, err := r.MarshalPadded(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MarshalPadded of a %d-byte body: error %v, want ErrTooLarge", MaxSize, err)
	}
}

func TestPadDoesNotLeakSpareCapacity(t *testing.T) {
	buf := bytes.Repeat([]byte{0xff}, 2048)
	msg, err := (&Response{Status: 200}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	padded, err := Pad(append(buf[:0], msg...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseResponse(padded, 0); err != nil {
		t.Fatalf("padded message in a dirty buffer: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	exReq, _ := loadExample(t)
	hexcat := func(parts ...string) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, mustHex(t, p)...)
		}
		return b
	}
	ex := hex.EncodeToString(exReq)
	tests := []struct {
		name     string
		response bool
		in       []byte
		maxSize  int
		want     error
	}{
		{"empty", false, nil, 0, ErrTruncated},
		{"framing only", false, hexcat("00"), 0, ErrTruncated},
		{"cut in method", false, hexcat("000347"), 0, ErrTruncated},
		{"cut before path", false, hexcat("00034745540568747470730b6578616d706c652e636f6d"), 0, ErrTruncated},
		{"cut varint", false, hexcat("0003474554056874747073", "40"), 0, ErrTruncated},
		{"cut in header section", false, hexcat(ex, "05", "0161"), 0, ErrTruncated},
		{"field overruns its section", false, hexcat(ex, "03", "016105"), 0, ErrTruncated},
		{"cut in content", false, hexcat(ex, "00", "0a", "0102"), 0, ErrTruncated},
		{"non-zero padding", false, hexcat(ex, "000000", "07"), 0, ErrPadding},
		{"non-zero byte deep in padding", false, hexcat(ex, "0000000000000000", "80"), 0, ErrPadding},
		{"input over limit", false, hexcat(ex, "00000000"), len(exReq) + 3, ErrTooLarge},
		{"length over limit", false, hexcat("00", "5000", "474554"), 1024, ErrTooLarge},
		{"largest varint length", false, hexcat("00", "ffffffffffffffff"), 0, ErrTooLarge},
		{"content over limit", false, hexcat(ex, "00", "4401"), 1024, ErrTooLarge},
		{"long framing varint", false, hexcat("4000", "034745540568747470730b6578616d706c652e636f6d012f"), 0, ErrInvalidVarint},
		{"long method length", false, hexcat("00", "4003", "474554"), 0, ErrInvalidVarint},
		{"8-byte small length", false, hexcat("00", "c000000000000003", "474554"), 0, ErrInvalidVarint},
		{"response framing", false, hexcat("01", "40c8"), 0, ErrMalformed},
		{"unknown framing", false, hexcat("04"), 0, ErrMalformed},
		{"indeterminate request", false, hexcat("02", "03474554"), 0, ErrUnsupported},
		{"empty method", false, hexcat("00", "00", "00", "00", "00"), 0, ErrMalformed},
		{"space in method", false, hexcat("00", "03474520", "00", "00", "00"), 0, ErrMalformed},
		{"space in path", false, hexcat("00", "03474554", "00", "00", "022f20"), 0, ErrMalformed},
		{"empty field name", false, hexcat(ex, "02", "0000"), 0, ErrMalformed},
		{"uppercase field name", false, hexcat(ex, "03", "014100"), 0, ErrMalformed},
		{"pseudo-field", false, hexcat(ex, "09", "073a737461747573", "00"), 0, ErrMalformed},
		{"CR in value", false, hexcat(ex, "04", "0161", "010d"), 0, ErrMalformed},
		{"leading space in value", false, hexcat(ex, "05", "0161", "022061"), 0, ErrMalformed},
		{"bad trailer field", false, hexcat(ex, "00", "00", "03", "014100"), 0, ErrMalformed},

		{"response empty", true, nil, 0, ErrTruncated},
		{"response no status", true, hexcat("01"), 0, ErrTruncated},
		{"response cut status", true, hexcat("0140"), 0, ErrTruncated},
		{"informational without final", true, hexcat("01", "4066", "00"), 0, ErrTruncated},
		{"informational without header", true, hexcat("01", "4066"), 0, ErrTruncated},
		{"status 99", true, hexcat("01", "4063"), 0, ErrMalformed},
		{"status 600", true, hexcat("01", "4258"), 0, ErrMalformed},
		{"request framing", true, hexcat(ex), 0, ErrMalformed},
		{"indeterminate response", true, hexcat("03", "40c8"), 0, ErrUnsupported},
		{"response long status", true, hexcat("01", "800000c8"), 0, ErrInvalidVarint},
		{"response non-zero padding", true, hexcat("0140c8", "000000", "01"), 0, ErrPadding},
		{"response over limit", true, hexcat("0140c8", "00", "4401"), 64, ErrTooLarge},
		{"response bad field", true, hexcat("0140c8", "03", "015a00"), 0, ErrMalformed},
	}
	sentinels := []error{ErrTruncated, ErrPadding, ErrTooLarge, ErrInvalidVarint, ErrMalformed, ErrUnsupported}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.response {
				_, err = ParseResponse(tt.in, tt.maxSize)
			} else {
				_, err = ParseRequest(tt.in, tt.maxSize)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error %v also matches %v", err, s)
				}
			}
		})
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	tests := []struct {
		name string
		m    interface{ MarshalBinary() ([]byte, error) }
	}{
		{"empty method", &Request{Scheme: "https", Path: "/"}},
		{"method with space", &Request{Method: "G T", Path: "/"}},
		{"authority with newline", &Request{Method: "GET", Authority: "a\nb"}},
		{"uppercase header", &Request{Method: "GET", Header: []Field{{"Host", "a"}}}},
		{"pseudo header", &Request{Method: "GET", Header: []Field{{":path", "/"}}}},
		{"LF in trailer value", &Request{Method: "GET", Trailer: []Field{{"a", "b\nc"}}}},
		{"status 100", &Response{Status: 100}},
		{"status 0", &Response{}},
		{"status 600", &Response{Status: 600}},
		{"empty field name", &Response{Status: 200, Header: []Field{{"", "x"}}}},
		{"trailing tab", &Response{Status: 200, Trailer: []Field{{"a", "x\t"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.m.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want ErrMalformed", err)
			}
		})
	}
}

func TestVarintEncoding(t *testing.T) {
	// Each boundary value must decode to itself and use the shortest form.
	for _, tt := range []struct {
		v   uint64
		len int
	}{{0, 1}, {63, 1}, {64, 2}, {16383, 2}, {16384, 4}, {1<<30 - 1, 4}, {1 << 30, 8}, {maxVarint, 8}} {
		b := appendVarint(nil, tt.v)
		if len(b) != tt.len {
			t.Errorf("%d encoded in %d bytes, want %d", tt.v, len(b), tt.len)
		}
		d := &decoder{b: b}
		got, err := d.varint("v")
		if err != nil || got != tt.v || !d.empty() {
			t.Errorf("%d: decoded %d, %v", tt.v, got, err)
		}
	}
}
