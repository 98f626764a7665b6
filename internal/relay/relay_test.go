package relay

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/ohttp"
)

// clientHeaders are what a phone's request might carry that would tell
// the backend who or where it is.
var clientHeaders = map[string]string{
	"Cookie":          "session=alice",
	"User-Agent":      "alice-phone",
	"X-Forwarded-For": "198.51.100.7",
	"Forwarded":       "for=198.51.100.7",
	"X-Real-Ip":       "198.51.100.7",
	"Authorization":   "Bearer alice",
	"Accept-Language": "fr-CH",
}

// checkNoClientHeaders fails if r carries anything of the client's: only
// the relay's user agent and what the relay's transport adds itself.
func checkNoClientHeaders(t *testing.T, r *http.Request) {
	t.Helper()
	for h, v := range r.Header {
		switch h {
		case "User-Agent":
			if v[0] != userAgent {
				t.Errorf("backend saw user agent %q", v[0])
			}
		case "Accept-Encoding", "Content-Type", "Content-Length":
		default:
			t.Errorf("backend saw header %s: %q", h, v)
		}
	}
}

func TestRelayForwardsWithoutClientIdentity(t *testing.T) {
	var got *http.Request
	var gotBody []byte
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context())
		gotBody, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", ohttp.MediaTypeResponse)
		w.Write([]byte("sealed response"))
	}))
	defer gw.Close()
	rl, err := New(gw.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rl)
	defer front.Close()

	req, _ := http.NewRequest(http.MethodPost, front.URL, bytes.NewReader([]byte("sealed request")))
	for h, v := range clientHeaders {
		req.Header.Set(h, v)
	}
	req.Header.Set("Content-Type", ohttp.MediaTypeRequest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "sealed response" || resp.Header.Get("Content-Type") != ohttp.MediaTypeResponse {
		t.Fatalf("relay answered %d %q", resp.StatusCode, body)
	}
	if string(gotBody) != "sealed request" {
		t.Fatalf("gateway got %q", gotBody)
	}
	checkNoClientHeaders(t, got)
	if got.Header.Get("User-Agent") != userAgent {
		t.Errorf("gateway saw user agent %q", got.Header.Get("User-Agent"))
	}

	for _, tc := range []struct {
		method, path, ct string
		body             []byte
		want             int
	}{
		{http.MethodGet, "/", ohttp.MediaTypeRequest, nil, http.StatusNotFound},
		{http.MethodGet, api.PathGateway, "", nil, http.StatusNotFound},
		{http.MethodPut, "/", ohttp.MediaTypeRequest, []byte("sealed"), http.StatusMethodNotAllowed},
		{http.MethodPost, "/", "application/json", []byte("{}"), http.StatusUnsupportedMediaType},
		{http.MethodPost, "/", ohttp.MediaTypeRequest, make([]byte, MaxBody+1), http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest(tc.method, front.URL+tc.path, bytes.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %s: status %d, want %d", tc.method, tc.path, tc.ct, resp.StatusCode, tc.want)
		}
	}
}

// fakeBackend serves a bundle, key configurations and a gateway, and
// records the requests for the public documents.
type fakeBackend struct {
	*httptest.Server
	mu      sync.Mutex
	bundle  []byte
	gets    []*http.Request
	fetches atomic.Int32
	// gatewayStatus is what the gateway answers.
	gatewayStatus atomic.Int32
}

func newFakeBackend(t *testing.T, prefix string) *fakeBackend {
	t.Helper()
	b := &fakeBackend{bundle: []byte(`{"bundle":1}`)}
	b.gatewayStatus.Store(http.StatusOK)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+api.PathAttestation, func(w http.ResponseWriter, r *http.Request) {
		b.fetches.Add(1)
		b.mu.Lock()
		b.gets = append(b.gets, r.Clone(r.Context()))
		body := b.bundle
		b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	mux.HandleFunc("GET "+prefix+api.PathKeys, func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.gets = append(b.gets, r.Clone(r.Context()))
		b.mu.Unlock()
		w.Header().Set("Content-Type", ohttp.MediaTypeKeys)
		w.Write([]byte("keys"))
	})
	mux.HandleFunc("POST "+prefix+api.PathGateway, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(b.gatewayStatus.Load()))
	})
	b.Server = httptest.NewServer(mux)
	t.Cleanup(b.Close)
	return b
}

func (b *fakeBackend) setBundle(body []byte) {
	b.mu.Lock()
	b.bundle = body
	b.mu.Unlock()
}

func (b *fakeBackend) requests() []*http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*http.Request(nil), b.gets...)
}

// get sends a GET to url with all of clientHeaders and returns the answer.
func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for h, v := range clientHeaders {
		req.Header.Set(h, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// The relay serves the bundle and the key configurations, fetched with a
// request of its own that carries nothing of the client's, under whatever
// URL the relay is mounted at and for a backend under a path prefix.
func TestRelayServesPublicDocumentsWithoutClientIdentity(t *testing.T) {
	b := newFakeBackend(t, "/ct")
	rl, err := New(b.URL+"/ct"+api.PathGateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rl.Backend() != b.URL+"/ct" {
		t.Errorf("backend %q, want %s/ct", rl.Backend(), b.URL)
	}
	front := httptest.NewServer(rl)
	defer front.Close()

	for _, tc := range []struct{ path, body, ct string }{
		{api.PathAttestation, `{"bundle":1}`, "application/json"},
		{api.PathKeys, "keys", ohttp.MediaTypeKeys},
		{"/mounted/here" + api.PathAttestation, `{"bundle":1}`, "application/json"},
	} {
		status, body, h := get(t, front.URL+tc.path)
		if status != http.StatusOK || body != tc.body || h.Get("Content-Type") != tc.ct {
			t.Errorf("GET %s: %d %q (%s), want %q (%s)", tc.path, status, body, h.Get("Content-Type"), tc.body, tc.ct)
		}
	}
	reqs := b.requests()
	if len(reqs) != 2 {
		t.Errorf("backend saw %d fetches, want 2 (the bundle once, then from the cache)", len(reqs))
	}
	for _, r := range reqs {
		checkNoClientHeaders(t, r)
	}
}

func TestBackendOf(t *testing.T) {
	for _, tc := range []struct{ gateway, want string }{
		{"https://ct.example.org/v1/gateway", "https://ct.example.org"},
		{"https://ct.example.org:8443/health/ct/v1/gateway?x=1", "https://ct.example.org:8443/health/ct"},
		{"http://ct.example.org", "http://ct.example.org"},
		{"http://ct.example.org/ohttp", "http://ct.example.org"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
	} {
		got, err := backendOf(tc.gateway)
		if err != nil || got != tc.want {
			t.Errorf("backendOf(%q) = %q, %v; want %q", tc.gateway, got, err, tc.want)
		}
	}
	for _, bad := range []string{"::", "ct.example.org/v1/gateway", "ftp://ct.example.org", "http:///v1/gateway"} {
		if _, err := New(bad, nil, nil); err == nil {
			t.Errorf("New(%q) accepted it", bad)
		}
	}
}

// A document larger than MaxPublic is refused, whether or not the backend
// says its length up front.
func TestRelayRefusesLargeDocument(t *testing.T) {
	for _, tc := range []struct {
		size    int
		chunked bool
		want    int
	}{
		{MaxPublic, false, http.StatusOK},
		{MaxPublic, true, http.StatusOK},
		{MaxPublic + 1, false, http.StatusBadGateway},
		{MaxPublic + 1, true, http.StatusBadGateway},
	} {
		t.Run(fmt.Sprintf("%d chunked=%v", tc.size, tc.chunked), func(t *testing.T) {
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body := bytes.Repeat([]byte("x"), tc.size)
				if !tc.chunked {
					w.Header().Set("Content-Length", fmt.Sprint(len(body)))
					w.Write(body)
					return
				}
				for len(body) > 0 {
					n := min(len(body), 64<<10)
					w.Write(body[:n])
					w.(http.Flusher).Flush()
					body = body[n:]
				}
			}))
			defer backend.Close()
			rl, err := New(backend.URL+api.PathGateway, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			front := httptest.NewServer(rl)
			defer front.Close()
			status, body, _ := get(t, front.URL+api.PathAttestation)
			if status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
			if status == http.StatusOK && len(body) != tc.size {
				t.Errorf("relayed %d bytes, want %d", len(body), tc.size)
			}
			if status != http.StatusOK && strings.Contains(body, "xxxx") {
				t.Error("the relay passed on part of the oversized document")
			}
		})
	}
}

// The cache answers for CacheFor, then asks the backend again; a gateway
// that no longer knows a client's key empties it at once; failed answers
// are not kept.
func TestRelayCacheExpires(t *testing.T) {
	b := newFakeBackend(t, "")
	rl, err := New(b.URL+api.PathGateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)
	rl.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	front := httptest.NewServer(rl)
	defer front.Close()
	fetch := func(want string, fetches int32) {
		t.Helper()
		if status, body, _ := get(t, front.URL+api.PathAttestation); status != http.StatusOK || body != want {
			t.Fatalf("relay answered %d %q, want %q", status, body, want)
		}
		if n := b.fetches.Load(); n != fetches {
			t.Fatalf("backend fetched %d times, want %d", n, fetches)
		}
	}

	fetch(`{"bundle":1}`, 1)
	b.setBundle([]byte(`{"bundle":2}`))
	fetch(`{"bundle":1}`, 1)
	advance(CacheFor - time.Second)
	fetch(`{"bundle":1}`, 1)
	advance(time.Second)
	fetch(`{"bundle":2}`, 2)

	// A stale-key answer: the client's next fetch must see the new bundle.
	b.setBundle([]byte(`{"bundle":3}`))
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, front.URL, strings.NewReader("sealed"))
		req.Header.Set("Content-Type", ohttp.MediaTypeRequest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	post()
	fetch(`{"bundle":2}`, 2) // other answers leave the cache alone
	b.gatewayStatus.Store(http.StatusUnprocessableEntity)
	if s := post(); s != http.StatusUnprocessableEntity {
		t.Fatalf("relay passed on %d, want %d", s, http.StatusUnprocessableEntity)
	}
	fetch(`{"bundle":3}`, 3)

	// A backend that fails is asked again next time.
	b.Close()
	advance(CacheFor)
	if status, _, _ := get(t, front.URL+api.PathAttestation); status != http.StatusBadGateway {
		t.Errorf("with the backend gone the relay answered %d, want %d", status, http.StatusBadGateway)
	}
}

// Phones that all ask at once, as after a restart, cost the backend one
// fetch.
func TestRelayCoalescesFetches(t *testing.T) {
	release := make(chan struct{})
	var fetches atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		<-release
		w.Write([]byte("bundle"))
	}))
	defer backend.Close()
	rl, err := New(backend.URL+api.PathGateway, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rl)
	defer front.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, err := http.Get(front.URL + api.PathAttestation)
			if err != nil {
				t.Error(err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || string(body) != "bundle" {
				t.Errorf("relay answered %d %q, %v", resp.StatusCode, body, err)
			}
		})
	}
	// However many wait for the first fetch rather than find its result
	// in the cache, the backend must see one fetch; the pause only makes
	// it likely that some wait.
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Errorf("backend fetched %d times, want 1", n)
	}
}
