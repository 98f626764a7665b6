package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// serveBundle serves b as a backend's attestation bundle.
func serveBundle(t *testing.T, b attest.Bundle) string {
	t.Helper()
	body, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.PathAttestation {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func testKeyConfigs(t *testing.T) []byte {
	t.Helper()
	k, err := ohttp.GenerateKey(1, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := ohttp.MarshalKeyConfigs([]ohttp.KeyConfig{k.KeyConfig()})
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// A phone's client refuses SGX evidence that comes without collateral:
// without it the platform's TCB cannot be judged.
func TestNewRefusesSGXWithoutCollateral(t *testing.T) {
	t.Parallel()
	quote, err := os.ReadFile("../attest/sgx/testdata/quote_v3_ecdsa_p256_pck_chain.bin")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	url := serveBundle(t, attest.Bundle{
		Evidence:   attest.Evidence{TEE: attest.SGX, Data: quote},
		KeyConfigs: testKeyConfigs(t), Policy: doc, IssuedAt: now.Unix(), NotAfter: now.Add(12 * time.Hour).Unix(),
	})
	_, err = client.New(t.Context(), client.Config{Server: url})
	if !errors.Is(err, sgx.ErrNoCollateral) {
		t.Fatalf("SGX evidence without collateral: %v, want sgx.ErrNoCollateral", err)
	}
}

// statusAttester makes SGX evidence whose data is the report data, which
// statusVerifier accepts with a fixed TCB status and advisories, so that a
// client's TCB judgement can be exercised without an SGX platform.
type statusAttester struct{}

func (statusAttester) TEE() attest.TEE { return attest.SGX }

func (statusAttester) Attest(_ context.Context, rd attest.ReportData) (attest.Evidence, error) {
	return attest.Evidence{TEE: attest.SGX, Data: rd[:]}, nil
}

type statusVerifier struct {
	status     string
	advisories []string
}

func (statusVerifier) TEE() attest.TEE { return attest.SGX }

func (v statusVerifier) Verify(_ context.Context, ev attest.Evidence) (attest.Identity, error) {
	id := attest.Identity{TEE: attest.SGX, Measurement: make([]byte, 32), TCBStatus: v.status, TCBAdvisoryIDs: v.advisories}
	copy(id.ReportData[:], ev.Data)
	return id, nil
}

// The attested policy says which SGX statuses beyond UpToDate the client
// accepts, and with which advisories.
func TestNewJudgesTCBByAttestedPolicy(t *testing.T) {
	t.Parallel()
	hardening := statusVerifier{status: "SWHardeningNeeded", advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}
	bundle := func(tcb policy.TCB) string {
		p := policy.Default()
		p.TCB = tcb
		doc, err := p.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		b, err := attest.NewBundle(t.Context(), statusAttester{}, attest.Bundle{
			KeyConfigs: testKeyConfigs(t), Policy: doc, IssuedAt: now.Unix(), NotAfter: now.Add(12 * time.Hour).Unix(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return serveBundle(t, b)
	}
	accept := func(advisories ...string) policy.TCB {
		return policy.TCB{SGXAccepted: []policy.SGXAccepted{{Status: "SWHardeningNeeded", Advisories: advisories}}}
	}
	var mm *attest.MismatchError
	for _, tc := range []struct {
		name  string
		tcb   policy.TCB
		v     statusVerifier
		field string
	}{
		{"up to date, default policy", policy.TCB{}, statusVerifier{status: "UpToDate"}, ""},
		{"hardening, default policy", policy.TCB{}, hardening, "tcb_status"},
		{"hardening, one advisory accepted", accept("INTEL-SA-00615"), hardening, "tcb_advisories"},
		{"hardening, both advisories accepted", accept("INTEL-SA-00615", "INTEL-SA-00657"), hardening, ""},
		{"not judged", accept("INTEL-SA-00615"), statusVerifier{}, "not judged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.New(t.Context(), client.Config{Server: bundle(tc.tcb), Verifiers: []attest.Verifier{tc.v}})
			switch {
			case tc.field == "":
				if err != nil {
					t.Fatal(err)
				}
			case tc.field == "not judged":
				if !errors.Is(err, attest.ErrTCBNotJudged) {
					t.Fatalf("%v, want attest.ErrTCBNotJudged", err)
				}
			case !errors.As(err, &mm) || mm.Field != tc.field:
				t.Fatalf("%v, want a %s mismatch", err, tc.field)
			}
		})
	}
}
