package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/internal/enclave"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/ohttp"
)

// keysTable holds the Oblivious HTTP key generations, one sealed record
// each, under generationKey.
const keysTable = "ohttp_keys"

// legacyCounter is the record under which earlier versions counted starts
// to change key IDs at every start. It is read once, so that the first
// generations take key IDs unlike those clients may still hold, and then
// deleted.
var legacyCounter = []byte("generation")

// The suites the gateway accepts: AES-256 with the post-quantum hybrid,
// whose point is long-term confidentiality, and AES-128 with X25519.
var (
	hybridSuite  = ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES256GCM}
	classicSuite = ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM}
)

// A generation is one pair of gateway keys, a post-quantum hybrid and an
// X25519 key, and the bundle that attests them: made and published at
// from, which is the bundle's issued_at, and accepted until until, its
// not_after, one bundle lifetime later. The next generation is made half a
// lifetime after from, so that the gateway accepts the keys of the newest
// bundle and of the one before it: a client that verified a bundle is
// served until its not_after, and always finds a newer bundle well before.
type generation struct {
	n           uint32 // numbers ascend; key IDs derive from them
	from, until time.Time
	// binding is the hash of the policy and release statement it was
	// made under (attestedBinding); keys are never carried over to
	// another policy or release.
	binding [sha256.Size]byte
	hybrid  *ohttp.PrivateKey
	classic *ohttp.PrivateKey
}

// attestedBinding returns what binds a generation to the policy and the
// release statement it is attested with: the SHA-256 of a label, the
// policy's SHA-256 and the release statement's SHA-256.
func attestedBinding(policy, release []byte) [sha256.Size]byte {
	p, r := sha256.Sum256(policy), sha256.Sum256(release)
	h := sha256.New()
	h.Write([]byte("conftrace/service ohttp keys attested with\x00"))
	h.Write(p[:])
	h.Write(r[:])
	return [sha256.Size]byte(h.Sum(nil))
}

// keyIDs returns the key identifiers of generation n. Two consecutive
// generations never share one, so a request to a dropped generation is
// refused as "unknown key" (which makes clients fetch the bundle again)
// rather than failing to decrypt.
func keyIDs(n uint32) (hybrid, classic uint8) {
	g := uint8(n % 127)
	return 2 * g, 2*g + 1
}

// generationKey is the record key of generation n; the number is not
// secret (the key IDs show it).
func generationKey(n uint32) []byte { return binary.BigEndian.AppendUint32([]byte("g"), n) }

func parseGenerationKey(k []byte) (uint32, bool) {
	if len(k) != 5 || k[0] != 'g' {
		return 0, false
	}
	return binary.BigEndian.Uint32(k[1:]), true
}

// secretName binds a sealed generation to its record: moved under another
// generation's key, it does not open.
func secretName(n uint32) string { return fmt.Sprintf("%s/g%d", keysTable, n) }

// sealedGeneration is what a generation's record holds once opened.
type sealedGeneration struct {
	N       uint32    `json:"n"`
	From    time.Time `json:"from"`
	Until   time.Time `json:"until"`
	Binding []byte    `json:"binding"` // generation.binding; absent before bundles had a validity
	Hybrid  []byte    `json:"hybrid"`  // ohttp.PrivateKey.MarshalBinary
	Classic []byte    `json:"classic"` // ohttp.PrivateKey.MarshalBinary
}

// servedKeys is what the HTTP layer serves: the accepted generations,
// newest first, with their gateway and the bundle that attests the newest.
type servedKeys struct {
	gens    []*generation
	gateway *ohttp.Gateway
	bundle  attest.Bundle
}

// gatewayKeys keeps the gateway's key generations on the policy's schedule:
// a new generation, attested by a bundle of its own, every half bundle
// lifetime, each accepted for a whole lifetime. The private keys reach the
// store only sealed by the enclave.
type gatewayKeys struct {
	enc      *enclave.Enclave
	st       store.Store
	attester attest.Attester
	policy   []byte // canonical; attested with the keys
	release  []byte // the signed release statement, attested with the keys; may be empty
	binding  [sha256.Size]byte
	lifetime time.Duration // a bundle's, policy.BundleLifetime
	now      func() time.Time
	log      *slog.Logger
	// publish hands a new bundle and gateway to the HTTP layer; nil until
	// the server exists.
	publish func(attest.Bundle, *ohttp.Gateway) error

	mu     sync.Mutex                 // serialises load and rotate
	stored map[uint32]*generation     // the store's generations, opened
	refuse [][]byte                   // keys of records that did not open
	legacy bool                       // legacyCounter is in the store
	last   uint32                     // the highest generation number seen or made
	served atomic.Pointer[servedKeys] // nil until the first rotate
}

// load reads the stored generations. A record that does not open (changed,
// moved, or sealed under another key-encryption key) or does not decode is
// logged and refused; rotate replaces it with fresh keys.
func (k *gatewayKeys) load(ctx context.Context) error {
	stored := map[uint32]*generation{}
	var refuse [][]byte
	legacy := false
	err := k.st.Scan(ctx, keysTable, func(r store.Record) error {
		if bytes.Equal(r.Key, legacyCounter) {
			legacy = true
			if len(r.Value) == 1 {
				k.last = max(k.last, uint32(r.Value[0]))
			}
			return nil
		}
		n, ok := parseGenerationKey(r.Key)
		if !ok {
			k.log.Error("unknown record among the OHTTP keys; deleted", "key", fmt.Sprintf("%x", r.Key))
			refuse = append(refuse, r.Key)
			return nil
		}
		k.last = max(k.last, n)
		g, err := k.open(n, r.Value)
		if err != nil {
			k.log.Error("stored OHTTP key generation refused (tampered, swapped, or sealed under another key-encryption key); fresh keys replace it",
				"generation", n, "err", err)
			refuse = append(refuse, r.Key)
			return nil
		}
		if g.binding != k.binding {
			// Clients verified these keys with another policy or
			// release statement: they must not reach this one.
			k.log.Info("stored OHTTP key generation was attested with another policy or release statement; fresh keys replace it", "generation", n)
			refuse = append(refuse, r.Key)
			return nil
		}
		stored[n] = g
		return nil
	})
	if err != nil {
		return fmt.Errorf("service: reading OHTTP keys: %w", err)
	}
	if len(stored) == 0 && len(refuse) == 0 && !legacy && k.last == 0 {
		// Numbering starts at random, so that two backends (another
		// deployment, a wiped store) rarely share key IDs: a client sent
		// from one to the other hears "unknown key" and fetches the
		// bundle, rather than failing to decrypt.
		k.last = rand.Uint32N(1 << 30)
	}
	k.stored, k.refuse, k.legacy = stored, refuse, legacy
	return nil
}

func (k *gatewayKeys) open(n uint32, sealed []byte) (*generation, error) {
	plain, err := k.enc.OpenSecret(secretName(n), sealed)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	var sg sealedGeneration
	if err := json.Unmarshal(plain, &sg); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	defer clear(sg.Hybrid)
	defer clear(sg.Classic)
	if sg.N != n || !sg.Until.After(sg.From) {
		return nil, fmt.Errorf("generation %d of %v to %v under the key of generation %d", sg.N, sg.From, sg.Until, n)
	}
	hID, cID := keyIDs(n)
	hybrid, err := parseKey(sg.Hybrid, hID, ohttp.KEMMLKEM768X25519)
	if err != nil {
		return nil, err
	}
	classic, err := parseKey(sg.Classic, cID, ohttp.KEMX25519)
	if err != nil {
		return nil, err
	}
	g := &generation{n: n, from: sg.From.UTC(), until: sg.Until.UTC(), hybrid: hybrid, classic: classic}
	copy(g.binding[:], sg.Binding) // a missing binding is all zeros: never k's
	return g, nil
}

func parseKey(b []byte, id uint8, kem ohttp.KEM) (*ohttp.PrivateKey, error) {
	key, err := ohttp.ParsePrivateKey(b)
	if err != nil {
		return nil, err
	}
	if c := key.KeyConfig(); c.KeyID != id || c.KEM != kem {
		return nil, fmt.Errorf("key %d (%v) where key %d (%v) belongs", c.KeyID, c.KEM, id, kem)
	}
	return key, nil
}

// rotate brings the generations to the schedule at the service's clock:
// it drops those whose bundle has expired, makes a new one when the newest
// is half a lifetime old, stores what changed and, if the accepted set
// changed, attests the newest and hands the bundle and the gateway to the
// HTTP layer.
func (k *gatewayKeys) rotate(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now().UTC()
	var want []*generation
	for attempt := 0; ; attempt++ {
		var made []*generation
		var err error
		if want, made, err = k.plan(now); err != nil {
			return err
		}
		err = k.commit(ctx, want, made)
		if errors.Is(err, store.ErrConflict) && attempt == 0 {
			// Another backend over the same store made the generation
			// first: serve its keys, so that both accept the same.
			if err := k.load(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("service: storing OHTTP keys: %w", err)
		}
		break
	}
	if cur := k.served.Load(); cur != nil && sameGenerations(cur.gens, want) {
		return nil
	}
	s, err := k.attest(ctx, want)
	if err != nil {
		return err
	}
	if k.publish != nil {
		if err := k.publish(s.bundle, s.gateway); err != nil {
			return fmt.Errorf("service: publishing OHTTP keys: %w", err)
		}
	}
	k.served.Store(s)
	newest := want[0]
	var older []uint32
	for _, g := range want[1:] {
		older = append(older, g.n)
	}
	k.log.Info("OHTTP keys published",
		"generation", newest.n, "key_ids", idList(newest), "issued_at", newest.from, "not_after", newest.until,
		"also_accepted_generations", older)
	return nil
}

// plan returns the generations the gateway accepts at now, newest first:
// the stored ones whose bundle is valid at now, and a new one, which it
// returns in made too, when the newest of those is half a lifetime old or
// there is none.
func (k *gatewayKeys) plan(now time.Time) (want, made []*generation, err error) {
	for _, n := range slices.Sorted(maps.Keys(k.stored)) {
		if g := k.stored[n]; !now.Before(g.from) && now.Before(g.until) {
			want = append(want, g)
		}
	}
	// Half a lifetime: the bundle published now is valid for as long
	// again, so clients find it well before theirs expires.
	if len(want) == 0 || !now.Before(want[len(want)-1].from.Add(k.lifetime/2)) {
		g, err := k.generate(now)
		if err != nil {
			return nil, nil, err
		}
		want, made = append(want, g), []*generation{g}
	}
	slices.Reverse(want)
	return want, made, nil
}

// generate makes the next-numbered generation, issued at now (in whole
// seconds, as bundles state it) for one lifetime.
func (k *gatewayKeys) generate(now time.Time) (*generation, error) {
	n := k.last + 1
	hID, cID := keyIDs(n)
	hybrid, err := ohttp.GenerateKey(hID, ohttp.KEMMLKEM768X25519, hybridSuite)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	classic, err := ohttp.GenerateKey(cID, ohttp.KEMX25519, classicSuite)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	k.last = n
	from := now.UTC().Truncate(time.Second)
	return &generation{n: n, from: from, until: from.Add(k.lifetime), binding: k.binding, hybrid: hybrid, classic: classic}, nil
}

// commit stores the generations made, sealed, and deletes the stored ones
// that are not wanted (their time is over) and those refused, in one
// batch. A generation is stored only where none is: replicas over one
// store agree on each generation's keys.
func (k *gatewayKeys) commit(ctx context.Context, want, made []*generation) error {
	var b store.Batch
	for _, g := range made {
		sealed, err := k.seal(g)
		if err != nil {
			return err
		}
		key := generationKey(g.n)
		b.MustNotExist(keysTable, key)
		b.Put(keysTable, key, store.NoDay, sealed)
	}
	var dropped []uint32
	for n := range k.stored {
		if !slices.ContainsFunc(want, func(g *generation) bool { return g.n == n }) {
			dropped = append(dropped, n)
			b.Delete(keysTable, generationKey(n))
		}
	}
	for _, key := range k.refuse {
		b.Delete(keysTable, key)
	}
	if k.legacy {
		b.Delete(keysTable, legacyCounter)
	}
	if len(b.Ops) == 0 {
		return nil
	}
	if err := k.st.Apply(ctx, &b); err != nil {
		return err
	}
	for _, g := range made {
		k.log.Info("OHTTP key generation made", "generation", g.n, "key_ids", idList(g), "from", g.from, "until", g.until)
	}
	slices.Sort(dropped)
	for _, n := range dropped {
		k.log.Info("OHTTP key generation dropped", "generation", n, "until", k.stored[n].until)
	}
	k.stored = map[uint32]*generation{}
	for _, g := range want {
		k.stored[g.n] = g
	}
	k.refuse, k.legacy = nil, false
	return nil
}

// seal serializes g with its private keys and has the enclave seal it.
func (k *gatewayKeys) seal(g *generation) ([]byte, error) {
	hybrid, err := g.hybrid.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	defer clear(hybrid)
	classic, err := g.classic.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	defer clear(classic)
	plain, err := json.Marshal(sealedGeneration{N: g.n, From: g.from, Until: g.until, Binding: g.binding[:], Hybrid: hybrid, Classic: classic})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	defer clear(plain)
	sealed, err := k.enc.SealSecret(secretName(g.n), plain)
	if err != nil {
		return nil, fmt.Errorf("service: sealing OHTTP keys: %w", err)
	}
	return sealed, nil
}

// attest makes the gateway of gens, which accepts all their keys, and the
// bundle of the newest: its key configurations (clients pick the first of
// the strongest KEM), the policy, the release statement, its validity and
// the enclave's exposure certificate key.
func (k *gatewayKeys) attest(ctx context.Context, gens []*generation) (*servedKeys, error) {
	var keys []*ohttp.PrivateKey
	for _, g := range gens {
		keys = append(keys, g.hybrid, g.classic)
	}
	gw, err := ohttp.NewGateway(keys...)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	newest := gens[0]
	list, err := ohttp.MarshalKeyConfigs([]ohttp.KeyConfig{newest.hybrid.KeyConfig(), newest.classic.KeyConfig()})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	b, err := attest.NewBundle(ctx, k.attester, attest.Bundle{
		KeyConfigs: list, Policy: k.policy, Release: k.release,
		IssuedAt: newest.from.Unix(), NotAfter: newest.until.Unix(),
		CertificateKey: k.enc.CertificateKey(),
	})
	if err != nil {
		return nil, fmt.Errorf("service: attestation: %w", err)
	}
	return &servedKeys{gens: gens, gateway: gw, bundle: b}, nil
}

func sameGenerations(a, b []*generation) bool {
	return slices.EqualFunc(a, b, func(x, y *generation) bool { return x.n == y.n })
}

// idList lists g's key IDs for the log (as numbers: a []byte would log
// as text or base64).
func idList(g *generation) []int {
	h, c := keyIDs(g.n)
	return []int{int(h), int(c)}
}

// due reports whether the keys are off schedule at the service's clock:
// the newest generation is half a lifetime old, so that the next is due.
func (k *gatewayKeys) due() bool {
	s := k.served.Load()
	return s == nil || !k.now().Before(s.gens[0].from.Add(k.lifetime/2))
}

// onSchedule is the HTTP layer with the keys brought to the schedule
// before the attestation bundle is served. Maintenance rotates them
// hourly, but no bundle may be served past its time, whatever delayed
// maintenance: a suspended machine, a clock that jumped.
type onSchedule struct {
	keys *gatewayKeys
	next http.Handler
}

func (h onSchedule) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == api.PathAttestation && h.keys.due() {
		if err := h.keys.rotate(r.Context()); err != nil {
			h.keys.log.Error("rotating the OHTTP keys before serving the bundle", "err", err)
		}
	}
	h.next.ServeHTTP(w, r)
}
