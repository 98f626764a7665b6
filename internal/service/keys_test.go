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

// bundleFetches is a transport that counts GETs of the attestation bundle,
// and the gateway's refusals of unknown keys.
type bundleFetches struct{ n, unknownKey atomic.Int32 }

func (b *bundleFetches) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Path == api.PathAttestation {
		b.n.Add(1)
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && r.Method == http.MethodPost && resp.StatusCode == http.StatusUnprocessableEntity {
		b.unknownKey.Add(1)
	}
	return resp, err
}

// keyConfigsOf returns the key configurations a bundle attests: one
// generation's hybrid and X25519 keys.
func keyConfigsOf(t *testing.T, b attest.Bundle) []ohttp.KeyConfig {
	t.Helper()
	cs, err := ohttp.ParseKeyConfigs(b.KeyConfigs)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].KEM != ohttp.KEMMLKEM768X25519 || cs[1].KEM != ohttp.KEMX25519 {
		t.Fatalf("the bundle attests %d key configurations %+v; want one generation of a hybrid and an X25519 key", len(cs), cs)
	}
	return cs
}

// acceptedConfigs returns the key configurations the gateway at base
// accepts, as it lists them: the newest generation's first.
func acceptedConfigs(t *testing.T, base string) []ohttp.KeyConfig {
	t.Helper()
	resp, err := http.Get(base + api.PathKeys)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ohttp.ParseKeyConfigs(b)
	if err != nil {
		t.Fatal(err)
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

// gatewaySecrets returns the secret halves of the keys w's gateway serves:
// two for each generation it accepts.
func gatewaySecrets(t *testing.T, w *world) [][]byte {
	t.Helper()
	s, err := w.b.Service.GatewaySecretsForTest()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) == 0 || len(s)%2 != 0 {
		t.Fatalf("%d gateway keys, want two a generation", len(s))
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
		if rd, err := attest.BindReportData(got); err != nil || rd != identity.ReportData {
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
		if got.IssuedAt != bundle.IssuedAt || got.NotAfter != bundle.NotAfter {
			t.Fatalf("restart %d: the bundle is valid from %d to %d, before from %d to %d", i+1, got.IssuedAt, got.NotAfter, bundle.IssuedAt, bundle.NotAfter)
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

// The keys rotate on the attested schedule, on the service's clock: every
// half bundle_hours a new generation, attested by a bundle of its own that
// is valid for bundle_hours from its making; the gateway accepts the
// previous generation until its bundle's not_after. A client that verified
// the old bundle just before a rotation goes on with its key, unrefused,
// until it fetches the bundle again a quarter of bundle_hours later.
func TestOHTTPKeysRotateOnSchedule(t *testing.T) {
	ctx := t.Context()
	p := policy.Default()
	p.BundleHours = 24
	life := 24 * time.Hour
	w := newWorldWithPolicy(t, &p)
	logs := &keysLog{}
	w.stop()
	w.now = w.now.Truncate(time.Second)
	w.startWithLogger(slog.New(slog.NewTextHandler(logs, nil)))
	start := w.now
	f := newKeysFront(t, w)
	maintain := func(at time.Duration) {
		t.Helper()
		w.now = start.Add(at)
		if err := w.b.Service.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	validity := func(b attest.Bundle) (time.Time, time.Time) {
		return time.Unix(b.IssuedAt, 0), time.Unix(b.NotAfter, 0)
	}

	b1 := w.b.Service.CurrentBundle()
	first := keyConfigsOf(t, b1)
	if from, until := validity(b1); !from.Equal(start) || !until.Equal(start.Add(life)) {
		t.Fatalf("the first bundle is valid from %v to %v, want from the start %v for bundle_hours", from, until, start)
	}
	secrets := gatewaySecrets(t, w)

	// Nothing changes before half the bundle's validity. A client verifies
	// the first bundle then.
	maintain(life/2 - time.Minute)
	if got := keyConfigsOf(t, w.b.Service.CurrentBundle()); !sameConfigs(t, got, first) {
		t.Fatal("the keys rotated before their time")
	}
	fetches := &bundleFetches{}
	c := f.client(t, fetches)
	decoy := func(what string, wantFetches int32) {
		t.Helper()
		if err := c.Decoy(ctx, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := fetches.n.Load(); n != wantFetches {
			t.Fatalf("%s: the client fetched the bundle %d times, want %d", what, n, wantFetches)
		}
	}
	decoy("before the rotation", 1)

	// Then a new generation is published, in a bundle valid for
	// bundle_hours from now; the first stays accepted until its not_after.
	maintain(life/2 + time.Minute)
	b2 := w.b.Service.CurrentBundle()
	second := keyConfigsOf(t, b2)
	if from, until := validity(b2); !from.Equal(w.now) || !until.Equal(w.now.Add(life)) {
		t.Fatalf("the second bundle is valid from %v to %v, want from %v for bundle_hours", from, until, w.now)
	}
	for _, kc := range second {
		for _, old := range first {
			if kc.KeyID == old.KeyID {
				t.Fatalf("the new generation reuses key ID %d", kc.KeyID)
			}
		}
	}
	wantAccepted(t, "after the rotation, the new generation", f.URL, true, second...)
	wantAccepted(t, "after the rotation, the first generation", f.URL, true, first...)
	decoy("after the rotation, with the first bundle's key", 1)
	if logs.count("OHTTP key generation made") != 1 || logs.count("OHTTP keys published") != 2 {
		t.Errorf("the rotation is not logged:\n%s", logs.buf.String())
	}
	secrets = append(secrets, gatewaySecrets(t, w)...)

	// A restart within the validity serves the same keys.
	f.restart()
	if got := keyConfigsOf(t, w.b.Service.CurrentBundle()); !sameConfigs(t, got, second) {
		t.Fatal("a restart after a rotation serves other keys")
	}
	wantAccepted(t, "after a restart, the first generation", f.URL, true, first...)
	decoy("after a restart, with the first bundle's key", 1)

	// A quarter of bundle_hours after it fetched the first bundle, the
	// client fetches the bundle again, and adopts the second.
	w.now = start.Add(life/2 - time.Minute + life/4)
	decoy("a quarter of bundle_hours after the client's fetch", 2)
	if rd, err := attest.BindReportData(b2); err != nil || c.Identity().ReportData != rd {
		t.Fatalf("the client did not adopt the second bundle (%v)", err)
	}

	// At the first bundle's not_after its keys are dropped; the second's
	// stay.
	maintain(life + time.Minute)
	wantAccepted(t, "past the first bundle's not_after, its generation", f.URL, false, first...)
	wantAccepted(t, "past the first bundle's not_after, the second generation", f.URL, true, second...)
	decoy("past the first bundle's not_after, a quarter of bundle_hours after the last fetch", 3)
	if n := fetches.unknownKey.Load(); n != 0 {
		t.Errorf("the gateway refused the client's key %d times across the rotations, want never", n)
	}

	// After a long stop, every stored generation is over: fresh keys,
	// under key IDs that none of the earlier ones used. The client's
	// bundle has expired: it fetches the new one before it sends.
	w.now = start.Add(10 * life)
	f.restart()
	third := keyConfigsOf(t, w.b.Service.CurrentBundle())
	for _, kc := range third {
		for _, old := range append(first, second...) {
			if kc.KeyID == old.KeyID {
				t.Fatalf("after a long stop, a new generation reuses key ID %d", kc.KeyID)
			}
		}
	}
	wantAccepted(t, "after a long stop, the last generation", f.URL, false, second...)
	decoy("after a long stop", 4)
	noSecretsOnDisk(t, w, append(secrets, gatewaySecrets(t, w)...))
}

// A phone keeps working across days of rotations: hour by hour, with the
// backend maintained hourly as conftraced does, every request succeeds,
// none is refused for an unknown key, the phone never holds a bundle with
// less than a quarter of its validity left, and it fetches the bundle
// every quarter of bundle_hours.
func TestClientAcrossRotations(t *testing.T) {
	ctx := t.Context()
	w := newWorld(t) // bundle_hours 24
	f := newKeysFront(t, w)
	fetches := &bundleFetches{}
	c := f.client(t, fetches)
	const days = 4
	for h := 1; h <= days*24; h++ {
		w.now = w.now.Add(time.Hour)
		if err := w.b.Service.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Decoy(ctx, 0); err != nil {
			t.Fatalf("hour %d: %v", h, err)
		}
		if _, notAfter := c.Validity(); !w.now.Before(notAfter.Add(-w.pol.BundleLifetime() / 4)) {
			t.Fatalf("hour %d: the client uses a bundle valid until %v, within a quarter of its validity", h, notAfter)
		}
	}
	if n := fetches.unknownKey.Load(); n != 0 {
		t.Errorf("the gateway refused the client's key %d times", n)
	}
	if n := fetches.n.Load(); n != 1+4*days {
		t.Errorf("the client fetched %d bundles in %d days, want %d: at New, then every 6 hours", n, days, 1+4*days)
	}
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

// twoGenerations moves w half a bundle lifetime on and maintains it, so
// that its store holds two generations, and returns the configurations
// its gateway accepts, the newest generation's first.
func twoGenerations(t *testing.T, w *world) []ohttp.KeyConfig {
	t.Helper()
	w.now = w.now.Add(w.pol.BundleLifetime()/2 + time.Minute)
	if err := w.b.Service.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	cs := acceptedConfigs(t, w.b.URL)
	if len(cs) != 4 {
		t.Fatalf("the gateway accepts %d keys, want two generations'", len(cs))
	}
	return cs
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
			v := values[1] // the newest generation's
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
			twoGenerations(t, other)
			other.stop()
			before := twoGenerations(t, w)
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
			// The newest generation is always spoiled: one fresh one
			// replaces it, as the schedule has it.
			if n := logs.count("OHTTP key generation made"); n != 1 {
				t.Errorf("%d fresh generations logged, want 1:\n%s", n, logs.buf.String())
			}
			after := acceptedConfigs(t, w.b.URL)
			if !sameConfigs(t, after[:2], keyConfigsOf(t, w.b.Service.CurrentBundle())) {
				t.Error("the bundle does not attest the newest generation")
			}
			if kept := before[2*spoiled:]; len(after) != 2+len(kept) || len(kept) > 0 && !sameConfigs(t, after[2:], kept) {
				t.Error("a generation that was not tampered with was not kept, or one that was is still accepted")
			}
			for _, c := range after[:2] {
				for _, old := range before {
					if c.KeyID == old.KeyID {
						t.Errorf("a fresh key reuses key ID %d, which clients may hold", c.KeyID)
					}
				}
			}
			wantAccepted(t, "the refused generations", w.b.URL, false, before[:2*spoiled]...)
			wantAccepted(t, "the accepted generations", w.b.URL, true, after...)
			if err := w.client().Decoy(t.Context(), 0); err != nil {
				t.Fatalf("a client after the refusal: %v", err)
			}

			// The refused records are gone; the next start refuses nothing.
			w.stop()
			logs = &keysLog{}
			w.startWithLogger(slog.New(slog.NewTextHandler(logs, nil)))
			if n := logs.count("OHTTP key generation made"); n != 0 || !sameConfigs(t, acceptedConfigs(t, w.b.URL), after) {
				t.Errorf("the start after the refusal made %d generations, or serves other keys:\n%s", n, logs.buf.String())
			}
		})
	}
}

// Keys are never carried over to another policy or release statement:
// clients verified them with the ones of before. A restart under another
// policy makes fresh keys and says why; the one after it keeps them.
func TestOHTTPKeysFollowPolicyAndRelease(t *testing.T) {
	w := newWorld(t)
	before := acceptedConfigs(t, w.b.URL)
	w.stop()
	p := policy.Default()
	p.RetentionDays = 10
	w.policy = &p
	logs := &keysLog{}
	w.startWithLogger(slog.New(slog.NewTextHandler(logs, nil)))
	if n := logs.count("stored OHTTP key generation was attested with another policy or release statement; fresh keys replace it"); n != 1 {
		t.Errorf("%d generations refused for another policy, want 1:\n%s", n, logs.buf.String())
	}
	after := acceptedConfigs(t, w.b.URL)
	if len(after) != 2 {
		t.Fatalf("the gateway accepts %d keys, want only the fresh generation's", len(after))
	}
	wantAccepted(t, "the keys of the old policy", w.b.URL, false, before...)
	w.restart()
	if !sameConfigs(t, acceptedConfigs(t, w.b.URL), after) {
		t.Error("a restart under the same policy did not keep the keys")
	}
}
