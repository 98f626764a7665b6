package attest

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// fakeVerifier accepts any evidence of its TEE and returns a fixed identity
// with the evidence's bytes as report data, so Verify's own checks can be
// exercised without a real TEE.
type fakeVerifier struct {
	tee TEE
	id  Identity
	err error
}

func (f fakeVerifier) TEE() TEE { return f.tee }

func (f fakeVerifier) Verify(ctx context.Context, ev Evidence) (Identity, error) {
	if f.err != nil {
		return Identity{}, f.err
	}
	id := f.id
	copy(id.ReportData[:], ev.Data)
	return id, nil
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	m := bytes.Repeat([]byte{0xaa}, 32)
	var rd ReportData
	copy(rd[:], "binding")
	good := Identity{TEE: SGX, Measurement: m, TCBStatus: "UpToDate"}
	sgxEv := Evidence{TEE: SGX, Data: []byte("binding")}

	tests := []struct {
		name      string
		ev        Evidence
		rd        ReportData
		exp       Expectations
		v         []Verifier
		wantField string // MismatchError field, if any
		wantErr   error
	}{
		{name: "ok", ev: sgxEv, rd: rd, exp: Expectations{Measurements: [][]byte{m}}, v: []Verifier{fakeVerifier{tee: SGX, id: good}}},
		{name: "no verifier", ev: sgxEv, rd: rd, v: []Verifier{fakeVerifier{tee: TDX, id: good}}, wantErr: errAny},
		{name: "verifier fails", ev: sgxEv, rd: rd, v: []Verifier{fakeVerifier{tee: SGX, err: errBadSig}}, wantErr: errBadSig},
		{name: "report data", ev: sgxEv, rd: ReportData{1}, v: []Verifier{fakeVerifier{tee: SGX, id: good}}, wantField: "report_data"},
		{name: "measurement", ev: sgxEv, rd: rd, exp: Expectations{Measurements: [][]byte{{1}}}, v: []Verifier{fakeVerifier{tee: SGX, id: good}}, wantField: "measurement"},
		{name: "sim refused before verifying", ev: Evidence{TEE: Sim, Data: []byte("binding")}, rd: rd, v: []Verifier{fakeVerifier{tee: Sim, id: Identity{TEE: Sim}}}, wantErr: ErrSimulated},
		{name: "sim allowed", ev: Evidence{TEE: Sim, Data: []byte("binding")}, rd: rd, exp: Expectations{AllowSimulated: true}, v: []Verifier{fakeVerifier{tee: Sim, id: Identity{TEE: Sim}}}},
		{name: "verifier lies about TEE", ev: sgxEv, rd: rd, v: []Verifier{fakeVerifier{tee: SGX, id: Identity{TEE: Sim}}}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(ctx, tt.ev, tt.rd, tt.exp, tt.v...)
			switch {
			case tt.wantField != "":
				var me *MismatchError
				if !errors.As(err, &me) || me.Field != tt.wantField {
					t.Fatalf("err = %v, want mismatch on %s", err, tt.wantField)
				}
			case tt.wantErr == errAny:
				if err == nil {
					t.Fatal("accepted, want an error")
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("err = %v", err)
			}
		})
	}
}

var (
	errAny    = errors.New("any error")
	errBadSig = errors.New("bad signature")
)

func TestExpectationsCheck(t *testing.T) {
	pid := uint16(7)
	base := Identity{TEE: SGX, Measurement: []byte{1}, Signer: []byte{2}, ProductID: 7, SVN: 3, TCBStatus: "UpToDate"}
	tests := []struct {
		name  string
		exp   Expectations
		id    func(Identity) Identity
		field string // "" means accepted
	}{
		{"zero value accepts up-to-date non-debug", Expectations{}, nil, ""},
		{"debug refused", Expectations{}, func(i Identity) Identity { i.Debug = true; return i }, "debug"},
		{"debug allowed", Expectations{AllowDebug: true}, func(i Identity) Identity { i.Debug = true; return i }, ""},
		{"measurement one of", Expectations{Measurements: [][]byte{{9}, {1}}}, nil, ""},
		{"measurement wrong", Expectations{Measurements: [][]byte{{9}}}, nil, "measurement"},
		{"signer wrong", Expectations{Signers: [][]byte{{9}}}, nil, "signer"},
		{"product id", Expectations{ProductID: &pid}, func(i Identity) Identity { i.ProductID = 8; return i }, "product_id"},
		{"svn too low", Expectations{MinSVN: 4}, nil, "svn"},
		{"svn enough", Expectations{MinSVN: 3}, nil, ""},
		{"out of date refused by default", Expectations{}, func(i Identity) Identity { i.TCBStatus = "OutOfDate"; return i }, "tcb_status"},
		{"up to date accepted by default", Expectations{}, func(i Identity) Identity { i.TCBStatus = "UpToDate"; return i }, ""},
		{"listed status accepted", Expectations{AcceptedTCB: []AcceptedTCB{{Status: "SWHardeningNeeded"}}}, func(i Identity) Identity { i.TCBStatus = "SWHardeningNeeded"; return i }, ""},
		{"no collateral refused by default", Expectations{}, func(i Identity) Identity { i.TCBStatus = ""; return i }, "not judged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := base
			if tt.id != nil {
				id = tt.id(id)
			}
			err := tt.exp.Check(id)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if tt.field == "not judged" {
				if !errors.Is(err, ErrTCBNotJudged) {
					t.Fatalf("err = %v, want ErrTCBNotJudged", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) || me.Field != tt.field {
				t.Fatalf("err = %v, want mismatch on %s", err, tt.field)
			}
		})
	}
	if err := (Expectations{}).Check(Identity{TEE: Sim}); !errors.Is(err, ErrSimulated) {
		t.Fatalf("sim identity: err = %v, want ErrSimulated", err)
	}
}
