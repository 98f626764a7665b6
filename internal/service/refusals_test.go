package service_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/ohttp"
)

func isCode(err error, code string) bool { return errors.Is(err, &api.Error{Code: code}) }

func TestResultRefusals(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	d := w.device("d")
	code, _ := d.RegisterTest(w.now)
	testDate := w.now.Add(-24 * time.Hour)

	impostor, _ := authority.GenerateKey("lab-1") // the right name, another key
	stranger, _ := authority.GenerateKey("lab-9") // not in the policy
	good, _ := w.lab.SignResult(code, api.Positive, testDate, time.Time{}, w.now)
	stale, _ := w.lab.SignResult(code, api.Positive, testDate, time.Time{}, w.now.Add(-8*24*time.Hour))
	future, _ := w.lab.SignResult(code, api.Positive, testDate, time.Time{}, w.now.Add(time.Hour))
	forged, _ := impostor.SignResult(code, api.Positive, testDate, time.Time{}, w.now)
	unknown, _ := stranger.SignResult(code, api.Positive, testDate, time.Time{}, w.now)
	unsigned := good
	unsigned.Signature = nil
	altered := good
	altered.Result = api.Negative

	for _, tc := range []struct {
		name string
		r    api.SignedResult
		code string
	}{
		{"unsigned", unsigned, api.CodeBadSignature},
		{"signed by an unknown key", forged, api.CodeBadSignature},
		{"altered after signing", altered, api.CodeBadSignature},
		{"authority not in policy", unknown, api.CodeUnknownAuthority},
		{"too old", stale, api.CodeExpired},
		{"from the future", future, api.CodeMalformed},
	} {
		if err := c.SubmitResult(ctx, tc.r); !isCode(err, tc.code) {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	// None of the refused statements left a result behind.
	tst, _ := d.Test()
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || pr.Result != api.Pending {
		t.Fatalf("after refused statements: %+v, %v; want pending", pr, err)
	}
	if err := c.SubmitResult(ctx, good); err != nil {
		t.Fatal(err)
	}
	if err := c.SubmitResult(ctx, good); !isCode(err, api.CodeReplayed) {
		t.Fatalf("replay: %v", err)
	}
	if _, err := c.PollResult(ctx, []byte("short")); !isCode(err, api.CodeMalformed) {
		t.Fatalf("short secret: %v", err)
	}
}

func TestUploadRefusals(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	d := w.device("d")
	tuple := func(at time.Time, minutes uint16) contactlog.Tuple {
		return contactlog.Tuple{Own: enid.RPI{1}, Heard: enid.RPI{2}, Interval: enid.IntervalOf(at), Duration: minutes, Attenuation: 50}
	}
	auth := w.positive(c, d)
	for _, tc := range []struct {
		name   string
		tuples []contactlog.Tuple
		code   string
	}{
		{"empty", nil, api.CodeMalformed},
		{"in the future", []contactlog.Tuple{tuple(w.now, 5), tuple(w.now.Add(time.Hour), 5)}, api.CodeOutOfWindow},
		{"older than the window", []contactlog.Tuple{tuple(w.now.Add(-15*24*time.Hour), 5)}, api.CodeOutOfWindow},
		{"zero minutes", []contactlog.Tuple{tuple(w.now, 0)}, api.CodeMalformed},
		{"longer than an interval allows", []contactlog.Tuple{tuple(w.now, 11)}, api.CodeMalformed},
		{"too many", make([]contactlog.Tuple, w.pol.Limits.MaxUploadTuples+1), api.CodeTooLarge},
	} {
		for i := range tc.tuples {
			if tc.tuples[i].Duration == 0 && tc.name == "too many" {
				tc.tuples[i] = tuple(w.now, 1)
			}
		}
		if _, err := c.Upload(ctx, auth, tc.tuples); !isCode(err, tc.code) {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	// The refused uploads did not use up the authorization...
	if n, err := c.Upload(ctx, auth, []contactlog.Tuple{tuple(w.now, 5)}); err != nil || n != 1 {
		t.Fatalf("valid upload after refusals: %d, %v", n, err)
	}

	// ...but time does: an authorization expires.
	e := w.device("e")
	auth2 := w.positive(c, e)
	w.now = w.now.Add(w.pol.UploadAuthorizationTTL() + time.Minute)
	if _, err := c.Upload(ctx, auth2, []contactlog.Tuple{tuple(w.now, 5)}); !isCode(err, api.CodeExpired) {
		t.Fatalf("expired authorization: %v", err)
	}
}

func TestGatewayRefusals(t *testing.T) {
	w := newWorld(t)
	post := func(ct string, body []byte) (int, string) {
		resp, err := http.Post(w.b.URL+api.PathGateway, ct, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}
	keys := w.b.Service.Bundle.KeyConfigs
	cfgs, err := ohttp.ParseKeyConfigs(keys)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := ohttp.SelectKeyConfig(cfgs)
	inner, _ := (&bhttp.Request{Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: api.PathDecoy, Content: []byte(`{}`)}).MarshalPadded()
	good, _, err := ohttp.EncapsulateRequest(cfg, inner)
	if err != nil {
		t.Fatal(err)
	}
	wrongID := bytes.Clone(good)
	wrongID[0] ^= 0x80
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 1

	for _, tc := range []struct {
		name, ct string
		body     []byte
		status   int
	}{
		{"good decoy", ohttp.MediaTypeRequest, good, http.StatusOK},
		{"not OHTTP", "application/json", []byte(`{"secret":"x"}`), http.StatusUnsupportedMediaType},
		{"truncated", ohttp.MediaTypeRequest, good[:5], http.StatusBadRequest},
		{"wrong key id", ohttp.MediaTypeRequest, wrongID, http.StatusUnprocessableEntity},
		{"tampered", ohttp.MediaTypeRequest, tampered, http.StatusBadRequest},
		{"oversized", ohttp.MediaTypeRequest, make([]byte, maxEncapsulatedForTest+1), http.StatusRequestEntityTooLarge},
	} {
		if st, msg := post(tc.ct, tc.body); st != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, st, strings.TrimSpace(msg), tc.status)
		}
	}
}

// maxEncapsulatedForTest mirrors the gateway's bound: the largest padded
// message plus encapsulation overhead.
const maxEncapsulatedForTest = bhttp.MaxSize + 4096

func TestMalformedInnerRequest(t *testing.T) {
	w := newWorld(t)
	cfgs, _ := ohttp.ParseKeyConfigs(w.b.Service.Bundle.KeyConfigs)
	cfg, _ := ohttp.SelectKeyConfig(cfgs)
	for _, tc := range []struct {
		name   string
		inner  []byte
		status int
	}{
		{"not binary HTTP", []byte{0x07, 0x01, 0x02}, http.StatusBadRequest},
		{"unknown path", mustBHTTP(t, "POST", "/v1/admin", `{}`), http.StatusNotFound},
		{"GET", mustBHTTP(t, "GET", api.PathPollResult, ``), http.StatusMethodNotAllowed},
		{"unknown JSON field", mustBHTTP(t, "POST", api.PathPollResult, `{"secret":"","admin":true}`), http.StatusBadRequest},
		{"not JSON", mustBHTTP(t, "POST", api.PathPollResult, `secret=1`), http.StatusBadRequest},
	} {
		enc, rc, err := ohttp.EncapsulateRequest(cfg, tc.inner)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(w.b.URL+api.PathGateway, ohttp.MediaTypeRequest, bytes.NewReader(enc))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		plain, err := rc.DecapsulateResponse(body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r, err := bhttp.ParseResponse(plain, 0)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Status != tc.status {
			t.Errorf("%s: inner status %d (%s), want %d", tc.name, r.Status, r.Content, tc.status)
		}
	}
}

func mustBHTTP(t *testing.T, method, path, body string) []byte {
	b, err := (&bhttp.Request{Method: method, Scheme: "https", Authority: api.InnerAuthority, Path: path, Content: []byte(body)}).MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAttestationMismatch(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	_, err := client.New(ctx, client.Config{Server: w.b.URL, Expectations: attest.Expectations{Measurements: [][]byte{make([]byte, 32)}, AllowSimulated: true}})
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Fatalf("wrong measurement: %v", err)
	}
	if _, err := client.New(ctx, client.Config{Server: w.b.URL}); !errors.Is(err, attest.ErrSimulated) {
		t.Fatalf("simulated backend without AllowSimulated: %v", err)
	}
}

func TestTamperedRowsAreNeverMatched(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	a, b, x := w.device("a"), w.device("b"), w.device("x")
	at := w.now.Add(-30 * time.Hour).Truncate(time.Hour)
	device.Meet(ctx, a, x, at, 20*time.Minute, 50, 50)
	device.Meet(ctx, b, x, at.Add(-24*time.Hour), 20*time.Minute, 50, 50)
	if _, err := c.Upload(ctx, w.positive(c, x), w.window(x)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*device.Device{a, b} {
		if e, err := c.CheckExposure(ctx, w.window(d)); err != nil || !e.Exposed {
			t.Fatalf("before tampering: %+v, %v", e, err)
		}
	}
	w.stop()

	// The host flips a byte in one day's upload and moves the other day's
	// upload under another key.
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT key, day FROM records WHERE tbl = 'uploads' ORDER BY day`)
	if err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for rows.Next() {
		var k []byte
		var day int
		rows.Scan(&k, &day)
		keys = append(keys, k)
	}
	rows.Close()
	if len(keys) != 2 {
		t.Fatalf("%d upload rows, want one per day (2)", len(keys))
	}
	var val []byte
	if err := db.QueryRow(`SELECT value FROM records WHERE tbl = 'uploads' AND key = ?`, keys[0]).Scan(&val); err != nil {
		t.Fatal(err)
	}
	val[len(val)/2] ^= 1
	if _, err := db.Exec(`UPDATE records SET value = ? WHERE tbl = 'uploads' AND key = ?`, val, keys[0]); err != nil {
		t.Fatal(err)
	}
	moved := append(bytes.Clone(keys[1][:16]), 0, 0, 0, 0)
	if _, err := db.Exec(`UPDATE records SET key = ? WHERE tbl = 'uploads' AND key = ?`, moved, keys[1]); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var logs bytes.Buffer
	w.startWithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	c = w.client()
	for name, d := range map[string]*device.Device{"a": a, "b": b} {
		if e, err := c.CheckExposure(ctx, w.window(d)); err != nil || e.Exposed {
			t.Errorf("%s after tampering: exposed=%v, %v; tampered rows must never match", name, e.Exposed, err)
		}
	}
	if n := strings.Count(logs.String(), "does not open"); n != 2 {
		t.Errorf("%d tampered rows reported, want 2; logs:\n%s", n, logs.String())
	}
}

func TestRetentionDeletesTheDay(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	a, x := w.device("a"), w.device("x")
	at := w.now.Add(-3 * 24 * time.Hour).Truncate(time.Hour)
	device.Meet(ctx, a, x, at, 20*time.Minute, 50, 50)
	if _, err := c.Upload(ctx, w.positive(c, x), w.window(x)); err != nil {
		t.Fatal(err)
	}
	countDay := func(day int64) (n int) {
		db, err := sql.Open("sqlite", w.dbPath())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow(`SELECT count(*) FROM records WHERE day = ?`, day).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	day := at.Unix() / 86400
	if n := countDay(day); n < 2 {
		t.Fatalf("%d records of the encounter's day, want its upload and its day key", n)
	}
	// Twelve days later the encounter's day leaves the 14-day window.
	w.now = w.now.Add(12 * 24 * time.Hour)
	if err := w.b.Service.Enclave.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countDay(day); n != 0 {
		t.Fatalf("%d records of the expired day remain", n)
	}
	// A's tuples of that day are now outside the window; those within it
	// never met an upload.
	tuples := a.Log().Tuples(0, enid.IntervalOf(w.now)+1)
	if e, err := c.CheckExposure(ctx, tuples); err != nil || e.Exposed {
		t.Fatalf("after retention: %+v, %v", e, err)
	}
	w.restart()
	if e, err := w.client().CheckExposure(ctx, tuples); err != nil || e.Exposed {
		t.Fatalf("after retention and a restart: %+v, %v", e, err)
	}
}
