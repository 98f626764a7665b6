package enclave

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/policy"
)

// gaenServer is a foreign GAEN key server whose export key the policy lists.
type gaenServer struct {
	t   *testing.T
	key *ecdsa.PrivateKey
}

func newGAENServer(t *testing.T) (*gaenServer, func(*policy.Policy)) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &gaenServer{t: t, key: k}, func(p *policy.Policy) {
		p.GAENExportKeys = []policy.ExportKey{{Name: "de-cwa", PublicKey: der}}
	}
}

// export returns a signed export of keys (and revised keys).
func (s *gaenServer) export(keys []gaen.Key, revised ...gaen.Key) []byte {
	s.t.Helper()
	zip, err := gaen.Write(&gaen.Export{Region: "DE", Start: testStart.Add(-time.Hour), End: testStart, Keys: keys, Revised: revised},
		gaen.SigningKey{KeyID: "262", KeyVersion: "v1", Key: s.key})
	if err != nil {
		s.t.Fatal(err)
	}
	return zip
}

// gaenKey returns a key of a GAEN user valid all the UTC day of i.
func gaenKey(i enid.Interval) (gaen.Key, *device) {
	dk := dayKey(i)
	return gaen.Key{TEK: dk.TEK, RollingStart: dk.Start, RollingPeriod: int(dk.Period)}, newDevice(dk)
}

// A phone that heard a GAEN user whose key an export brought is exposed
// one-sided: with its own minutes and attenuation, even under the default
// (reciprocal) policy for this system's own uploads.
func TestImportGAENMatchesOneSided(t *testing.T) {
	srv, listKey := newGAENServer(t)
	v := newEnv(t, listKey, detailed)
	at := v.now().Add(-26 * time.Hour)
	k, foreign := gaenKey(enid.IntervalOf(at))
	phone := newDevice()
	// Two intervals, 20 minutes: above the policy's 15.
	i := enid.IntervalOf(at)
	s1, s2 := phone.hears(foreign, i, i, 10, 50), phone.hears(foreign, i+1, i+1, 10, 50)
	if resp := v.check(phone.report(s1, s2)); resp.Exposed {
		t.Fatalf("exposed before any import: %+v", resp)
	}
	resp, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: srv.export([]gaen.Key{k})})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Imported != 1 || resp.Skipped != 0 || resp.SignedBy != "de-cwa" || resp.Region != "DE" || resp.Duplicate {
		t.Errorf("import answer %+v", resp)
	}
	got := v.check(phone.report(s1, s2))
	day := got.Days[len(got.Days)-2]
	if !got.Exposed || day.Minutes != 20 || day.MinAttenuation != 50 || !day.OneSided || day.Reciprocal {
		t.Errorf("after the import: %+v, want exposed one-sided for 20 minutes yesterday", got)
	}
	// A phone that heard nobody imported is not.
	other := newDevice()
	if resp := v.check(other.report(other.hears(newDevice(), enid.IntervalOf(at), enid.IntervalOf(at), 10, 50))); resp.Exposed {
		t.Errorf("a phone that heard someone else is exposed: %+v", resp)
	}
	// Imported keys survive a restart, sealed.
	v.restart()
	if !v.check(phone.report(s1, s2)).Exposed {
		t.Error("after a restart the imported key no longer matches")
	}
	for _, r := range v.snapshot() {
		if bytes.Contains(r.Value, k.TEK[:]) || bytes.Contains(r.Key, k.TEK[:]) {
			t.Errorf("table %s holds an imported TEK in the clear", r.Table)
		}
	}
}

// Keys that cannot match are skipped and counted, not a reason to refuse
// the export; importing the same export again imports nothing.
func TestImportGAENSkipsAndIsIdempotent(t *testing.T) {
	srv, listKey := newGAENServer(t)
	v := newEnv(t, listKey)
	today := enid.IntervalOf(v.now()).RollingStart()
	good, _ := gaenKey(today - enid.RollingPeriod)
	old, _ := gaenKey(today - 14*enid.RollingPeriod) // the window holds 14 days, today included
	future, _ := gaenKey(today + 2*enid.RollingPeriod)
	bad, _ := gaenKey(today)
	bad.RollingPeriod = 145
	revoked, _ := gaenKey(today)
	revoked.ReportType = gaen.Revoked
	zip := srv.export([]gaen.Key{good, old, future, bad}, revoked)
	resp, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: bytes.Clone(zip)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Imported != 1 || resp.Skipped != 3 {
		t.Errorf("import answer %+v, want 1 imported and 3 skipped", resp)
	}
	before := len(v.records(tableGAENKeys))
	again, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: bytes.Clone(zip)})
	if err != nil || !again.Duplicate || again.Imported != 0 {
		t.Errorf("second import: %+v, %v; want a duplicate, nothing imported", again, err)
	}
	if after := len(v.records(tableGAENKeys)); after != before {
		t.Errorf("second import stored %d records more", after-before)
	}
	// Also after a restart.
	v.restart()
	if again, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: bytes.Clone(zip)}); err != nil || !again.Duplicate {
		t.Errorf("import after a restart: %+v, %v; want a duplicate", again, err)
	}
}

func TestImportGAENRefusals(t *testing.T) {
	srv, listKey := newGAENServer(t)
	stranger, _ := newGAENServer(t)
	k, _ := gaenKey(enid.IntervalOf(testStart))
	good := srv.export([]gaen.Key{k})
	for _, c := range []struct {
		name   string
		policy func(*policy.Policy)
		export []byte
		code   string
	}{
		{"no export key in the policy", func(*policy.Policy) {}, good, api.CodeNotAuthorized},
		{"signed by a key the policy does not list", listKey, stranger.export([]gaen.Key{k}), api.CodeBadSignature},
		{"not a zip", listKey, []byte("PK not really"), api.CodeMalformed},
		{"empty", listKey, nil, api.CodeMalformed},
		{"larger than a message", listKey, make([]byte, maxExportBytes+1), api.CodeMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t, c.policy)
			before := v.snapshot()
			_, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: bytes.Clone(c.export)})
			if err == nil {
				t.Fatal("imported")
			}
			wantCode(t, "import", err, c.code)
			if !sameRecords(before, v.snapshot()) {
				t.Error("a refused export changed the store")
			}
			if n := v.e.oneSided.Len(); n != 0 {
				t.Errorf("a refused export left %d entries in the one-sided index", n)
			}
		})
	}
}

// Imported keys leave with their day.
func TestImportGAENExpires(t *testing.T) {
	srv, listKey := newGAENServer(t)
	v := newEnv(t, listKey, detailed)
	at := v.now().Add(-13 * 24 * time.Hour) // the window's first day
	k, foreign := gaenKey(enid.IntervalOf(at))
	if _, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: srv.export([]gaen.Key{k})}); err != nil {
		t.Fatal(err)
	}
	phone := newDevice()
	s := phone.hears(foreign, enid.IntervalOf(at), enid.IntervalOf(at), 10, 40)
	if got := v.check(phone.report(s)); got.Days[0].Minutes != 10 || !got.Days[0].OneSided {
		t.Fatalf("on the window's first day: %+v, want 10 minutes one-sided", got.Days[0])
	}
	v.clock.Advance(24 * time.Hour)
	if err := v.e.Expire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(v.records(tableGAENKeys)); n != 0 {
		t.Errorf("%d imported key records survive their day", n)
	}
	if n := v.e.oneSided.Len(); n != 0 {
		t.Errorf("%d one-sided entries survive their day", n)
	}
}
