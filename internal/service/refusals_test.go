package service_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
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

// covered returns a report of ss with a fresh daily key for every day
// they fall in.
func covered(ss ...contactlog.Sighting) contactlog.Report {
	r := contactlog.Report{Sightings: ss}
	days := map[enid.Interval]bool{}
	for _, s := range ss {
		if start := s.Interval.RollingStart(); !days[start] {
			days[start] = true
			r.Keys = append(r.Keys, contactlog.DailyKey{TEK: enid.NewTEK(), Start: start, Period: enid.RollingPeriod})
		}
	}
	return r
}

func TestUploadRefusals(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	d := w.device("d")
	sighting := func(at time.Time, minutes uint8) contactlog.Sighting {
		return contactlog.Sighting{Heard: enid.RPI{2}, Interval: enid.IntervalOf(at), Minutes: minutes, Attenuation: 50}
	}
	dayKey := func(at time.Time) contactlog.DailyKey {
		return contactlog.DailyKey{TEK: enid.NewTEK(), Start: enid.IntervalOf(at).RollingStart(), Period: enid.RollingPeriod}
	}
	auth := w.positive(c, d)
	now := enid.IntervalOf(w.now)
	tooMany := make([]contactlog.Sighting, w.pol.Limits.MaxUploadSightings+1)
	for i := range tooMany {
		tooMany[i] = sighting(w.now, 1)
	}
	manyKeys := make([]contactlog.DailyKey, w.pol.MaxKeys()+1)
	for i := range manyKeys {
		manyKeys[i] = contactlog.DailyKey{TEK: enid.NewTEK(), Start: now - enid.Interval(len(manyKeys)-i), Period: 1}
	}
	stale := w.now.Add(-15 * 24 * time.Hour)
	for _, tc := range []struct {
		name string
		r    contactlog.Report
		code string
	}{
		// An upload's own identifiers come from its keys: with none, it
		// proves nothing.
		{"empty, no daily key", contactlog.Report{}, api.CodeMalformed},
		{"a sighting in the future", covered(sighting(w.now, 5), sighting(w.now.Add(time.Hour), 5)), api.CodeOutOfWindow},
		{"a key of the day after tomorrow", contactlog.Report{Keys: []contactlog.DailyKey{dayKey(w.now), dayKey(w.now.Add(48 * time.Hour))}}, api.CodeOutOfWindow},
		{"a sighting older than the window", covered(sighting(stale, 5)), api.CodeOutOfWindow},
		{"a key older than the window", contactlog.Report{Keys: []contactlog.DailyKey{dayKey(stale), dayKey(w.now)}, Sightings: []contactlog.Sighting{sighting(w.now, 5)}}, api.CodeOutOfWindow},
		{"longer than the policy allows", covered(sighting(w.now, uint8(w.pol.Limits.MaxSightingMinutes+1))), api.CodeMalformed},
		{"too many sightings", covered(tooMany...), api.CodeTooLarge},
		{"too many keys", contactlog.Report{Keys: manyKeys}, api.CodeTooLarge},
	} {
		if _, err := c.Upload(ctx, auth, tc.r); !isCode(err, tc.code) {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	// The refused uploads did not use up the authorization...
	if up, err := c.Upload(ctx, auth, covered(sighting(w.now, 5))); err != nil || up != (api.UploadResponse{Sightings: 1, Keys: 1}) {
		t.Fatalf("valid upload after refusals: %+v, %v", up, err)
	}

	// ...but time does: an authorization expires.
	e := w.device("e")
	auth2 := w.positive(c, e)
	w.now = w.now.Add(w.pol.UploadAuthorizationTTL() + time.Minute)
	if _, err := c.Upload(ctx, auth2, covered(sighting(w.now, 5))); !isCode(err, api.CodeExpired) {
		t.Fatalf("expired authorization: %v", err)
	}
}

// postInner sends one inner request through the gateway, as a client of
// its own could, and returns the decrypted answer.
func postInner(t *testing.T, w *world, inner []byte) *bhttp.Response {
	t.Helper()
	cfgs, err := ohttp.ParseKeyConfigs(w.b.Service.Bundle.KeyConfigs)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ohttp.SelectKeyConfig(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	enc, rc, err := ohttp.EncapsulateRequest(cfg, inner)
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
		t.Fatal(err)
	}
	r, err := bhttp.ParseResponse(plain, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The backend refuses, as malformed, the reports that the SDK never sends
// (another implementation might): it cannot take on trust what it cannot
// derive. The refusal does not use up the authorization.
func TestMalformedReportRefused(t *testing.T) {
	w := newWorld(t)
	c := w.client()
	auth := w.positive(c, w.device("d"))
	now := enid.IntervalOf(w.now)
	key := contactlog.DailyKey{TEK: enid.NewTEK(), Start: now.RollingStart(), Period: enid.RollingPeriod}
	good := contactlog.Report{Keys: []contactlog.DailyKey{key}, Sightings: []contactlog.Sighting{{Heard: enid.RPI{3}, Interval: now, Minutes: 5, Attenuation: 50}}}
	goodWire, err := good.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The encoding is documented; these edit it where Report would refuse.
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(goodWire)) }
	sightingAt := 2 + contactlog.DailyKeySize + 4
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"a sighting of no minutes", edit(func(b []byte) []byte { b[sightingAt+20] = 0; return b })},
		{"a sighting no key covers", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[sightingAt+16:], uint32(key.Start-1))
			return b
		})},
		{"a key of no intervals", edit(func(b []byte) []byte { b[2+20] = 0; return b })},
		{"overlapping keys", func() []byte {
			b := []byte{contactlog.ReportVersion, 2}
			for range 2 {
				b = append(b, goodWire[2:2+contactlog.DailyKeySize]...)
			}
			return append(b, goodWire[2+contactlog.DailyKeySize:]...)
		}()},
		{"the unreleased version 1", edit(func(b []byte) []byte { b[0] = 1; return b })},
		{"truncated", goodWire[:len(goodWire)-1]},
		{"trailing bytes", append(bytes.Clone(goodWire), 0)},
		{"empty", nil},
		{"JSON", []byte(`{"report":"` + base64.StdEncoding.EncodeToString(goodWire) + `"}`)},
	} {
		for _, path := range []string{api.PathUpload, api.PathCheckExposure} {
			body := tc.body
			if path == api.PathUpload {
				body = append(bytes.Clone(auth), body...)
			}
			r := postInner(t, w, mustBinaryBHTTP(t, path, body))
			var ae api.Error
			if err := json.Unmarshal(r.Content, &ae); err != nil || r.Status != http.StatusBadRequest || ae.Code != api.CodeMalformed {
				t.Errorf("%s to %s: status %d, %s; want %d %s", tc.name, path, r.Status, r.Content, http.StatusBadRequest, api.CodeMalformed)
			}
		}
	}
	// An upload too short to hold an authorization is malformed too.
	if r := postInner(t, w, mustBinaryBHTTP(t, api.PathUpload, auth[:api.AuthorizationSize-1])); r.Status != http.StatusBadRequest {
		t.Errorf("an upload of %d bytes: status %d, %s; want %d", api.AuthorizationSize-1, r.Status, r.Content, http.StatusBadRequest)
	}
	// The hand-built form of the valid report is accepted, once.
	var up api.UploadResponse
	r := postInner(t, w, mustBinaryBHTTP(t, api.PathUpload, append(bytes.Clone(auth), goodWire...)))
	if err := json.Unmarshal(r.Content, &up); err != nil || r.Status != http.StatusOK || up != (api.UploadResponse{Sightings: 1, Keys: 1}) {
		t.Fatalf("the valid report after the refusals: status %d, %s", r.Status, r.Content)
	}
}

func mustBinaryBHTTP(t *testing.T, path string, body []byte) []byte {
	t.Helper()
	b, err := (&bhttp.Request{Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: path,
		Header: []bhttp.Field{{Name: "content-type", Value: api.MediaTypeReport}}, Content: body}).MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	return b
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
		if r := postInner(t, w, tc.inner); r.Status != tc.status {
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
	if e, err := c.CheckExposure(ctx, w.window(a)); err != nil || !e.Exposed {
		t.Fatalf("before retention: %+v, %v; want exposed", e, err)
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
	// A's sightings of that day, and its key, are now outside the window:
	// a check that still sends them is answered, not refused, and they
	// match nothing.
	everything := contactlog.Report{Keys: a.Keys(0, math.MaxUint32), Sightings: a.Log().Sightings(0, math.MaxUint32)}
	if len(everything.Keys) == 0 || len(everything.Sightings) == 0 {
		t.Fatal("A forgot the encounter")
	}
	if e, err := c.CheckExposure(ctx, everything); err != nil || e.Exposed {
		t.Fatalf("after retention: %+v, %v", e, err)
	}
	w.restart()
	if e, err := w.client().CheckExposure(ctx, everything); err != nil || e.Exposed {
		t.Fatalf("after retention and a restart: %+v, %v", e, err)
	}
}
