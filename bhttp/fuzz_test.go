package bhttp

import (
	"bytes"
	"reflect"
	"testing"
)

func FuzzParseRequest(f *testing.F) {
	f.Add(mustHex(f, "00034745540568747470730b6578616d706c652e636f6d012f"))
	f.Add(mustHex(f, rfc9292Request))
	full, err := (&Request{Method: "POST", Scheme: "https", Path: "/p", Header: []Field{{"a", "b"}},
		Content: []byte{1, 2, 3}, Trailer: []Field{{"t", "x"}}}).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(full, 0, 0, 0))
	f.Add([]byte{0x02})
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseRequest(in, 4096)
		if err != nil {
			return
		}
		enc, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded request does not encode: %v", err)
		}
		// Varints are minimal and empty sections are zero bytes, so the
		// canonical encoding is the input with its zero tail cut off.
		if !bytes.HasPrefix(in, enc) || !allZero(in[len(enc):]) {
			t.Fatalf("input %x is not canonical encoding %x plus zeros", in, enc)
		}
		again, err := ParseRequest(enc, 4096)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-decoded %+v, %v; want %+v", again, err, r)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add(mustHex(f, "0140c8"))
	f.Add(mustHex(f, rfc9292Response))
	// 102 with header "r: x", then 200 with an empty header section and
	// explicit empty content and trailer sections.
	f.Add(mustHex(f, "01406604017201780040c8000000"))
	f.Add([]byte{0x03})
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseResponse(in, 4096)
		if err != nil {
			return
		}
		enc, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded response does not encode: %v", err)
		}
		if len(enc) > len(in) {
			t.Fatalf("canonical encoding %x longer than input %x", enc, in)
		}
		again, err := ParseResponse(enc, 4096)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-decoded %+v, %v; want %+v", again, err, r)
		}
	})
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
