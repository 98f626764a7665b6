package localbackend_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/internal/localbackend"
)

// thirdPartyDir holds the Node.js client built from other people's HPKE
// and Binary HTTP; scripts/test.sh installs its packages.
const thirdPartyDir = "testdata/ohttp-js"

// thirdPartyRequest is one inner request the third-party client sends.
type thirdPartyRequest struct {
	Name        string `json:"name"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"` // base64, as encoding/json writes it
}

// thirdPartyAnswer is what the client saw of one request.
type thirdPartyAnswer struct {
	Name         string `json:"name"`
	RequestBytes int    `json:"request_bytes"`
	OuterStatus  int    `json:"outer_status"`
	AnswerBytes  int    `json:"answer_bytes"`
	OuterBody    string `json:"outer_body"`
	InnerBytes   int    `json:"inner_bytes"`
	Status       int    `json:"status"`
	Content      []byte `json:"content"`
}

// runThirdParty runs the Node.js client against url: it sends reqs, each
// padded to pad bytes, then reqs[replay]'s encapsulation again. It skips
// the test when Node.js or the client's packages are missing, unless
// CONFTRACE_REQUIRE_NODE is set (scripts/test.sh sets it).
func runThirdParty(t *testing.T, url string, pad, replay int, reqs []thirdPartyRequest) (results []thirdPartyAnswer, replayed thirdPartyAnswer) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(thirdPartyDir, "node_modules", "bhttp-js"))
	}
	if err != nil {
		if os.Getenv("CONFTRACE_REQUIRE_NODE") != "" {
			t.Fatalf("the third-party OHTTP client cannot run: %v", err)
		}
		t.Skipf("the third-party OHTTP client needs Node.js and its packages (bash scripts/test.sh installs them): %v", err)
	}
	spec, err := json.Marshal(map[string]any{"pad": pad, "replay": replay, "requests": reqs})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "requests.json")
	if err := os.WriteFile(file, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), node, "client.mjs", url, file)
	cmd.Dir = thirdPartyDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("third-party client: %v\n%s", err, stderr.Bytes())
	}
	var got struct {
		Results []thirdPartyAnswer `json:"results"`
		Replay  thirdPartyAnswer   `json:"replay"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("third-party client printed %q: %v", out, err)
	}
	if len(got.Results) != len(reqs) {
		t.Fatalf("third-party client answered %d requests, sent %d", len(got.Results), len(reqs))
	}
	return got.Results, got.Replay
}

// A client that shares no code with conftrace (hpke-js, bhttp-js and
// RFC 9458 written out in JavaScript) sends inner requests of one size to
// every kind of inner path of a real backend, over real HTTP: every answer
// it sees on the wire has one size, whatever was asked and whether it was
// refused, and the same encapsulated request sent again is refused as a
// replay.
func TestThirdPartyClient(t *testing.T) {
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	report := yesterdaysReport(t, time.Now())
	exchange := func(r api.ExchangeRequest) []byte {
		r.Report = report
		body, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	secret := bytes.Repeat([]byte{7}, api.TestSecretSize)
	forged := bytes.Repeat([]byte{9}, api.AuthorizationSize)
	post := func(name, path, ct string, body []byte) thirdPartyRequest {
		return thirdPartyRequest{Name: name, Method: http.MethodPost, Path: path, ContentType: ct, Body: body}
	}
	reqs := []thirdPartyRequest{
		post("a daily check", api.PathExchange, api.MediaTypeReport, exchange(api.ExchangeRequest{})),
		post("a check with a poll", api.PathExchange, api.MediaTypeReport, exchange(api.ExchangeRequest{Flags: api.ExchangePoll, Secret: secret})),
		post("an upload under a forged authorization", api.PathExchange, api.MediaTypeReport, exchange(api.ExchangeRequest{Flags: api.ExchangeUpload, Authorization: forged})),
		post("a malformed exchange", api.PathExchange, api.MediaTypeReport, []byte("not an exchange")),
		post("an unsigned result", api.PathSubmitResult, "application/json", []byte(`{"authority":"lab","test_code":"0000"}`)),
		post("a GPS check", api.PathCheckTrace, "application/json", []byte(`{"trace":""}`)),
		post("a decoy", api.PathDecoy, api.MediaTypeReport, make([]byte, 300)),
		post("an unknown path", "/v1/admin", "application/json", []byte(`{}`)),
		post("a removed path", api.PathPollResult, "application/json", []byte(`{}`)),
		{Name: "a GET", Method: http.MethodGet, Path: api.PathExchange},
	}
	want := map[string]int{
		"a daily check": http.StatusOK, "a check with a poll": http.StatusOK,
		"a decoy": http.StatusOK, "an unknown path": http.StatusNotFound,
		"a removed path": http.StatusNotFound, "a malformed exchange": http.StatusBadRequest,
		"an upload under a forged authorization": http.StatusOK, "an unsigned result": http.StatusUnauthorized,
		"a GPS check": http.StatusBadRequest, "a GET": http.StatusMethodNotAllowed,
	}
	results, replayed := runThirdParty(t, b.URL, 1024, 0, reqs)
	replayed.Name = "the replay of " + results[0].Name

	first := results[0]
	for _, r := range append(results, replayed) {
		if r.OuterStatus != http.StatusOK {
			t.Errorf("%s: the gateway answered %d (%s)", r.Name, r.OuterStatus, r.OuterBody)
			continue
		}
		if r.RequestBytes != first.RequestBytes {
			t.Fatalf("%s: %d bytes sent, the first request %d: the test must send one size", r.Name, r.RequestBytes, first.RequestBytes)
		}
		if r.AnswerBytes != first.AnswerBytes || r.InnerBytes != first.InnerBytes {
			t.Errorf("%s: an answer of %d bytes on the wire (%d inside), the first was %d (%d)", r.Name, r.AnswerBytes, r.InnerBytes, first.AnswerBytes, first.InnerBytes)
		}
		if s, ok := want[r.Name]; ok && r.Status != s {
			t.Errorf("%s: inner status %d (%s), want %d", r.Name, r.Status, r.Content, s)
		}
	}
	var answer struct {
		UploadError *api.Error `json:"upload_error"`
	}
	if err := json.Unmarshal(bytes.TrimRight(results[2].Content, "\x00"), &answer); err != nil || answer.UploadError == nil || answer.UploadError.Code != api.CodeNotAuthorized {
		t.Errorf("%s: answer %q, want an upload error %q", results[2].Name, results[2].Content, api.CodeNotAuthorized)
	}
	var refusal api.Error
	if err := json.Unmarshal(bytes.TrimRight(replayed.Content, "\x00"), &refusal); err != nil || refusal.Code != api.CodeReplayed {
		t.Errorf("the replayed request got %d %q, want the refusal %q", replayed.Status, replayed.Content, api.CodeReplayed)
	}
	t.Logf("every request %d bytes, every answer %d bytes (%d inside)", first.RequestBytes, first.AnswerBytes, first.InnerBytes)
}

// yesterdaysReport returns the encoding of a report of yesterday's daily
// key and three sightings of yesterday.
func yesterdaysReport(t *testing.T, now time.Time) []byte {
	t.Helper()
	start := enid.IntervalOf(now).RollingStart() - enid.RollingPeriod
	r := contactlog.Report{
		Keys: []contactlog.DailyKey{{TEK: enid.NewTEK(), Start: start, Period: enid.RollingPeriod}},
	}
	for i := range 3 {
		r.Sightings = append(r.Sightings, contactlog.Sighting{Heard: enid.RPI{byte(i + 1)}, Interval: start + enid.Interval(10*i), Minutes: 5, Attenuation: 55})
	}
	body, err := r.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return body
}
