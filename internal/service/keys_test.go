package service_test

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// keysFront serves the world's backend at one address across restarts, as
// a deployment's address outlives its processes.
type keysFront struct {
	mu  sync.Mutex
	w   *world
	URL string
}

func newKeysFront(t *testing.T, w *world) *keysFront {
	f := &keysFront{w: w}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		h := f.w.b.Service.Handler
		f.mu.Unlock()
		h.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *keysFront) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.w.restart()
}

// client returns a client of the front that counts its fetches of the
// attestation bundle in fetches.
func (f *keysFront) client(t *testing.T, fetches *bundleFetches) *client.Client {
	t.Helper()
	c, err := client.New(t.Context(), client.Config{
		Server:       f.URL,
		Expectations: f.w.b.Expectations(),
		HTTPClient:   &http.Client{Transport: fetches},
		// The backend's clock, which the tests move.
		Now: func() time.Time { return f.w.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bundleFetches is a transport that counts GETs of the attestation bundle.
type bundleFetches struct{ n atomic.Int32 }

func (b *bundleFetches) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Path == api.PathAttestation {
		b.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// keyConfigsOf returns the key configurations a bundle attests, in its
// order: the next generation's hybrid and X25519 keys, then the current's.
func keyConfigsOf(t *testing.T, b attest.Bundle) []ohttp.KeyConfig {
	t.Helper()
	cs, err := ohttp.ParseKeyConfigs(b.KeyConfigs)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 4 || cs[0].KEM != ohttp.KEMMLKEM768X25519 || cs[1].KEM != ohttp.KEMX25519 ||
		cs[2].KEM != ohttp.KEMMLKEM768X25519 || cs[3].KEM != ohttp.KEMX25519 {
		t.Fatalf("the bundle attests %d key configurations %+v; want two generations of a hybrid and an X25519 key", len(cs), cs)
	}
	return cs
}

func sameConfigs(t *testing.T, a, b []ohttp.KeyConfig) bool {
	t.Helper()
	x, err := ohttp.MarshalKeyConfigs(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := ohttp.MarshalKeyConfigs(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// gatewayStatus sends a decoy encrypted to cfg to the gateway at base and
// returns the status of the outer response: 200 when the gateway holds the
// key, 422 when it does not know it.
func gatewayStatus(t *testing.T, base string, cfg ohttp.KeyConfig) int {
	t.Helper()
	inner, err := (&bhttp.Request{Method: http.MethodPost, Scheme: "https", Authority: api.InnerAuthority, Path: api.PathDecoy}).MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	enc, _, err := ohttp.EncapsulateRequest(cfg, inner)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+api.PathGateway, ohttp.MediaTypeRequest, bytes.NewReader(enc))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// wantAccepted fails unless the gateway at base accepts each of cfgs
// (accepted) or refuses each as an unknown key (!accepted).
func wantAccepted(t *testing.T, what, base string, accepted bool, cfgs ...ohttp.KeyConfig) {
	t.Helper()
	want := http.StatusUnprocessableEntity
	if accepted {
		want = http.StatusOK
	}
	for _, c := range cfgs {
		if got := gatewayStatus(t, base, c); got != want {
			t.Errorf("%s: a request to key %d (%v) got status %d, want %d", what, c.KeyID, c.KEM, got, want)
		}
	}
}

// gatewaySecrets returns the secret halves of the keys w's gateway serves.
func gatewaySecrets(t *testing.T, w *world) [][]byte {
	t.Helper()
	s, err := w.b.Service.GatewaySecretsForTest()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 4 {
		t.Fatalf("%d gateway keys, want 4", len(s))
	}
	return s
}

// clearForms returns the forms in which s would show if stored unsealed:
// raw, in hex, and in base64 (as JSON writes bytes) at each of the three
// alignments s can have inside a longer encoded string.
func clearForms(s []byte) [][]byte {
	forms := [][]byte{s, []byte(hex.EncodeToString(s))}
	for o := range 3 {
		aligned := s[o : o+(len(s)-o)/3*3]
		forms = append(forms,
			[]byte(base64.StdEncoding.EncodeToString(aligned)),
			[]byte(base64.URLEncoding.EncodeToString(aligned)))
	}
	return forms
}

// noSecretsOnDisk fails if any file of w's directory (the store with its
// journal, the simulated TEE's key) holds one of secrets in the clear.
func noSecretsOnDisk(t *testing.T, w *world, secrets [][]byte) {
	t.Helper()
	var forms [][]byte
	for _, s := range secrets {
		forms = append(forms, clearForms(s)...)
	}
	files := 0
	err := filepath.WalkDir(w.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if bytes.Contains(data, f) {
				t.Errorf("%s holds an OHTTP private key in the clear", filepath.Base(p))
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no files to look into")
	}
}

// keysLog collects a backend's log; the gateway writes it from the
// goroutines that serve requests.
type keysLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *keysLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *keysLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), `msg="`+msg+`"`)
}

// A restart serves the same keys under the same key IDs: a client that
// verified the bundle before carries on without fetching it again, so the
// host cannot make phones re-fetch it by restarting the backend. The store
// holds the private keys sealed only.
func TestOHTTPKeysSurviveRestarts(t *testing.T) {
	ctx := t.Context()
	w := newWorld(t)
	f := newKeysFront(t, w)
	fetches := &bundleFetches{}
	c := f.client(t, fetches)
	if err := c.Decoy(ctx, 0); err != nil {
		t.Fatal(err)
	}
	bundle := w.b.Service.CurrentBundle()
	if !bytes.Equal(bundle.KeyConfigs, w.b.Service.Bundle.KeyConfigs) {
		t.Fatal("CurrentBundle differs from the bundle of the start")
	}
	keys := keyConfigsOf(t, bundle)
	identity := c.Identity()
	secrets := gatewaySecrets(t, w)
	noSecretsOnDisk(t, w, secrets)

	for i := range 2 {
		f.restart()
		got := w.b.Service.CurrentBundle()
		if !bytes.Equal(got.KeyConfigs, bundle.KeyConfigs) {
			t.Fatalf("restart %d: the bundle attests other keys", i+1)
		}
		if rd, err := attest.BindReportData(got.KeyConfigs, got.Policy); err != nil || rd != identity.ReportData {
			t.Fatalf("restart %d: the bundle binds other report data (%v)", i+1, err)
		}
		resp, err := http.Get(f.URL + api.PathKeys)
		if err != nil {
			t.Fatal(err)
		}
		served, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(served, bundle.KeyConfigs) {
			t.Fatalf("restart %d: %s serves other key configurations than before", i+1, api.PathKeys)
		}
		if err := c.Decoy(ctx, 0); err != nil {
			t.Fatalf("restart %d: a client of before: %v", i+1, err)
		}
		wantAccepted(t, "after a restart", f.URL, true, keys...)
		if s := gatewaySecrets(t, w); !sameSecrets(s, secrets) {
			t.Fatalf("restart %d: the gateway holds other private keys", i+1)
		}
	}
	if n := fetches.n.Load(); n != 1 {
		t.Errorf("the client fetched the bundle %d times over two restarts, want once (at New)", n)
	}
	if c.Identity().ReportData != identity.ReportData {
		t.Error("the client adopted other attested keys")
	}
	noSecretsOnDisk(t, w, secrets)
}

func sameSecrets(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// The keys rotate on the attested schedule, on the service's clock: the
// next generation, published ahead, becomes current after ohttp_key_days;
// the key a client verified (the newest) stays accepted through that
// rotation, so the client needs no fetch; each generation is refused as
// unknown once its time is over, and only then does a client fetch and
// verify the bundle again.
func TestOHTTPKeysRotateOnSchedule(t *testing.T) {
	ctx := t.Context()
	p := policy.Default()
	p.OHTTPKeyDays = 3
	life := 3 * 24 * time.Hour
	w := newWorldWithPolicy(t, &p)
	logs := &keysLog{}
	w.stop()
	w.startWithLogger(slog.New(slog.NewTextHandler(logs, nil)))
	start := w.now
	f := newKeysFront(t, w)
	fetches := &bundleFetches{}
	c := f.client(t, fetches)
	maintain := func(at time.Duration) {
		t.Helper()
		w.now = start.Add(at)
		if err := w.b.Service.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	decoy := func(what string, wantFetches int32) {
		t.Helper()
		if err := c.Decoy(ctx, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := fetches.n.Load(); n != wantFetches {
			t.Fatalf("%s: the client fetched the bundle %d times, want %d", what, n, wantFetches)
		}
	}

	first := keyConfigsOf(t, w.b.Service.CurrentBundle())
	next, current := first[:2], first[2:]
	// Clients encrypt to the newest key they verified.
	if sel, err := ohttp.SelectKeyConfig(first); err != nil || sel.KeyID != next[0].KeyID {
		t.Fatalf("clients pick key %d (%v), want the next generation's hybrid key %d", sel.KeyID, err, next[0].KeyID)
	}
	decoy("at the start", 1)
	secrets := gatewaySecrets(t, w)

	// Nothing changes before the current generation's time is over.
	maintain(life - time.Minute)
	if got := keyConfigsOf(t, w.b.Service.CurrentBundle()); !sameConfigs(t, got, first) {
		t.Fatal("the keys rotated before their time")
	}
	wantAccepted(t, "before the rotation", f.URL, true, first...)

	// After ohttp_key_days, the next generation is current, a new one is
	// published ahead of it, and the first is dropped.
	maintain(life + time.Minute)
	second := keyConfigsOf(t, w.b.Service.CurrentBundle())
	if !sameConfigs(t, second[2:], next) {
		t.Fatal("after ohttp_key_days the next generation is not current")
	}
	for _, kc := range second[:2] {
		for _, old := range first {
			if kc.KeyID == old.KeyID {
				t.Fatalf("the new generation reuses key ID %d", kc.KeyID)
			}
		}
	}
	wantAccepted(t, "after the rotation, the published generations", f.URL, true, second...)
	wantAccepted(t, "after the rotation, the first generation", f.URL, false, current...)
	decoy("after the rotation", 1) // its key is still accepted
	if logs.count("OHTTP key generation dropped") != 1 || logs.count("OHTTP keys published") != 2 {
		t.Errorf("the rotation is not logged:\n%s", logs.buf.String())
	}
	secrets = append(secrets, gatewaySecrets(t, w)...)

	// A restart within the generation's validity serves the same keys.
	f.restart()
	if got := keyConfigsOf(t, w.b.Service.CurrentBundle()); !sameConfigs(t, got, second) {
		t.Fatal("a restart after a rotation serves other keys")
	}
	decoy("after the restart", 1)

	// When the generation the client verified is over, the gateway
	// refuses it as unknown; the client fetches and verifies the bundle
	// once, and carries on.
	maintain(2*life + time.Minute)
	third := keyConfigsOf(t, w.b.Service.CurrentBundle())
	if !sameConfigs(t, third[2:], second[:2]) {
		t.Fatal("after another ohttp_key_days the next generation is not current")
	}
	wantAccepted(t, "after the second rotation, the generation that was newest at the start", f.URL, false, next...)
	decoy("after the second rotation", 2)
	b := w.b.Service.CurrentBundle()
	if rd, err := attest.BindReportData(b.KeyConfigs, b.Policy); err != nil || c.Identity().ReportData != rd {
		t.Fatalf("the client did not adopt the keys attested now (%v)", err)
	}
	secrets = append(secrets, gatewaySecrets(t, w)...)

	// After a long stop, every stored generation is over: fresh keys,
	// under key IDs that none of the earlier ones used.
	w.now = start.Add(10 * life)
	f.restart()
	fourth := keyConfigsOf(t, w.b.Service.CurrentBundle())
	for _, kc := range fourth {
		for _, old := range append(append(first, second...), third...) {
			if kc.KeyID == old.KeyID {
				t.Fatalf("after a long stop, a new generation reuses key ID %d", kc.KeyID)
			}
		}
	}
	wantAccepted(t, "after a long stop, the last generations", f.URL, false, third...)
	decoy("after a long stop", 3)
	noSecretsOnDisk(t, w, append(secrets, gatewaySecrets(t, w)...))
}

// ohttpKeyRecords returns the sealed key generations in w's store, by
// record key, in record key order (oldest generation first).
func ohttpKeyRecords(t *testing.T, w *world) (keys, values [][]byte) {
	t.Helper()
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT key, value FROM records WHERE tbl = 'ohttp_keys' ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		keys, values = append(keys, k), append(values, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return keys, values
}

func setOHTTPKeyRecord(t *testing.T, w *world, key, value []byte) {
	t.Helper()
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE records SET value = ? WHERE tbl = 'ohttp_keys' AND key = ?`, value, key); err != nil {
		t.Fatal(err)
	}
}

// A sealed key record that the host changed, swapped with another or
// brought from another backend is refused and logged, and fresh keys
// (under new key IDs) replace it; keys never come from it.
func TestTamperedOHTTPKeyRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		// tamper changes w's records, given other's; it returns how many
		// generations, newest first, it spoiled.
		tamper func(t *testing.T, w, other *world) int
	}{
		{"changed", func(t *testing.T, w, _ *world) int {
			keys, values := ohttpKeyRecords(t, w)
			v := values[1] // the next generation's
			v[len(v)/2] ^= 1
			setOHTTPKeyRecord(t, w, keys[1], v)
			return 1
		}},
		{"swapped", func(t *testing.T, w, _ *world) int {
			keys, values := ohttpKeyRecords(t, w)
			setOHTTPKeyRecord(t, w, keys[0], values[1])
			setOHTTPKeyRecord(t, w, keys[1], values[0])
			return 2
		}},
		{"from another backend", func(t *testing.T, w, other *world) int {
			keys, _ := ohttpKeyRecords(t, w)
			_, otherValues := ohttpKeyRecords(t, other)
			for i := range keys {
				setOHTTPKeyRecord(t, w, keys[i], otherValues[i])
			}
			return 2
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			other := newWorld(t) // another platform: another sealing key and KEK
			other.stop()
			before := keyConfigsOf(t, w.b.Service.CurrentBundle())
			w.stop()
			if keys, _ := ohttpKeyRecords(t, w); len(keys) != 2 {
				t.Fatalf("%d key generations stored, want 2", len(keys))
			}
			spoiled := tc.tamper(t, w, other)

			logs := &keysLog{}
			w.startWithLogger(slog.New(slog.NewTextHandler(logs, nil)))
			if n := logs.count("stored OHTTP key generation refused (tampered, swapped, or sealed under another key-encryption key); fresh keys replace it"); n != spoiled {
				t.Errorf("%d refusals logged, want %d:\n%s", n, spoiled, logs.buf.String())
			}
			if n := logs.count("OHTTP key generation made"); n != spoiled {
				t.Errorf("%d fresh generations logged, want %d:\n%s", n, spoiled, logs.buf.String())
			}
			after := keyConfigsOf(t, w.b.Service.CurrentBundle())
			if kept := before[2*spoiled:]; len(kept) > 0 && !sameConfigs(t, after[2*spoiled:], kept) {
				t.Error("a generation that was not tampered with was not kept")
			}
			for _, c := range after[:2*spoiled] {
				for _, old := range before {
					if c.KeyID == old.KeyID {
						t.Errorf("a fresh key reuses key ID %d, which clients may hold", c.KeyID)
					}
				}
			}
			wantAccepted(t, "the refused generations", w.b.URL, false, before[:2*spoiled]...)
			wantAccepted(t, "the published generations", w.b.URL, true, after...)
			if err := w.client().Decoy(t.Context(), 0); err != nil {
				t.Fatalf("a client after the refusal: %v", err)
			}

			// The refused records are gone; the next start refuses nothing.
			w.stop()
			logs = &keysLog{}
			w.startWithLogger(slog.New(slog.NewTextHandler(logs, nil)))
			if n := logs.count("OHTTP key generation made"); n != 0 || !sameConfigs(t, keyConfigsOf(t, w.b.Service.CurrentBundle()), after) {
				t.Errorf("the start after the refusal made %d generations, or serves other keys:\n%s", n, logs.buf.String())
			}
		})
	}
}
