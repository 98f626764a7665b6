package client_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// scripted is an attested gateway whose answers the test writes, and which
// shows the test the decrypted requests: for what a client puts inside the
// encryption, and for answers a real backend never gives.
type scripted struct {
	URL    string
	mu     sync.Mutex
	plain  [][]byte // decrypted requests, padding included
	answer func(*bhttp.Request) []byte
}

// newScripted serves a bundle valid for a day from now, and answers
// requests with answer.
func newScripted(t testing.TB, now time.Time, answer func(*bhttp.Request) []byte) *scripted {
	t.Helper()
	key, err := ohttp.GenerateKey(3, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		t.Fatal(err)
	}
	doc, err := policy.Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	bundle := marshal(t, forgeBundleAt(t, testMeasurement, keys, doc, now, now.Add(24*time.Hour), nil))
	s := &scripted{answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == api.PathAttestation {
			w.Write(bundle)
			return
		}
		body, _ := io.ReadAll(r.Body)
		plain, rc, err := gw.DecapsulateRequest(body)
		if err != nil {
			t.Errorf("gateway: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := bhttp.ParseRequest(plain, 0)
		if err != nil {
			t.Errorf("gateway: inner request: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.plain = append(s.plain, plain)
		s.mu.Unlock()
		enc, err := rc.EncapsulateResponse(s.answer(req))
		if err != nil {
			t.Errorf("gateway: %v", err)
			return
		}
		w.Write(enc)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *scripted) requests(t testing.TB) []*bhttp.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var rs []*bhttp.Request
	for _, p := range s.plain {
		r, err := bhttp.ParseRequest(p, 0)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// respond encodes an inner answer.
func respond(status int, content string) []byte {
	b, err := (&bhttp.Response{Status: status, Header: []bhttp.Field{{Name: "content-type", Value: "application/json"}}, Content: []byte(content)}).MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

func scriptedClient(t testing.TB, s *scripted, now func() time.Time) *client.Client {
	t.Helper()
	c, err := client.New(t.Context(), client.Config{Server: s.URL, Expectations: expectations(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exchangeAnswer is an answer to an exchange that polled and uploaded.
const exchangeAnswer = `{"exposure":{"exposed":false,"last_exposure":"","reciprocal":false,"one_sided":false},` +
	`"result":{"result":"pending"},"upload":{"sightings":1,"keys":2,"durable":false,"durable_by":1}}`

// What the client encrypts: a dated POST to the endpoint's inner path, of
// JSON or, for exchanges, decoys and GAEN exports, of their binary form
// under its own content type, padded to a size class so that its length
// says little. Polls, uploads and checks are all exchanges, of one layout.
func TestInnerRequests(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	s := newScripted(t, clk.Now(), func(r *bhttp.Request) []byte {
		if r.Path == api.PathExchange {
			return respond(http.StatusOK, exchangeAnswer)
		}
		return respond(http.StatusOK, `{}`)
	})
	c := scriptedClient(t, s, clk.Now)
	now := clk.Now()

	day := enid.IntervalOf(now).RollingStart()
	// Keys out of order: the client sends them sorted, as the format wants.
	report := contactlog.Report{
		Keys: []contactlog.DailyKey{
			{TEK: enid.TEK{9}, Start: day, Period: enid.RollingPeriod},
			{TEK: enid.TEK{8}, Start: day - enid.RollingPeriod, Period: enid.RollingPeriod},
		},
		Sightings: []contactlog.Sighting{{Heard: enid.RPI{5}, Interval: day + 7, Minutes: 10, Attenuation: 50}},
	}
	secret := bytes.Repeat([]byte{0x5a}, api.TestSecretSize)
	auth := bytes.Repeat([]byte{0xa5}, api.AuthorizationSize)
	export := []byte("PK\x03\x04 the zip file of a GAEN key export")
	start := c.Policy().WindowStart(now)
	old := gps.Trace{{Time: start.Add(-time.Hour).Unix(), Lat: 46.5, Lon: 6.6}, {Time: start.Add(-time.Second).Unix(), Lat: 46.5, Lon: 6.6}}
	recent := gps.Trace{{Time: start.Unix(), Lat: 46.5, Lon: 6.6}, {Time: now.Unix(), Lat: 46.5, Lon: 6.6}}
	recentWire, _ := recent.MarshalBinary()
	signed := api.SignedTrace{Authority: "lab", Trace: recentWire, IssuedAt: 1, Nonce: []byte{1}, Signature: []byte{2}}
	result := api.SignedResult{Authority: "lab", TestCode: "ABCD-EFGH-JKMN-PQRS1", Result: api.Positive, IssuedAt: 1}

	errs := []error{c.SubmitResult(ctx, result)}
	pr, err := c.PollResult(ctx, secret)
	if pr.Result != api.Pending {
		t.Errorf("PollResult: %+v, want the exchange's result", pr)
	}
	errs = append(errs, err)
	up, err := c.Upload(ctx, auth, report)
	if up != (api.UploadResponse{Sightings: 1, Keys: 2, DurableBy: 1}) {
		t.Errorf("Upload: %+v, want the exchange's upload", up)
	}
	errs = append(errs, err)
	_, err = c.CheckExposure(ctx, report)
	errs = append(errs, err)
	_, err = c.Exchange(ctx, client.Daily{Report: report, Secret: secret, Upload: true})
	errs = append(errs, err)
	_, err = c.SubmitTrace(ctx, signed)
	errs = append(errs, err)
	_, err = c.CheckTrace(ctx, append(old, recent...))
	errs = append(errs, err, c.Decoy(ctx, 3))
	_, err = c.ImportGAEN(ctx, export)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	// The report's documented encoding, written out by hand: the keys,
	// each with the count of its sightings, then the sighting under the
	// second key, its heard RPI's prefix and its offset in the key.
	var rep []byte
	rep = append(rep, contactlog.ReportVersion, 2)
	for _, k := range []struct {
		tek       byte
		start     enid.Interval
		sightings uint16
	}{{8, day - enid.RollingPeriod, 0}, {9, day, 1}} {
		rep = append(rep, k.tek)
		rep = append(rep, make([]byte, 15)...)
		rep = binary.BigEndian.AppendUint32(rep, uint32(k.start))
		rep = append(rep, enid.RollingPeriod)
		rep = binary.BigEndian.AppendUint16(rep, k.sightings)
	}
	rep = append(rep, 5)
	rep = append(rep, make([]byte, 7)...)
	rep = append(rep, 7, 10, 50)
	// An exchange, written out by hand: version 2, flags, the secret, the
	// authorization and the certificate nonce (zeros when absent), the
	// report.
	exchange := func(flags byte, secret, auth, report []byte) []byte {
		b := []byte{2, flags}
		b = append(b, secret...)
		b = append(b, make([]byte, 2+api.TestSecretSize-len(b))...)
		b = append(b, auth...)
		b = append(b, make([]byte, 2+api.TestSecretSize+api.AuthorizationSize-len(b))...)
		b = append(b, make([]byte, api.CertificateNonceSize)...)
		return append(b, report...)
	}
	emptyReport := []byte{contactlog.ReportVersion, 0}

	const jsonType = "application/json"
	want := []struct {
		path, contentType string
		body              []byte
	}{
		{api.PathSubmitResult, jsonType, marshal(t, result)},
		// A poll alone is an exchange without a report's contents.
		{api.PathExchange, api.MediaTypeReport, exchange(api.ExchangePoll, secret, nil, emptyReport)},
		// In binary: no JSON, no base64.
		{api.PathExchange, api.MediaTypeReport, exchange(api.ExchangeUpload, nil, auth, rep)},
		{api.PathExchange, api.MediaTypeReport, exchange(0, nil, nil, rep)},
		{api.PathExchange, api.MediaTypeReport, exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, rep)},
		{api.PathSubmitTrace, jsonType, marshal(t, signed)},
		// Fixes before the window are not sent; those from its first
		// second on are.
		// The certificate nonce is there, zeros, when not asking.
		{api.PathCheckTrace, jsonType, marshal(t, api.TraceCheckRequest{Trace: recentWire, CertificateNonce: make([]byte, api.CertificateNonceSize)})},
		// A decoy's filler is random: no two decoys are the same request.
		{api.PathDecoy, api.MediaTypeReport, nil},
		{api.PathImportGAEN, api.MediaTypeZip, export},
	}
	reqs := s.requests(t)
	if len(reqs) != len(want) {
		t.Fatalf("gateway received %d requests, want %d", len(reqs), len(want))
	}
	s.mu.Lock()
	plain := slices.Clone(s.plain)
	s.mu.Unlock()
	date := now.UTC().Format(http.TimeFormat)
	for i, r := range reqs {
		w := want[i]
		if r.Method != http.MethodPost || r.Scheme != "https" || r.Authority != api.InnerAuthority || r.Path != w.path {
			t.Errorf("request %d: %s %s://%s%s, want POST https://%s%s", i, r.Method, r.Scheme, r.Authority, r.Path, api.InnerAuthority, w.path)
		}
		if !slices.Equal(r.Header, []bhttp.Field{{Name: "content-type", Value: w.contentType}, {Name: "date", Value: date}}) {
			t.Errorf("request %d to %s: header %v, want only the content type %s and the date %s", i, w.path, r.Header, w.contentType, date)
		}
		switch {
		case w.path == api.PathDecoy:
			// At least the filler asked for (more stands in for an
			// exchange's header), random.
			if len(r.Content) < 3 || bytes.Equal(r.Content, make([]byte, len(r.Content))) {
				t.Errorf("request %d to %s: body %q, want at least 3 random bytes", i, w.path, r.Content)
			}
		case !bytes.Equal(r.Content, w.body):
			t.Errorf("request %d to %s: body %q, want %q", i, w.path, r.Content, w.body)
		}
		if !slices.Contains(bhttp.SizeClasses(), len(plain[i])) {
			t.Errorf("request %d: %d bytes inside the encryption, not a size class", i, len(plain[i]))
		}
	}
}

// Answers that no conftrace backend gives are errors, not zero values.
func TestInnerAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer []byte
		check  func(error) bool
	}{
		{"refusal", respond(http.StatusConflict, `{"code":"replayed","message":"seen"}`), func(err error) bool {
			var ae *api.Error
			return errors.As(err, &ae) && ae.Code == api.CodeReplayed && ae.Message == "seen"
		}},
		{"error without a code", respond(http.StatusServiceUnavailable, `{"message":"busy"}`), func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "status 503") && !errors.As(err, new(*api.Error))
		}},
		{"error not in JSON", respond(http.StatusBadGateway, `<html>`), func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "status 502")
		}},
		{"answer not in JSON", respond(http.StatusOK, `<html>`), func(err error) bool {
			var se *json.SyntaxError
			return errors.As(err, &se)
		}},
		{"answer of another type", respond(http.StatusOK, `{"result":7}`), func(err error) bool {
			var te *json.UnmarshalTypeError
			return errors.As(err, &te)
		}},
		{"not binary HTTP", []byte{9, 9, 9}, func(err error) bool { return errors.Is(err, bhttp.ErrMalformed) }},
		{"truncated binary HTTP", respond(http.StatusOK, `{"result":"positive"}`)[:6], func(err error) bool { return errors.Is(err, bhttp.ErrTruncated) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newScripted(t, time.Now(), func(*bhttp.Request) []byte { return bytes.Clone(tc.answer) })
			c := scriptedClient(t, s, nil)
			pr, err := c.PollResult(t.Context(), make([]byte, api.TestSecretSize))
			if !tc.check(err) {
				t.Fatalf("PollResult: %+v, %v", pr, err)
			}
		})
	}
}
