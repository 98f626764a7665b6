package ohttp

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// isSentinel reports whether err wraps one of the package's errors.
func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzParseKeyConfigs(f *testing.F) {
	ex := loadRFC9458(f)
	_, hybrid, classic := testGateway(f)
	list, err := MarshalKeyConfigs([]KeyConfig{hybrid.KeyConfig(), classic.KeyConfig()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(list)
	f.Add(append([]byte{0, byte(len(ex.KeyConfig))}, ex.KeyConfig...))
	f.Add([]byte{0, 3, 1, 0, 0x10})
	f.Fuzz(func(t *testing.T, in []byte) {
		cs, err := ParseKeyConfigs(in)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v wraps no package error", err)
			}
			return
		}
		out, err := MarshalKeyConfigs(cs)
		if err != nil {
			t.Fatalf("parsed list does not marshal: %v", err)
		}
		if len(out) > len(in) {
			t.Fatalf("re-marshaled list longer than input")
		}
		again, err := ParseKeyConfigs(out)
		if err != nil || !reflect.DeepEqual(again, cs) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, cs)
		}
	})
}

func FuzzParseKeyConfig(f *testing.F) {
	ex := loadRFC9458(f)
	f.Add(ex.KeyConfig)
	f.Add([]byte{1, 0, 0x20})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseKeyConfig(in)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v wraps no package error", err)
			}
			return
		}
		// The format has one encoding per configuration.
		out, err := c.MarshalBinary()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("re-marshaled %x, %v; want %x", out, err, in)
		}
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	_, hybrid, classic := testGateway(f)
	for _, k := range []*PrivateKey{hybrid, classic} {
		b, err := k.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ParsePrivateKey(in)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v wraps no package error", err)
			}
			return
		}
		if _, err := k.MarshalBinary(); err != nil {
			t.Fatalf("parsed key does not marshal: %v", err)
		}
	})
}

// fuzzGateway holds the RFC 9458 example key (id 1) and a hybrid key (id 2)
// derived from a fixed seed, so that seeds stay valid across runs.
func fuzzGateway(t testing.TB) (*Gateway, *PrivateKey) {
	ex := loadRFC9458(t)
	classic, err := NewPrivateKey(1, KEMX25519, ex.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	hybrid, err := NewPrivateKey(2, KEMMLKEM768X25519, bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(classic, hybrid)
	if err != nil {
		t.Fatal(err)
	}
	return g, hybrid
}

func FuzzDecapsulateRequest(f *testing.F) {
	ex := loadRFC9458(f)
	g, hybrid := fuzzGateway(f)
	f.Add(ex.EncapsulatedRequest)
	req, _, err := EncapsulateRequest(hybrid.KeyConfig(), []byte("poll"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req)
	f.Add(ex.EncapsulatedRequest[:7])
	f.Fuzz(func(t *testing.T, in []byte) {
		plain, rc, err := g.DecapsulateRequest(in)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v wraps no package error", err)
			}
			return
		}
		kp, _ := kemFor(KEM(uint16(in[1])<<8 | uint16(in[2])))
		if len(plain) != len(in)-requestHeaderLen-kp.nenc-aeadTagSize {
			t.Fatalf("%d-byte plaintext from a %d-byte request", len(plain), len(in))
		}
		if _, err := rc.EncapsulateResponse(plain); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzDecapsulateResponse(f *testing.F) {
	ex := loadRFC9458(f)
	sym, _ := symFor(SymmetricSuite{KDFHKDFSHA256, AEADAES128GCM})
	rc := &RequestContext{responseKey{sym: sym, secret: ex.ResponseExportSecret, enc: ex.ClientPublicKey}}
	f.Add(ex.EncapsulatedResponse)
	f.Add(ex.EncapsulatedResponse[:16])
	f.Fuzz(func(t *testing.T, in []byte) {
		plain, err := rc.DecapsulateResponse(in)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error %v is neither ErrTruncated nor ErrDecrypt", err)
			}
			return
		}
		if len(plain) != len(in)-16-aeadTagSize {
			t.Fatalf("%d-byte plaintext from a %d-byte response", len(plain), len(in))
		}
	})
}
