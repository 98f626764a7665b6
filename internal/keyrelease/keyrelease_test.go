package keyrelease

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	attestsim "github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/release"
)

// build names a simulated build: its measurement is 32 bytes of b.
func build(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

var (
	policyA = sha256.Sum256([]byte("policy of release A"))
	policyB = sha256.Sum256([]byte("policy of release B"))
)

// replica returns the Self of a simulated replica running build m under
// the policy hashing to pol, with release statement rel and governance gov.
func replica(t *testing.T, m []byte, pol [32]byte, rel []byte, gov *release.Governance, debug bool) Self {
	t.Helper()
	tt, err := sim.New(sim.Options{Measurement: m, Debug: debug})
	if err != nil {
		t.Fatal(err)
	}
	exp := attest.Expectations{AllowSimulated: true}
	vs := []attest.Verifier{attestsim.NewVerifier(attestsim.VerifierOptions{AllowSimulated: true})}
	s := Self{Attester: tt, Verifiers: vs, Expect: exp, PolicySHA256: pol, Release: rel, Governance: gov}
	// A debug replica's own evidence does not pass the rules it applies;
	// its identity is what its evidence says all the same.
	idExp := exp
	idExp.AllowDebug = debug
	if s.Identity, err = Identify(context.Background(), tt, idExp, vs...); err != nil {
		t.Fatal(err)
	}
	return s
}

// kekSource lends kek, and counts the loans.
func kekSource(kek [KEKSize]byte, loans *int) KEKSource {
	return func(fn func([]byte) ([]byte, error)) ([]byte, error) {
		*loans++
		k := kek
		return fn(k[:])
	}
}

var (
	testKEK   = [KEKSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	testHeads = Heads{"0a": 7, "0b": 1}
)

func releaser(t *testing.T, s Self, now func() time.Time) (*Releaser, *int) {
	t.Helper()
	loans := new(int)
	r, err := NewReleaser(s, kekSource(testKEK, loans), func() Heads { return testHeads }, now)
	if err != nil {
		t.Fatal(err)
	}
	return r, loans
}

// local reaches a Releaser in-process.
type local struct{ r *Releaser }

func (l local) Nonce(context.Context) ([]byte, error) { return l.r.Nonce() }
func (l local) Release(ctx context.Context, req Request) (*Response, error) {
	return l.r.Release(ctx, req)
}

func TestReleaseToTheSameBuild(t *testing.T) {
	ctx := context.Background()
	p := replica(t, build(0xa1), policyA, nil, nil, false)
	n := replica(t, build(0xa1), policyA, nil, nil, false)
	r, _ := releaser(t, p, nil)
	srv := httptest.NewServer(Handler(r, nil))
	defer srv.Close()
	for name, peer := range map[string]Peer{"in process": local{r}, "over HTTP": HTTPPeer{URL: srv.URL}} {
		got, err := Obtain(ctx, n, peer)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.KEK != testKEK || got.Heads["0a"] != 7 {
			t.Errorf("%s: obtained %x, want the peer's key", name, got)
		}
	}
}

func TestReleaseRefusesOtherCode(t *testing.T) {
	ctx := context.Background()
	p := replica(t, build(0xa1), policyA, nil, nil, false)
	r, loans := releaser(t, p, nil)
	srv := httptest.NewServer(Handler(r, nil))
	defer srv.Close()
	for _, tc := range []struct {
		name string
		n    Self
	}{
		{"another build", replica(t, build(0xee), policyA, nil, nil, false)},
		{"the same build under another policy", replica(t, build(0xa1), policyB, nil, nil, false)},
		{"the same build in debug mode", replica(t, build(0xa1), policyA, nil, nil, true)},
	} {
		_, err := Obtain(ctx, tc.n, local{r})
		if err == nil {
			t.Errorf("%s: obtained the key", tc.name)
		}
		_, err = Obtain(ctx, tc.n, HTTPPeer{URL: srv.URL})
		if err == nil || !strings.Contains(err.Error(), "403") && !strings.Contains(err.Error(), "debug") {
			t.Errorf("%s over HTTP: %v, want a refusal", tc.name, err)
		}
	}
	if *loans != 0 {
		t.Errorf("the key was lent %d times to refused requests", *loans)
	}
}

// governance returns a two-member governance set and its keys.
func governance(t *testing.T) (*release.Governance, []*release.Key) {
	t.Helper()
	var keys []*release.Key
	g := &release.Governance{}
	for _, name := range []string{"health-authority", "auditor"} {
		k, err := release.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		g.Members = append(g.Members, k.Member())
	}
	return g, keys
}

// statement returns a release file admitting build m under pol with seq,
// signed by keys.
func statement(t *testing.T, seq uint64, m []byte, pol [32]byte, keys ...*release.Key) []byte {
	t.Helper()
	st := release.Statement{Sequence: seq, TEE: attest.Sim, Measurements: [][]byte{m}, PolicySHA256: pol}
	f, err := release.Sign(st, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		if f, err = release.Cosign(f, k); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestReleaseToSuccessor is the upgrade path: release A hands its key to
// release B, which the governance set signed with a later sequence; a
// build it did not sign, one only some members signed, and one with an
// older sequence get nothing.
func TestReleaseToSuccessor(t *testing.T) {
	ctx := context.Background()
	gov, keys := governance(t)
	old := replica(t, build(0xa1), policyA, statement(t, 5, build(0xa1), policyA, keys...), gov, false)
	r, _ := releaser(t, old, nil)

	next := replica(t, build(0xb2), policyB, statement(t, 6, build(0xb2), policyB, keys...), gov, false)
	got, err := Obtain(ctx, next, local{r})
	if err != nil || got.KEK != testKEK {
		t.Fatalf("successor: %x, %v", got.KEK, err)
	}

	for _, tc := range []struct {
		name string
		n    Self
	}{
		{"an unsigned build", replica(t, build(0xee), policyB, nil, gov, false)},
		{"a build one member signed", replica(t, build(0xb2), policyB, statement(t, 6, build(0xb2), policyB, keys[0]), gov, false)},
		{"an older statement", replica(t, build(0xb2), policyB, statement(t, 4, build(0xb2), policyB, keys...), gov, false)},
		{"a statement for another build", replica(t, build(0xee), policyB, statement(t, 6, build(0xb2), policyB, keys...), gov, false)},
	} {
		if _, err := Obtain(ctx, tc.n, local{r}); !errors.Is(err, ErrNotAdmitted) {
			t.Errorf("%s: %v, want ErrNotAdmitted", tc.name, err)
		}
	}
}

// TestObtainRefusesAForeignReleaser: a key released by code the replica
// does not admit is not used, or the host could choose the key new
// records are sealed under.
func TestObtainRefusesAForeignReleaser(t *testing.T) {
	ctx := context.Background()
	n := replica(t, build(0xa1), policyA, nil, nil, false)
	foreign := replica(t, build(0xee), policyA, nil, nil, false)
	// The forger admits n's build (it controls its own rules).
	foreign.Identity = n.Identity
	if _, err := Obtain(ctx, n, local{mustReleaser(t, foreign)}); !errors.Is(err, ErrNotAdmitted) {
		t.Fatalf("a key from build %x was accepted: %v", build(0xee), err)
	}
}

func mustReleaser(t *testing.T, s Self) *Releaser {
	r, _ := releaser(t, s, nil)
	return r
}

func TestNoncesAreSingleUseAndExpire(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	p := replica(t, build(0xa1), policyA, nil, nil, false)
	n := replica(t, build(0xa1), policyA, nil, nil, false)
	r, _ := releaser(t, p, clock)

	// A recorded request replayed: refused.
	rec := &recorder{Peer: local{r}}
	if _, err := Obtain(ctx, n, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Release(ctx, rec.req); !errors.Is(err, ErrNonce) {
		t.Errorf("replayed request: %v, want ErrNonce", err)
	}

	// A nonce older than NonceLifetime: refused.
	late := &delayer{Peer: local{r}, wait: func() { mu.Lock(); now = now.Add(NonceLifetime); mu.Unlock() }}
	if _, err := Obtain(ctx, n, late); !errors.Is(err, ErrNonce) {
		t.Errorf("expired nonce: %v, want ErrNonce", err)
	}

	// Nonces are bounded.
	var err error
	for range maxNonces + 1 {
		if _, err = r.Nonce(); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrBusy) {
		t.Errorf("after %d nonces: %v, want ErrBusy", maxNonces+1, err)
	}
	mu.Lock()
	now = now.Add(NonceLifetime)
	mu.Unlock()
	if _, err := r.Nonce(); err != nil {
		t.Errorf("once the nonces expired: %v", err)
	}
}

type recorder struct {
	Peer
	req Request
}

func (r *recorder) Release(ctx context.Context, req Request) (*Response, error) {
	r.req = req
	return r.Peer.Release(ctx, req)
}

type delayer struct {
	Peer
	wait func()
}

func (d *delayer) Release(ctx context.Context, req Request) (*Response, error) {
	d.wait()
	return d.Peer.Release(ctx, req)
}

// TestHandlerRefusesMalformedRequests: what reaches the endpoint is the
// host's to write.
func TestHandlerRefusesMalformedRequests(t *testing.T) {
	p := replica(t, build(0xa1), policyA, nil, nil, false)
	r, loans := releaser(t, p, nil)
	h := Handler(r, nil)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"not JSON", "POST", ReleasePath, "{", http.StatusBadRequest},
		{"unknown field", "POST", ReleasePath, `{"nonce":"AA==","kek":"AA=="}`, http.StatusBadRequest},
		{"two values", "POST", ReleasePath, `{} {}`, http.StatusBadRequest},
		{"unknown nonce", "POST", ReleasePath, `{"nonce":"` + strings.Repeat("A", 43) + `="}`, http.StatusConflict},
		{"oversized", "POST", ReleasePath, `{"nonce":"` + strings.Repeat("A", maxBody) + `"}`, http.StatusBadRequest},
		{"GET", "GET", NoncePath, "", http.StatusMethodNotAllowed},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		if w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
	if *loans != 0 {
		t.Errorf("the key was lent %d times", *loans)
	}
}

// FuzzReleaseRequest: no request body makes the releaser lend the key
// without valid evidence, or fail other than by refusing.
func FuzzReleaseRequest(f *testing.F) {
	f.Add([]byte(`{"nonce":"AA==","public_key":"AA==","evidence":{"tee":"sim","data":"AA=="},"policy_sha256":"AA=="}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req Request
		if json.Unmarshal(body, &req) != nil {
			return
		}
		s := replica(t, build(0xa1), policyA, nil, nil, false)
		r, loans := releaser(t, s, nil)
		// Make the fuzzed nonce outstanding, so that the rest is judged.
		n, _ := r.Nonce()
		req.Nonce = n
		if _, err := r.Release(context.Background(), req); err == nil || *loans != 0 {
			t.Fatalf("released to %q", body)
		}
	})
}

// fixed answers every release with resp.
type fixed struct {
	Peer
	resp Response
}

func (f fixed) Release(context.Context, Request) (*Response, error) { return &f.resp, nil }

// FuzzReleaseResponse: no answer a host can make gives a replica a key.
func FuzzReleaseResponse(f *testing.F) {
	f.Add([]byte(`{"sealed":"AA==","evidence":{"tee":"sim","data":"AA=="},"policy_sha256":"AA=="}`))
	f.Add([]byte(`{"sealed":null,"evidence":{"tee":"sgx","data":""}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var resp Response
		if decodeJSON(bytes.NewReader(body), &resp) != nil {
			return
		}
		p := replica(t, build(0xa1), policyA, nil, nil, false)
		r, _ := releaser(t, p, nil)
		if k, err := Obtain(context.Background(), p, fixed{Peer: local{r}, resp: resp}); err == nil {
			t.Fatalf("obtained %x from %q", k.KEK, body)
		}
	})
}

// lowered relays the releaser's answer with the heads lowered: what a host
// would do to make a replica accept an older copy of the store.
type lowered struct{ Peer }

func (l lowered) Release(ctx context.Context, req Request) (*Response, error) {
	resp, err := l.Peer.Release(ctx, req)
	if err == nil {
		resp.Heads = Heads{"0a": 1}
	}
	return resp, err
}

// TestHeadsAreAttested: the heads in a release are bound by the releasing
// replica's evidence.
func TestHeadsAreAttested(t *testing.T) {
	p := replica(t, build(0xa1), policyA, nil, nil, false)
	n := replica(t, build(0xa1), policyA, nil, nil, false)
	r, _ := releaser(t, p, nil)
	if _, err := Obtain(context.Background(), n, lowered{local{r}}); err == nil {
		t.Fatal("a release whose heads the host lowered was accepted")
	}
}
