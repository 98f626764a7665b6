package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/ohttp"
)

// replayServer is a server whose clock the test sets, with a third party
// that encapsulates requests to it.
func replayServer(t *testing.T, now *time.Time) (*Server, ohttp.KeyConfig) {
	t.Helper()
	key, err := ohttp.GenerateKey(1, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ohttp.NewGateway(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Backend: &fakeBackend{}, Gateway: gw, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return s, key.KeyConfig()
}

// send posts enc to s and returns the inner answer's refusal code ("" for
// a success).
func send(t *testing.T, s *Server, rc *ohttp.RequestContext, enc []byte) string {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, api.PathGateway, bytes.NewReader(enc))
	r.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("gateway answered %d: %s", rec.Code, rec.Body.Bytes())
	}
	out, err := rc.DecapsulateResponse(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := bhttp.ParseResponse(out, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status == http.StatusOK {
		return ""
	}
	var e api.Error
	json.Unmarshal(bytes.TrimRight(resp.Content, "\x00"), &e)
	return e.Code
}

// dated returns an encapsulated exchange dated at.
func dated(t *testing.T, cfg ohttp.KeyConfig, at time.Time) ([]byte, *ohttp.RequestContext) {
	t.Helper()
	req := &bhttp.Request{Method: http.MethodPost, Scheme: "https", Authority: api.InnerAuthority, Path: api.PathSubmitResult,
		Header: []bhttp.Field{{Name: "date", Value: at.UTC().Format(http.TimeFormat)}}, Content: []byte(`{}`)}
	plain, err := req.MarshalPadded()
	if err != nil {
		t.Fatal(err)
	}
	enc, rc, err := ohttp.EncapsulateRequest(cfg, plain)
	if err != nil {
		t.Fatal(err)
	}
	return enc, rc
}

// An encapsulated request is answered once: a relay that replays it, at
// once or later, is refused, and so is a request dated outside the window,
// before the gateway started, or undated (RFC 9458, section 6.5).
func TestReplayRefused(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	s, cfg := replayServer(t, &now)

	enc, rc := dated(t, cfg, now)
	if code := send(t, s, rc, enc); code != "" && code != api.CodeMalformed {
		t.Fatalf("first delivery refused: %s", code)
	}
	if code := send(t, s, rc, enc); code != api.CodeReplayed {
		t.Errorf("the same encapsulated request again: %q, want %q", code, api.CodeReplayed)
	}
	now = now.Add(DateWindow - time.Second)
	if code := send(t, s, rc, enc); code != api.CodeReplayed {
		t.Errorf("replayed at the end of the window: %q, want %q", code, api.CodeReplayed)
	}
	now = now.Add(2 * time.Second)
	if code := send(t, s, rc, enc); code != api.CodeStale {
		t.Errorf("replayed after the window: %q, want %q", code, api.CodeStale)
	}

	// Another request of the same content, encapsulated anew, is answered.
	again, rc2 := dated(t, cfg, now)
	if code := send(t, s, rc2, again); code == api.CodeReplayed || code == api.CodeStale {
		t.Errorf("a fresh request of the same content: %q", code)
	}
	for name, at := range map[string]time.Time{
		"too old":                now.Add(-DateWindow - time.Second),
		"too far ahead":          now.Add(DateWindow + time.Second),
		"before the gateway ran": time.Date(2026, 3, 10, 11, 59, 59, 0, time.UTC),
	} {
		enc, rc := dated(t, cfg, at)
		if code := send(t, s, rc, enc); code != api.CodeStale {
			t.Errorf("%s: %q, want %q", name, code, api.CodeStale)
		}
	}

	req := &bhttp.Request{Method: http.MethodPost, Scheme: "https", Authority: api.InnerAuthority, Path: api.PathSubmitResult, Content: []byte(`{}`)}
	plain, _ := req.MarshalPadded()
	enc, rc = mustEncapsulate(t, cfg, plain)
	if code := send(t, s, rc, enc); code != api.CodeMalformed {
		t.Errorf("undated request: %q, want %q", code, api.CodeMalformed)
	}
}

func mustEncapsulate(t *testing.T, cfg ohttp.KeyConfig, plain []byte) ([]byte, *ohttp.RequestContext) {
	t.Helper()
	enc, rc, err := ohttp.EncapsulateRequest(cfg, plain)
	if err != nil {
		t.Fatal(err)
	}
	return enc, rc
}

// The remembered requests are bounded: past the limit, new requests are
// refused until the window moves on, rather than grow the enclave's memory.
func TestReplayGuardBounded(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	g := newReplayGuard(func() time.Time { return now })
	req := &bhttp.Request{Header: []bhttp.Field{{Name: "date", Value: now.Format(http.TimeFormat)}}}
	for i := range maxSeen {
		var id [16]byte
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		if err := g.check(id, req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := g.check([16]byte{0xff, 0xff, 0xff, 0xff}, req); err == nil {
		t.Fatal("a request past the bound was admitted")
	}
	now = now.Add(4 * DateWindow)
	req.Header[0].Value = now.Format(http.TimeFormat)
	if err := g.check([16]byte{0xff, 0xff, 0xff, 0xff}, req); err != nil {
		t.Fatalf("after the window moved on: %v", err)
	}
}
