package service_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
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
	"github.com/conftrace/conftrace/policy"
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
		{"from the future", future, api.CodeFutureDated},
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
	// A secret that is not one cannot be put in an exchange at all.
	if _, err := c.PollResult(ctx, []byte("short")); err == nil || errors.As(err, new(*api.Error)) {
		t.Fatalf("short secret: %v, want it refused before it is sent", err)
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
		// An upload is its exchange's report, whose parts before the
		// window are left out: with nothing left, there is nothing to
		// upload.
		{"only a sighting older than the window", covered(sighting(stale, 5)), api.CodeMalformed},
		{"longer than the policy allows", covered(sighting(w.now, uint8(w.pol.Limits.MaxSightingMinutes+1))), api.CodeMalformed},
		{"too many sightings", covered(tooMany...), api.CodeTooLarge},
		{"too many keys", contactlog.Report{Keys: manyKeys}, api.CodeTooLarge},
	} {
		if _, err := c.Upload(ctx, auth, tc.r); !isCode(err, tc.code) {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	// The refused uploads did not use up the authorization. A key and a
	// sighting older than the window are left out of the upload.
	valid := covered(sighting(w.now, 5))
	valid.Keys = append([]contactlog.DailyKey{dayKey(stale)}, valid.Keys...)
	valid.Sightings = append([]contactlog.Sighting{sighting(stale, 5)}, valid.Sightings...)
	if up, err := c.Upload(ctx, auth, valid); err != nil || up.Sightings != 1 || up.Keys != 1 {
		t.Fatalf("valid upload after refusals: %+v, %v; want the sighting and the key of the window", up, err)
	}

	// Time does use it up: an authorization expires. The next poll
	// hands out another.
	e := w.device("e")
	auth2 := w.positive(c, e)
	tst, _ := e.Test()
	pr, err := c.PollResult(ctx, tst.Secret)
	if err != nil || !bytes.Equal(pr.UploadAuthorization, auth2) {
		t.Fatalf("poll: %+v, %v; want the same authorization", pr, err)
	}
	w.now = time.Unix(pr.ExpiresAt, 0).Add(time.Minute)
	if _, err := c.Upload(ctx, auth2, covered(sighting(w.now, 5))); !isCode(err, api.CodeExpired) {
		t.Fatalf("expired authorization: %v", err)
	}
	pr, err = c.PollResult(ctx, tst.Secret)
	if err != nil || len(pr.UploadAuthorization) != api.AuthorizationSize || bytes.Equal(pr.UploadAuthorization, auth2) {
		t.Fatalf("poll after the authorization expired: %+v, %v; want a new one", pr, err)
	}
	if _, err := c.Upload(ctx, pr.UploadAuthorization, covered(sighting(w.now, 5))); err != nil {
		t.Fatalf("upload with the new authorization: %v", err)
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
	// The report's one key with its sighting count, then its sighting:
	// heard RPI prefix, offset in the key, minutes, attenuation.
	sightingAt := 2 + contactlog.DailyKeySize + 2
	exchange := func(upload bool, report []byte) []byte {
		r := api.ExchangeRequest{Report: report}
		if upload {
			r.Flags, r.Authorization = api.ExchangeUpload, auth
		}
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"a sighting of no minutes", edit(func(b []byte) []byte { b[sightingAt+contactlog.RPIPrefixSize+1] = 0; return b })},
		{"a sighting past its key's validity", edit(func(b []byte) []byte { b[sightingAt+contactlog.RPIPrefixSize] = enid.RollingPeriod; return b })},
		{"a key of no intervals", edit(func(b []byte) []byte { b[2+20] = 0; return b })},
		{"overlapping keys", func() []byte {
			b := []byte{contactlog.ReportVersion, 2}
			b = append(b, goodWire[2:sightingAt]...)
			b = append(b, goodWire[2:2+contactlog.DailyKeySize]...)
			b = append(b, 0, 0) // the second copy covers no sighting
			return append(b, goodWire[sightingAt:]...)
		}()},
		{"the unreleased version 1", edit(func(b []byte) []byte { b[0] = 1; return b })},
		{"the unreleased version 2", edit(func(b []byte) []byte { b[0] = 2; return b })},
		{"truncated", goodWire[:len(goodWire)-1]},
		{"trailing bytes", append(bytes.Clone(goodWire), 0)},
		{"empty", nil},
		{"JSON", []byte(`{"report":"` + base64.StdEncoding.EncodeToString(goodWire) + `"}`)},
	} {
		for _, upload := range []bool{false, true} {
			r := postInner(t, w, mustBinaryBHTTP(t, w, api.PathExchange, exchange(upload, tc.body)))
			var ae api.Error
			if err := json.Unmarshal(r.Content, &ae); err != nil || r.Status != http.StatusBadRequest || ae.Code != api.CodeMalformed {
				t.Errorf("%s, upload %t: status %d, %s; want %d %s", tc.name, upload, r.Status, r.Content, http.StatusBadRequest, api.CodeMalformed)
			}
		}
	}
	// An exchange too short to hold its header is malformed too, and so
	// is a body that is only a report, as the removed paths took them.
	for name, body := range map[string][]byte{
		"a header without its report's room": exchange(true, nil)[:2+api.TestSecretSize+api.AuthorizationSize-1],
		"a bare report":                      goodWire,
		"an authorization and a report":      append(bytes.Clone(auth), goodWire...),
	} {
		if r := postInner(t, w, mustBinaryBHTTP(t, w, api.PathExchange, body)); r.Status != http.StatusBadRequest {
			t.Errorf("%s: status %d, %s; want %d", name, r.Status, r.Content, http.StatusBadRequest)
		}
	}
	// The hand-built form of the valid report is accepted, once.
	var resp api.ExchangeResponse
	r := postInner(t, w, mustBinaryBHTTP(t, w, api.PathExchange, exchange(true, goodWire)))
	if err := json.Unmarshal(r.Content, &resp); err != nil || r.Status != http.StatusOK || resp.Upload == nil || resp.Upload.Sightings != 1 || resp.Upload.Keys != 1 {
		t.Fatalf("the valid report after the refusals: status %d, %s", r.Status, r.Content)
	}
}

// mustBinaryBHTTP returns a padded inner POST of a binary body, dated at
// the world's time.
func mustBinaryBHTTP(t *testing.T, w *world, path string, body []byte) []byte {
	t.Helper()
	b, err := (&bhttp.Request{Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: path,
		Header: []bhttp.Field{{Name: "content-type", Value: api.MediaTypeReport}, {Name: "date", Value: w.now.UTC().Format(http.TimeFormat)}}, Content: body}).MarshalPadded()
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
		{"unknown path", mustBHTTP(t, w, "POST", "/v1/admin", `{}`), http.StatusNotFound},
		{"GET", mustBHTTP(t, w, "GET", api.PathExchange, ``), http.StatusMethodNotAllowed},
		{"unknown JSON field", mustBHTTP(t, w, "POST", api.PathSubmitResult, `{"authority":"","admin":true}`), http.StatusBadRequest},
		{"not JSON", mustBHTTP(t, w, "POST", api.PathSubmitResult, `secret=1`), http.StatusBadRequest},
		// Phones make one request, the exchange: the paths it replaced
		// are gone.
		{"the removed result poll", mustBHTTP(t, w, "POST", api.PathPollResult, `{"secret":""}`), http.StatusNotFound},
		{"the removed upload", mustBHTTP(t, w, "POST", api.PathUpload, ``), http.StatusNotFound},
		{"the removed exposure check", mustBHTTP(t, w, "POST", api.PathCheckExposure, ``), http.StatusNotFound},
	} {
		if r := postInner(t, w, tc.inner); r.Status != tc.status {
			t.Errorf("%s: inner status %d (%s), want %d", tc.name, r.Status, r.Content, tc.status)
		}
	}
}

// mustBHTTP returns a padded inner request, dated at the world's time.
func mustBHTTP(t *testing.T, w *world, method, path, body string) []byte {
	b, err := (&bhttp.Request{Method: method, Scheme: "https", Authority: api.InnerAuthority, Path: path,
		Header: []bhttp.Field{{Name: "date", Value: w.now.UTC().Format(http.TimeFormat)}}, Content: []byte(body)}).MarshalPadded()
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

// journalRows returns the keys and values of the rows the journal's
// flushes wrote, in key order.
func journalRows(t *testing.T, w *world) (keys, values [][]byte) {
	t.Helper()
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT key, value FROM records WHERE tbl = 'journal' ORDER BY key`)
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

// The host cannot tell which of the journal's rows hold an upload; it can
// change them. A row changed in any way, or moved under another key, does
// not open: it is reported and never matched, and the upload it held is
// lost, so that its owner's poll hands out an authorization again.
func TestTamperedRowsAreNeverMatched(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	a, b, x := w.device("a"), w.device("b"), w.device("x")
	at := w.now.Add(-30 * time.Hour).Truncate(time.Hour)
	device.Meet(ctx, a, x, at, 20*time.Minute, 50, 50)
	device.Meet(ctx, b, x, at.Add(-24*time.Hour), 20*time.Minute, 50, 50)
	up, err := c.Upload(ctx, w.positive(c, x), w.window(x))
	if err != nil {
		t.Fatal(err)
	}
	w.flush(up.DurableBy)
	for _, d := range []*device.Device{a, b} {
		if e, err := c.CheckExposure(ctx, w.window(d)); err != nil || !e.Exposed {
			t.Fatalf("before tampering: %+v, %v", e, err)
		}
	}
	w.stop()

	// One flush's rows: every one of the same size, the upload's parts
	// among the filler.
	keys, values := journalRows(t, w)
	if len(keys) != w.pol.StoreFlushRows {
		t.Fatalf("%d journal rows, want one flush of %d", len(keys), w.pol.StoreFlushRows)
	}
	// The host flips a byte in every other row and moves the rest under
	// other keys.
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if len(values[i]) != policy.StoreRowBytes {
			t.Errorf("journal row %d is %d bytes, want %d", i, len(values[i]), policy.StoreRowBytes)
		}
		if i%2 == 0 {
			v := bytes.Clone(values[i])
			v[len(v)/2] ^= 1
			_, err = db.Exec(`UPDATE records SET value = ? WHERE tbl = 'journal' AND key = ?`, v, k)
		} else {
			moved := append(bytes.Clone(k[:len(k)-4]), 0, 0, 0, byte(i))
			_, err = db.Exec(`UPDATE records SET key = ? WHERE tbl = 'journal' AND key = ?`, moved, k)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	var logs bytes.Buffer
	w.startWithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	c = w.client()
	for name, d := range map[string]*device.Device{"a": a, "b": b} {
		if e, err := c.CheckExposure(ctx, w.window(d)); err != nil || !notExposed(e) {
			t.Errorf("%s after tampering: %+v, %v; tampered rows must never match", name, e, err)
		}
	}
	if n := strings.Count(logs.String(), "journal row does not open"); n != len(keys) {
		t.Errorf("%d tampered rows reported, want %d; logs:\n%s", n, len(keys), logs.String())
	}
	tst, _ := x.Test()
	if pr, err := c.PollResult(ctx, tst.Secret); err != nil || pr.Uploaded || len(pr.UploadAuthorization) == 0 {
		t.Errorf("x's poll after its upload was destroyed: %+v, %v; want an authorization again", pr, err)
	}
}

// Retention deletes a day's key, and with it every record of the day:
// those stored under it, and the parts of uploads that belong to it,
// which the journal stored under the day of their flush and which no
// longer open.
func TestRetentionDeletesTheDay(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.client()
	a, x := w.device("a"), w.device("x")
	at := w.now.Add(-3 * 24 * time.Hour).Truncate(time.Hour)
	device.Meet(ctx, a, x, at, 20*time.Minute, 50, 50)
	up, err := c.Upload(ctx, w.positive(c, x), w.window(x))
	if err != nil {
		t.Fatal(err)
	}
	w.flush(up.DurableBy)
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
	if n := countDay(day); n < 1 {
		t.Fatalf("%d records of the encounter's day, want at least its day key", n)
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
	if e, err := c.CheckExposure(ctx, everything); err != nil || !notExposed(e) {
		t.Fatalf("after retention: %+v, %v", e, err)
	}
	// After a restart, the upload's part of that day is still in the
	// journal's row, which no longer opens: counted as expired, not as
	// tampered, and never matched.
	var logs bytes.Buffer
	w.stop()
	w.startWithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	if e, err := w.client().CheckExposure(ctx, everything); err != nil || !notExposed(e) {
		t.Fatalf("after retention and a restart: %+v, %v", e, err)
	}
	if !strings.Contains(logs.String(), "expired_rows=1 ") || strings.Contains(logs.String(), "does not open") {
		t.Errorf("the journal's replay after retention: want one expired row and none refused; logs:\n%s", logs.String())
	}
}
