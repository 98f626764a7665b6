package ohttp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

var sentinels = []error{ErrTruncated, ErrMalformed, ErrTooLarge, ErrUnknownKeyID, ErrUnsupportedSuite, ErrDecrypt}

// checkErr fails unless err matches want and no other sentinel.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Errorf("error %v also matches %v", err, s)
		}
	}
}

func TestDecapsulateRequestErrors(t *testing.T) {
	ex := loadRFC9458(t)
	// A gateway whose key id 1 accepts both AES suites, so that a header
	// switched from one to the other passes the suite check and must be
	// caught by the HPKE info binding.
	k, err := NewPrivateKey(1, KEMX25519, ex.SecretKey,
		SymmetricSuite{KDFHKDFSHA256, AEADAES128GCM}, SymmetricSuite{KDFHKDFSHA256, AEADAES256GCM})
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(k)
	if err != nil {
		t.Fatal(err)
	}
	req := ex.EncapsulatedRequest
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(req)
		f(b)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"over the limit", req, len(req) - 1, ErrTooLarge},
		{"over the default limit", make([]byte, DefaultMaxRequestSize+1), 0, ErrTooLarge},
		{"empty", nil, 0, ErrTruncated},
		{"cut header", req[:6], 0, ErrTruncated},
		{"cut encapsulated key", req[:7+31], 0, ErrTruncated},
		{"no room for a tag", req[:7+32+15], 0, ErrTruncated},
		{"unknown key id", mod(func(b []byte) { b[0] = 2 }), 0, ErrUnknownKeyID},
		{"KEM not the key's", mod(func(b []byte) { binary.BigEndian.PutUint16(b[1:], uint16(KEMMLKEM768X25519)) }), 0, ErrUnsupportedSuite},
		{"KDF not offered", mod(func(b []byte) { binary.BigEndian.PutUint16(b[3:], 0x0002) }), 0, ErrUnsupportedSuite},
		{"AEAD not offered", mod(func(b []byte) { binary.BigEndian.PutUint16(b[5:], 0x0003) }), 0, ErrUnsupportedSuite},
		{"AEAD switched to another offered", mod(func(b []byte) { binary.BigEndian.PutUint16(b[5:], uint16(AEADAES256GCM)) }), 0, ErrDecrypt},
		{"ciphertext flipped", mod(func(b []byte) { b[len(b)-20] ^= 1 }), 0, ErrDecrypt},
		{"tag flipped", mod(func(b []byte) { b[len(b)-1] ^= 0x80 }), 0, ErrDecrypt},
		{"encapsulated key flipped", mod(func(b []byte) { b[7] ^= 1 }), 0, ErrDecrypt},
		{"low-order encapsulated key", mod(func(b []byte) { clear(b[7 : 7+32]) }), 0, ErrDecrypt},
		{"ciphertext cut", req[:len(req)-1], 0, ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g.MaxRequestSize = tt.max
			_, rc, err := g.DecapsulateRequest(tt.in)
			checkErr(t, err, tt.want)
			if rc != nil {
				t.Error("context returned with an error")
			}
		})
	}
}

func TestDecapsulateResponseErrors(t *testing.T) {
	ex := loadRFC9458(t)
	sym, _ := symFor(SymmetricSuite{KDFHKDFSHA256, AEADAES128GCM})
	rc := &RequestContext{responseKey{sym: sym, secret: ex.ResponseExportSecret, enc: ex.ClientPublicKey}}
	resp := ex.EncapsulatedResponse
	flip := func(i int) []byte {
		b := bytes.Clone(resp)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"nonce only", resp[:16], ErrTruncated},
		{"no room for a tag", resp[:16+15], ErrTruncated},
		{"nonce flipped", flip(0), ErrDecrypt},
		{"ciphertext flipped", flip(16), ErrDecrypt},
		{"tag flipped", flip(len(resp) - 1), ErrDecrypt},
		{"cut", resp[:len(resp)-1], ErrDecrypt},
		{"extended", append(bytes.Clone(resp), 0), ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rc.DecapsulateResponse(tt.in)
			checkErr(t, err, tt.want)
		})
	}
}

func TestKeyConfigErrors(t *testing.T) {
	ex := loadRFC9458(t)
	cfg := ex.KeyConfig // id 1, X25519, 32-byte key, 2 suites
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(cfg)) }
	setSymLen := func(n uint16) []byte {
		return with(func(b []byte) []byte { binary.BigEndian.PutUint16(b[35:], n); return b })
	}
	badHybrid := append([]byte{3, 0x64, 0x7a}, bytes.Repeat([]byte{0xff}, 1216)...)
	badHybrid = append(badHybrid, 0, 4, 0, 1, 0, 2)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"cut header", cfg[:2], ErrTruncated},
		{"unknown KEM", with(func(b []byte) []byte { b[2] = 0x10; return b }), ErrUnsupportedSuite},
		{"cut public key", cfg[:20], ErrTruncated},
		{"no algorithms length", cfg[:35], ErrTruncated},
		{"zero algorithms", setSymLen(0)[:37], ErrMalformed},
		{"algorithms length not a multiple of 4", setSymLen(6), ErrMalformed},
		{"cut algorithms", cfg[:len(cfg)-1], ErrTruncated},
		{"trailing byte", append(bytes.Clone(cfg), 0), ErrMalformed},
		{"invalid ML-KEM public key", badHybrid, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyConfig(tt.in)
			checkErr(t, err, tt.want)
		})
	}
}

func TestKeyConfigListErrors(t *testing.T) {
	ex := loadRFC9458(t)
	entry := func(cfg []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(cfg))), cfg...) }
	good := entry(ex.KeyConfig)
	p256 := bytes.Clone(ex.KeyConfig)
	p256[2] = 0x10 // DHKEM(P-256): a KEM this package does not implement
	unknown := entry(append(p256, 0xaa, 0xbb))
	trailing := entry(append(bytes.Clone(ex.KeyConfig), 0))

	cfgs, err := ParseKeyConfigs(append(bytes.Clone(unknown), good...))
	if err != nil || len(cfgs) != 1 || cfgs[0].KeyID != 1 {
		t.Fatalf("list with an unknown KEM: %+v, %v; want the X25519 configuration alone", cfgs, err)
	}

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"cut length", good[:1], ErrTruncated},
		{"entry longer than the list", good[:len(good)-1], ErrTruncated},
		{"second entry cut", append(bytes.Clone(good), good[:10]...), ErrTruncated},
		{"zero-length entry", append(bytes.Clone(good), 0, 0), ErrTruncated},
		{"entry with trailing byte", append(bytes.Clone(good), trailing...), ErrMalformed},
		{"only unknown KEMs", unknown, ErrUnsupportedSuite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyConfigs(tt.in)
			checkErr(t, err, tt.want)
		})
	}
}

func TestMarshalKeyConfigErrors(t *testing.T) {
	ex := loadRFC9458(t)
	good, err := ParseKeyConfig(ex.KeyConfig)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []KeyConfig
		want error
	}{
		{"no configurations", nil, ErrMalformed},
		{"unknown KEM", []KeyConfig{{KeyID: 1, KEM: 0x0010, PublicKey: make([]byte, 65), Suites: good.Suites}}, ErrUnsupportedSuite},
		{"short public key", []KeyConfig{{KeyID: 1, KEM: KEMX25519, PublicKey: make([]byte, 31), Suites: good.Suites}}, ErrMalformed},
		{"no suites", []KeyConfig{{KeyID: 1, KEM: KEMX25519, PublicKey: good.PublicKey}}, ErrMalformed},
		{"second bad", []KeyConfig{good, {KeyID: 2, KEM: KEMX25519}}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := MarshalKeyConfigs(tt.in)
			checkErr(t, err, tt.want)
		})
	}
}

func TestEncapsulateRequestErrors(t *testing.T) {
	ex := loadRFC9458(t)
	good, err := ParseKeyConfig(ex.KeyConfig)
	if err != nil {
		t.Fatal(err)
	}
	badKey := good.clone()
	badKey.PublicKey = badKey.PublicKey[:31]
	tests := []struct {
		name string
		cfg  KeyConfig
		want error
	}{
		{"unknown KEM", KeyConfig{KeyID: 1, KEM: 0x0010, PublicKey: good.PublicKey, Suites: good.Suites}, ErrUnsupportedSuite},
		{"no implemented suite", KeyConfig{KeyID: 1, KEM: KEMX25519, PublicKey: good.PublicKey, Suites: []SymmetricSuite{{0x0002, AEADAES128GCM}, {KDFHKDFSHA256, 0x0003}}}, ErrUnsupportedSuite},
		{"no suites", KeyConfig{KeyID: 1, KEM: KEMX25519, PublicKey: good.PublicKey}, ErrUnsupportedSuite},
		{"bad public key", badKey, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := EncapsulateRequest(tt.cfg, []byte("x"))
			checkErr(t, err, tt.want)
		})
	}
}
