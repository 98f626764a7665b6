package ohttp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// rfc9458 is the complete example of RFC 9458, appendix A.
type rfc9458 struct {
	SecretKey            []byte
	KeyConfig            []byte
	RequestBHTTP         []byte
	ClientPublicKey      []byte
	HPKEInfo             []byte
	EncapsulatedRequest  []byte
	ResponseBHTTP        []byte
	ResponseExportSecret []byte
	ResponseNonce        []byte
	ResponseAEADKey      []byte
	ResponseAEADNonce    []byte
	EncapsulatedResponse []byte
	KeyID                uint8
}

func loadRFC9458(t testing.TB) rfc9458 {
	t.Helper()
	raw, err := os.ReadFile("testdata/rfc9458-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		SecretKey            string `json:"gateway_x25519_secret_key"`
		KeyConfig            string `json:"key_config"`
		RequestBHTTP         string `json:"request_bhttp"`
		ClientPublicKey      string `json:"client_ephemeral_public_key"`
		HPKEInfo             string `json:"hpke_info"`
		EncapsulatedRequest  string `json:"encapsulated_request"`
		ResponseBHTTP        string `json:"response_bhttp"`
		ResponseExportSecret string `json:"response_export_secret"`
		ResponseNonce        string `json:"response_nonce"`
		ResponseAEADKey      string `json:"response_aead_key"`
		ResponseAEADNonce    string `json:"response_aead_nonce"`
		EncapsulatedResponse string `json:"encapsulated_response"`
		KeyID                uint8  `json:"key_id"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return rfc9458{
		SecretKey: h(j.SecretKey), KeyConfig: h(j.KeyConfig), RequestBHTTP: h(j.RequestBHTTP),
		ClientPublicKey: h(j.ClientPublicKey), HPKEInfo: h(j.HPKEInfo),
		EncapsulatedRequest: h(j.EncapsulatedRequest), ResponseBHTTP: h(j.ResponseBHTTP),
		ResponseExportSecret: h(j.ResponseExportSecret), ResponseNonce: h(j.ResponseNonce),
		ResponseAEADKey: h(j.ResponseAEADKey), ResponseAEADNonce: h(j.ResponseAEADNonce),
		EncapsulatedResponse: h(j.EncapsulatedResponse), KeyID: j.KeyID,
	}
}

// rfc9458Gateway is the example's gateway: its X25519 key under key id 1,
// accepting the example's implemented suite.
func rfc9458Gateway(t testing.TB, ex rfc9458) (*Gateway, *PrivateKey) {
	t.Helper()
	k, err := NewPrivateKey(ex.KeyID, KEMX25519, ex.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(k)
	if err != nil {
		t.Fatal(err)
	}
	return g, k
}

func TestRFC9458KeyConfig(t *testing.T) {
	ex := loadRFC9458(t)
	cfg, err := ParseKeyConfig(ex.KeyConfig)
	if err != nil {
		t.Fatal(err)
	}
	_, k := rfc9458Gateway(t, ex)
	want := KeyConfig{
		KeyID:     1,
		KEM:       KEMX25519,
		PublicKey: k.KeyConfig().PublicKey, // derived from the example's secret key
		Suites:    []SymmetricSuite{{KDFHKDFSHA256, AEADAES128GCM}, {KDFHKDFSHA256, 0x0003}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("parsed %+v, want %+v", cfg, want)
	}
	enc, err := cfg.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, ex.KeyConfig) {
		t.Fatalf("re-marshaled %x, want %x", enc, ex.KeyConfig)
	}

	// As an application/ohttp-keys list of one.
	list, err := MarshalKeyConfigs([]KeyConfig{cfg})
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{0, byte(len(ex.KeyConfig))}, ex.KeyConfig...); !bytes.Equal(list, want) {
		t.Fatalf("list %x, want %x", list, want)
	}
	cfgs, err := ParseKeyConfigs(list)
	if err != nil || len(cfgs) != 1 || !reflect.DeepEqual(cfgs[0], cfg) {
		t.Fatalf("ParseKeyConfigs = %+v, %v", cfgs, err)
	}
}

func TestRFC9458Gateway(t *testing.T) {
	ex := loadRFC9458(t)
	g, _ := rfc9458Gateway(t, ex)
	if info := requestInfo(ex.EncapsulatedRequest[:requestHeaderLen]); !bytes.Equal(info, ex.HPKEInfo) {
		t.Fatalf("HPKE info %x, want %x", info, ex.HPKEInfo)
	}
	plain, rc, err := g.DecapsulateRequest(ex.EncapsulatedRequest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, ex.RequestBHTTP) {
		t.Fatalf("request %x, want %x", plain, ex.RequestBHTTP)
	}
	if !bytes.Equal(rc.secret, ex.ResponseExportSecret) {
		t.Fatalf("exported secret %x, want %x", rc.secret, ex.ResponseExportSecret)
	}
	key, nonce, err := rc.sym.responseKeyNonce(rc.secret, rc.enc, ex.ResponseNonce)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, ex.ResponseAEADKey) || !bytes.Equal(nonce, ex.ResponseAEADNonce) {
		t.Fatalf("response key %x nonce %x, want %x %x", key, nonce, ex.ResponseAEADKey, ex.ResponseAEADNonce)
	}
	resp, err := rc.encapsulateResponse(bytes.NewReader(ex.ResponseNonce), ex.ResponseBHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp, ex.EncapsulatedResponse) {
		t.Fatalf("encapsulated response %x, want %x", resp, ex.EncapsulatedResponse)
	}
}

func TestRFC9458Client(t *testing.T) {
	ex := loadRFC9458(t)
	cfg, err := ParseKeyConfig(ex.KeyConfig)
	if err != nil {
		t.Fatal(err)
	}
	// The client's ephemeral key is random, so the ciphertext differs from
	// the example, but the header and length must match and the example's
	// gateway must open it.
	req, _, err := EncapsulateRequest(cfg, ex.RequestBHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(req[:requestHeaderLen], ex.EncapsulatedRequest[:requestHeaderLen]) || len(req) != len(ex.EncapsulatedRequest) {
		t.Fatalf("request header %x, length %d; want %x, %d", req[:requestHeaderLen], len(req), ex.EncapsulatedRequest[:requestHeaderLen], len(ex.EncapsulatedRequest))
	}
	g, _ := rfc9458Gateway(t, ex)
	if plain, _, err := g.DecapsulateRequest(req); err != nil || !bytes.Equal(plain, ex.RequestBHTTP) {
		t.Fatalf("gateway opened %x, %v", plain, err)
	}

	// The client's side of the example's response, from the secret its
	// HPKE context would export.
	sym, _ := symFor(SymmetricSuite{KDFHKDFSHA256, AEADAES128GCM})
	rc := &RequestContext{responseKey{sym: sym, secret: ex.ResponseExportSecret, enc: ex.ClientPublicKey}}
	resp, err := rc.DecapsulateResponse(ex.EncapsulatedResponse)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp, ex.ResponseBHTTP) {
		t.Fatalf("response %x, want %x", resp, ex.ResponseBHTTP)
	}
}
