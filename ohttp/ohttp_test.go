package ohttp

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// testGateway returns a gateway serving a hybrid key (id 1) and an X25519
// key (id 2), as conftrace's backend does.
func testGateway(t testing.TB) (*Gateway, *PrivateKey, *PrivateKey) {
	t.Helper()
	hybrid, err := GenerateKey(1, KEMMLKEM768X25519)
	if err != nil {
		t.Fatal(err)
	}
	classic, err := GenerateKey(2, KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(hybrid, classic)
	if err != nil {
		t.Fatal(err)
	}
	return g, hybrid, classic
}

// roundTrip runs one request and response through client and gateway and
// checks the plaintexts arrive intact and the lengths are fixed by suite.
func roundTrip(t testing.TB, g *Gateway, cfg KeyConfig, reqPlain, respPlain []byte) {
	t.Helper()
	encReq, client, err := EncapsulateRequest(cfg, reqPlain)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := kemFor(cfg.KEM)
	if want := requestHeaderLen + kp.nenc + len(reqPlain) + aeadTagSize; len(encReq) != want {
		t.Errorf("%v request of %d bytes encapsulates to %d, want %d", cfg.KEM, len(reqPlain), len(encReq), want)
	}
	gotReq, server, err := g.DecapsulateRequest(encReq)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotReq, reqPlain) {
		t.Fatalf("gateway got %x, want %x", gotReq, reqPlain)
	}
	encResp, err := server.EncapsulateResponse(respPlain)
	if err != nil {
		t.Fatal(err)
	}
	if want := server.sym.nk + len(respPlain) + aeadTagSize; len(encResp) != want {
		t.Errorf("%v response of %d bytes encapsulates to %d, want %d", cfg.KEM, len(respPlain), len(encResp), want)
	}
	gotResp, err := client.DecapsulateResponse(encResp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotResp, respPlain) {
		t.Fatalf("client got %x, want %x", gotResp, respPlain)
	}
}

func TestRoundTrip(t *testing.T) {
	g, hybrid, classic := testGateway(t)
	req := bytes.Repeat([]byte("request "), 128)
	resp := bytes.Repeat([]byte("response"), 512)
	for _, k := range []*PrivateKey{hybrid, classic} {
		t.Run(k.cfg.KEM.String(), func(t *testing.T) {
			roundTrip(t, g, k.KeyConfig(), req, resp)
			roundTrip(t, g, k.KeyConfig(), nil, nil)
		})
	}
}

func TestRoundTripEverySuite(t *testing.T) {
	all := []SymmetricSuite{{KDFHKDFSHA256, AEADAES128GCM}, {KDFHKDFSHA256, AEADAES256GCM}}
	for _, kem := range []KEM{KEMX25519, KEMMLKEM768X25519} {
		for _, s := range all {
			t.Run(fmt.Sprintf("%v/%v", kem, s), func(t *testing.T) {
				k, err := GenerateKey(9, kem, all...)
				if err != nil {
					t.Fatal(err)
				}
				g, err := NewGateway(k)
				if err != nil {
					t.Fatal(err)
				}
				cfg := k.KeyConfig()
				cfg.Suites = []SymmetricSuite{s} // the client uses s
				roundTrip(t, g, cfg, []byte("poll"), []byte("exposed: no"))
			})
		}
	}
}

func TestKeyListToClient(t *testing.T) {
	g, hybrid, classic := testGateway(t)
	list, err := MarshalKeyConfigs(g.KeyConfigs())
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := ParseKeyConfigs(list)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfgs, []KeyConfig{hybrid.KeyConfig(), classic.KeyConfig()}) {
		t.Fatalf("parsed list %+v", cfgs)
	}
	for _, order := range [][]KeyConfig{cfgs, {cfgs[1], cfgs[0]}} {
		cfg, err := SelectKeyConfig(order)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.KEM != KEMMLKEM768X25519 || cfg.KeyID != 1 {
			t.Fatalf("selected %v key %d, want the hybrid key 1", cfg.KEM, cfg.KeyID)
		}
	}
	cfg, _ := SelectKeyConfig(cfgs)
	roundTrip(t, g, cfg, []byte("hello"), []byte("world"))
}

func TestSelectKeyConfig(t *testing.T) {
	_, hybrid, classic := testGateway(t)
	h, c := hybrid.KeyConfig(), classic.KeyConfig()
	unusableHybrid := h.clone()
	unusableHybrid.Suites = []SymmetricSuite{{KDFHKDFSHA256, 0x0003}}
	unknown := KeyConfig{KeyID: 7, KEM: 0x0010, Suites: c.Suites}
	tests := []struct {
		name string
		in   []KeyConfig
		want uint8
		err  error
	}{
		{"hybrid first", []KeyConfig{h, c}, 1, nil},
		{"hybrid last", []KeyConfig{unknown, c, h}, 1, nil},
		{"hybrid without usable suite", []KeyConfig{unusableHybrid, c}, 2, nil},
		{"only unknown", []KeyConfig{unknown, unusableHybrid}, 0, ErrUnsupportedSuite},
		{"empty", nil, 0, ErrUnsupportedSuite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SelectKeyConfig(tt.in)
			if !errors.Is(err, tt.err) || (err == nil && got.KeyID != tt.want) {
				t.Fatalf("got key %d, %v; want %d, %v", got.KeyID, err, tt.want, tt.err)
			}
		})
	}
}

func TestRequestsAreUnlinkable(t *testing.T) {
	_, hybrid, _ := testGateway(t)
	a, _, err := EncapsulateRequest(hybrid.KeyConfig(), []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := EncapsulateRequest(hybrid.KeyConfig(), []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[requestHeaderLen:], b[requestHeaderLen:]) {
		t.Fatal("two encapsulations of one request are equal")
	}
}

func TestResponseBoundToItsRequest(t *testing.T) {
	g, hybrid, _ := testGateway(t)
	req1, client1, _ := EncapsulateRequest(hybrid.KeyConfig(), []byte("one"))
	_, client2, _ := EncapsulateRequest(hybrid.KeyConfig(), []byte("two"))
	_, server1, err := g.DecapsulateRequest(req1)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := server1.EncapsulateResponse([]byte("for one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client2.DecapsulateResponse(resp); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other request's context opened the response: %v", err)
	}
	if got, err := client1.DecapsulateResponse(resp); err != nil || string(got) != "for one" {
		t.Fatalf("own context: %q, %v", got, err)
	}
}

func TestPrivateKeySerialization(t *testing.T) {
	for _, kem := range []KEM{KEMX25519, KEMMLKEM768X25519} {
		t.Run(kem.String(), func(t *testing.T) {
			k, err := GenerateKey(5, kem, SymmetricSuite{KDFHKDFSHA256, AEADAES256GCM}, SymmetricSuite{KDFHKDFSHA256, AEADAES128GCM})
			if err != nil {
				t.Fatal(err)
			}
			b, err := k.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			restored, err := ParsePrivateKey(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(restored.KeyConfig(), k.KeyConfig()) {
				t.Fatalf("restored config %+v, want %+v", restored.KeyConfig(), k.KeyConfig())
			}
			// A request made to the old key before a restart opens with
			// the restored one.
			g, err := NewGateway(restored)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, g, k.KeyConfig(), []byte("before restart"), []byte("after"))
		})
	}
}

func TestPrivateKeyErrors(t *testing.T) {
	a, _ := GenerateKey(1, KEMX25519)
	b, _ := GenerateKey(1, KEMX25519)
	good, _ := a.MarshalBinary()
	other, _ := b.MarshalBinary()
	swapped := append(bytes.Clone(good[:len(good)-32]), other[len(other)-32:]...)
	chacha := bytes.Clone(good)
	chacha[3+1+2+32+2+3] = 0x03 // the AEAD id of the only suite
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version", append([]byte{2}, good[1:]...), ErrMalformed},
		{"cut config", good[:20], ErrTruncated},
		{"cut secret", good[:len(good)-1], ErrTruncated},
		{"trailing", append(bytes.Clone(good), 0), ErrMalformed},
		{"secret of another key", swapped, ErrMalformed},
		{"unimplemented suite", chacha, ErrUnsupportedSuite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParsePrivateKey(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := GenerateKey(1, 0x0010); !errors.Is(err, ErrUnsupportedSuite) {
		t.Errorf("P-256 key: %v, want ErrUnsupportedSuite", err)
	}
	if _, err := GenerateKey(1, KEMX25519, SymmetricSuite{KDFHKDFSHA256, 0x0003}); !errors.Is(err, ErrUnsupportedSuite) {
		t.Errorf("ChaCha20Poly1305 suite: %v, want ErrUnsupportedSuite", err)
	}
	if _, err := NewPrivateKey(1, KEMMLKEM768X25519, make([]byte, 31)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short seed: %v, want ErrMalformed", err)
	}
	if _, err := NewGateway(a, b); err == nil {
		t.Error("NewGateway accepted two keys with key id 1")
	}
}
