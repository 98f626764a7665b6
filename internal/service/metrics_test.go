package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/internal/opsmetrics"
	"github.com/conftrace/conftrace/internal/service"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/policy"
)

// innerWords are what an operator's metrics must never name: the inner
// paths, the answers and the API's error codes. Any of them in the
// exposition would let the host tell requests apart. ("trace" alone is
// not one: every name starts with conftraced.)
var innerWords = append([]string{
	api.PathSubmitResult, api.PathPollResult, api.PathUpload, api.PathCheckExposure, api.PathExchange,
	api.PathSubmitTrace, api.PathCheckTrace, api.PathImportGAEN, api.PathDecoy,
	"exposed", "exposure", string(api.Positive), string(api.Negative), string(api.Pending),
	"upload", "exchange", "result", "authorization", "decoy", "poll", "traces", "gps", "gaen", "sighting", "infected",
},
	api.CodeMalformed, api.CodeTooLarge, api.CodeBadSignature, api.CodeUnknownAuthority, api.CodeReplayed,
	api.CodeExpired, api.CodeNotAuthorized, api.CodeAlreadyUsed, api.CodeOutOfWindow, api.CodeRateLimited,
	api.CodeFutureDated, api.CodeStale, api.CodeConflict, api.CodeNotFound, api.CodeInternal,
)

// leaks returns the inner words that the exposition names.
func leaks(exposition string) []string {
	low := strings.ToLower(exposition)
	var found []string
	for _, w := range innerWords {
		if strings.Contains(low, strings.ToLower(w)) {
			found = append(found, w)
		}
	}
	return found
}

// The check itself finds what it looks for.
func TestLeaksFindsInnerWords(t *testing.T) {
	bad := `conftraced_http_requests_total{code="200",path="` + api.PathUpload + `"} 1` + "\n# HELP x answers: already_used\n"
	if got := leaks(bad); !slices.Contains(got, api.PathUpload) || !slices.Contains(got, "upload") || !slices.Contains(got, api.CodeAlreadyUsed) {
		t.Errorf("leaks(%q) = %v", bad, got)
	}
	if got := leaks(`conftraced_http_requests_total{code="200",path="/v1/gateway"} 1`); got != nil {
		t.Errorf("leaks of an outer series: %v", got)
	}
}

// metered is a backend on loopback with metrics, its lab and a client.
type metered struct {
	m   *opsmetrics.Metrics
	svc *service.Service
	url string
	lab *authority.Key
	c   *client.Client
}

func startMetered(t *testing.T) *metered {
	t.Helper()
	ctx := context.Background()
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.AnswerReleaseMillis = 0
	p.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	dir := t.TempDir()
	tee, err := teesim.New(teesim.Options{KeyFile: filepath.Join(dir, service.SimKeyFile)})
	if err != nil {
		t.Fatal(err)
	}
	m := opsmetrics.New()
	svc, err := service.Open(ctx, service.Config{DataDir: dir, Policy: p, TEE: tee, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler)
	t.Cleanup(func() {
		srv.Close()
		if err := svc.Close(); err != nil {
			t.Error(err)
		}
	})
	c, err := client.New(ctx, client.Config{Server: srv.URL,
		Expectations: attest.Expectations{Measurements: [][]byte{tee.Measurement()}, AllowSimulated: true}})
	if err != nil {
		t.Fatal(err)
	}
	return &metered{m: m, svc: svc, url: srv.URL, lab: lab, c: c}
}

// scrape returns the exposition.
func (b *metered) scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	b.m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// series returns the exposition's sample lines whose name starts with
// prefix, without their values: what an observer learns besides numbers.
func series(exposition, prefix string) []string {
	var s []string
	for _, l := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(l, prefix) {
			s = append(s, l[:strings.LastIndexByte(l, ' ')])
		}
	}
	return s
}

var requestLine = regexp.MustCompile(`(?m)^conftraced_http_requests_total\{code="(\d+)",path="([^"]+)"\} (\d+)$`)

// requests returns the outer request counts by path and code.
func requests(exposition string) map[string]string {
	n := map[string]string{}
	for _, m := range requestLine.FindAllStringSubmatch(exposition, -1) {
		n[m[2]+" "+m[1]] = m[3]
	}
	return n
}

// A whole day of a health service through the gateway, refusals included,
// leaves no inner path, answer or error code in the metrics; the gateway's
// requests all count as 200, whatever they were answered inside; and an
// upload changes the same series as an exposure check does.
func TestMetricsDoNotTellRequestsApart(t *testing.T) {
	ctx := context.Background()
	b := startMetered(t)
	now := time.Now()
	dir := t.TempDir()
	newDevice := func(name string) *device.Device {
		d, err := device.Create(ctx, filepath.Join(dir, name), device.Config{Server: b.url, AllowSimulated: true})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, cc := newDevice("a"), newDevice("c")
	if _, err := device.Meet(ctx, a, cc, now.Add(-48*time.Hour).Truncate(time.Hour), 20*time.Minute, 50, 50); err != nil {
		t.Fatal(err)
	}
	pol := b.c.Policy()
	code, err := cc.RegisterTest(now)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.lab.SignResult(code, api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.c.SubmitResult(ctx, res); err != nil {
		t.Fatal(err)
	}
	if err := b.c.SubmitResult(ctx, res); !errors.Is(err, &api.Error{Code: api.CodeReplayed}) {
		t.Fatalf("replayed result: %v", err)
	}
	tst, _ := cc.Test()
	pr, err := b.c.PollResult(ctx, tst.Secret)
	if err != nil || len(pr.UploadAuthorization) == 0 {
		t.Fatalf("poll: %+v, %v", pr, err)
	}

	before := b.scrape(t)
	if _, err := b.c.CheckExposure(ctx, a.Report(pol, now)); err != nil {
		t.Fatal(err)
	}
	afterCheck := b.scrape(t)
	if _, err := b.c.Upload(ctx, pr.UploadAuthorization, cc.Report(pol, now)); err != nil {
		t.Fatal(err)
	}
	afterUpload := b.scrape(t)
	// The requests counted, and which series exist, are what the host
	// sees: one more gateway request each time.
	for _, prefix := range []string{"conftraced_http_", "conftraced_store_", "conftraced_match_"} {
		if s0, s1, s2 := series(before, prefix), series(afterCheck, prefix), series(afterUpload, prefix); !slices.Equal(s0, s1) || !slices.Equal(s1, s2) {
			t.Errorf("%s series differ between a check and an upload:\nbefore %v\ncheck  %v\nupload %v", prefix, s0, s1, s2)
		}
	}
	r0, r1, r2 := requests(before), requests(afterCheck), requests(afterUpload)
	gw := api.PathGateway + " 200"
	if r0[gw] == "" || r1[gw] == r0[gw] || r2[gw] == r1[gw] {
		t.Errorf("gateway requests counted: %s, %s, %s; want one more at each step", r0[gw], r1[gw], r2[gw])
	}

	if ea, err := b.c.CheckExposure(ctx, a.Report(pol, now)); err != nil || !ea.Exposed {
		t.Fatalf("A after the upload: %+v, %v; want exposed", ea, err)
	}
	if _, err := b.c.Upload(ctx, pr.UploadAuthorization, cc.Report(pol, now)); !errors.Is(err, &api.Error{Code: api.CodeAlreadyUsed}) {
		t.Fatalf("reused authorization: %v", err)
	}
	if _, err := b.c.Upload(ctx, make([]byte, api.AuthorizationSize), a.Report(pol, now)); !errors.Is(err, &api.Error{Code: api.CodeNotAuthorized}) {
		t.Fatalf("upload without authorization: %v", err)
	}
	if err := b.c.Decoy(ctx, 100); err != nil {
		t.Fatal(err)
	}
	// From outside, an inner path is just a path the backend lacks.
	resp, err := http.Post(b.url+api.PathUpload, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The transparency page is counted under its own path.
	if resp, err = http.Get(b.url + "/"); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := b.svc.Maintain(ctx); err != nil {
		t.Fatal(err)
	}

	final := b.scrape(t)
	if l := leaks(final); l != nil {
		t.Errorf("the metrics name %v:\n%s", l, final)
	}
	for k := range requests(final) {
		if strings.HasPrefix(k, api.PathGateway+" ") && k != gw {
			t.Errorf("gateway requests counted under %q: the outer status must not depend on the inner request", k)
		}
	}
	for _, want := range []string{
		`conftraced_http_requests_total{code="404",path="other"} 1`,
		`conftraced_http_requests_total{code="200",path="/"} 1`,
		`conftraced_replica_info{store="sqlite",tee="sim"} 1`,
		`conftraced_store_errors_total{op="apply"} 0`,
	} {
		if !strings.Contains(final, want) {
			t.Errorf("metrics lack %q:\n%s", want, final)
		}
	}
	if ia, na := b.svc.CurrentBundle().IssuedAt, b.svc.CurrentBundle().NotAfter; !strings.Contains(final, "conftraced_bundle_not_after_seconds "+formatSeconds(na)) ||
		!strings.Contains(final, "conftraced_bundle_issued_at_seconds "+formatSeconds(ia)) {
		t.Errorf("metrics lack the bundle's validity %d..%d:\n%s", ia, na, final)
	}
}

// formatSeconds writes n as the text exposition writes a sample value.
func formatSeconds(n int64) string { return strconv.FormatFloat(float64(n), 'g', -1, 64) }
