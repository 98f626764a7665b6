package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/ohttp"
)

// SetBundle replaces the served bundle, the key list and the gateway's keys
// at once, safely while requests are served.
func TestSetBundle(t *testing.T) {
	s, _ := newTestServer(t)
	get := func(path string) []byte {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, rec.Code)
		}
		return rec.Body.Bytes()
	}
	post := func(cfg ohttp.KeyConfig) int {
		enc, _, err := ohttp.EncapsulateRequest(cfg, inner(t, api.PathDecoy, ""))
		if err != nil {
			t.Error(err)
			return 0
		}
		r := httptest.NewRequest(http.MethodPost, api.PathGateway, bytes.NewReader(enc))
		r.Header.Set("Content-Type", ohttp.MediaTypeRequest)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		return rec.Code
	}
	oldKeys, err := ohttp.ParseKeyConfigs(get(api.PathKeys))
	if err != nil {
		t.Fatal(err)
	}
	oldBundle := get(api.PathAttestation)

	key, err := ohttp.GenerateKey(2, ohttp.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		t.Fatal(err)
	}
	b := attest.Bundle{KeyConfigs: list, Policy: json.RawMessage(`{"version":2}`)}
	want, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetBundle(b, nil); err == nil {
		t.Fatal("SetBundle accepted no gateway")
	}
	if got := get(api.PathAttestation); !bytes.Equal(got, oldBundle) {
		t.Fatal("a refused SetBundle changed the bundle")
	}
	if st := post(oldKeys[0]); st != http.StatusOK {
		t.Fatalf("request to the first key: %d", st)
	}

	if err := s.SetBundle(b, gw); err != nil {
		t.Fatal(err)
	}
	if got := get(api.PathAttestation); !bytes.Equal(got, want) {
		t.Fatalf("bundle after SetBundle:\n%s\nwant\n%s", got, want)
	}
	if got := get(api.PathKeys); !bytes.Equal(got, list) {
		t.Fatal("key list after SetBundle is not the new gateway's")
	}
	if st := post(oldKeys[0]); st != http.StatusUnprocessableEntity {
		t.Fatalf("request to a key the gateway no longer holds: %d, want %d (unknown key)", st, http.StatusUnprocessableEntity)
	}
	if st := post(key.KeyConfig()); st != http.StatusOK {
		t.Fatalf("request to the new key: %d", st)
	}

	// Swaps while requests are served (for the race detector): every
	// bundle served is one of the two, whole.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if got := get(api.PathAttestation); !bytes.Equal(got, want) && !bytes.Equal(got, oldBundle) {
					t.Errorf("served a bundle that was never set: %s", got)
					return
				}
				post(key.KeyConfig())
			}
		})
	}
	oldGW, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	var old attest.Bundle
	if err := json.Unmarshal(oldBundle, &old); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		next, nextGW := b, gw
		if i%2 == 0 {
			next, nextGW = old, oldGW
		}
		if err := s.SetBundle(next, nextGW); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
