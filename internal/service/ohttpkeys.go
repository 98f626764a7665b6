package service

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
// X25519 key. It is current from From until Until; it is made and
// published one lifetime earlier, beside the current generation, and
// dropped at Until.
type generation struct {
	n           uint32 // numbers ascend; key IDs derive from them
	from, until time.Time
	hybrid      *ohttp.PrivateKey
	classic     *ohttp.PrivateKey
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
	Hybrid  []byte    `json:"hybrid"`  // ohttp.PrivateKey.MarshalBinary
	Classic []byte    `json:"classic"` // ohttp.PrivateKey.MarshalBinary
}

// servedKeys is what the HTTP layer serves: the published generations,
// newest first, with their gateway and the bundle that attests them.
type servedKeys struct {
	gens    []*generation
	gateway *ohttp.Gateway
	bundle  attest.Bundle
}

// gatewayKeys keeps the gateway's key generations on the policy's schedule:
// at any time the current generation and the next one are published and
// accepted. The private keys reach the store only sealed by the enclave.
type gatewayKeys struct {
	enc      *enclave.Enclave
	st       store.Store
	attester attest.Attester
	policy   []byte // canonical; attested with the keys
	lifetime time.Duration
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
	return &generation{n: n, from: sg.From.UTC(), until: sg.Until.UTC(), hybrid: hybrid, classic: classic}, nil
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
// it drops those whose time is over, makes the current and the next one
// where they are missing, stores what changed and, if the published set
// changed, attests it and hands it to the HTTP layer.
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
	next, cur := want[0], want[1]
	k.log.Info("OHTTP keys published",
		"current_generation", cur.n, "current_key_ids", idList(cur), "current_until", cur.until,
		"next_generation", next.n, "next_key_ids", idList(next), "next_until", next.until)
	return nil
}

// plan returns the generations to publish at now, newest first: the next
// and the current one, taken from the store where it holds them, and those
// of them it had to make.
func (k *gatewayKeys) plan(now time.Time) (want, made []*generation, err error) {
	var cur, next *generation
	for _, n := range slices.Sorted(maps.Keys(k.stored)) {
		if g := k.stored[n]; !now.Before(g.from) && now.Before(g.until) {
			cur = g
		}
	}
	if cur != nil {
		for _, n := range slices.Sorted(maps.Keys(k.stored)) {
			if g := k.stored[n]; next == nil && g.n > cur.n && g.from.Equal(cur.until) {
				next = g
			}
		}
	}
	if cur == nil {
		if cur, err = k.generate(now); err != nil {
			return nil, nil, err
		}
		made = append(made, cur)
	}
	if next == nil {
		if next, err = k.generate(cur.until); err != nil {
			return nil, nil, err
		}
		made = append(made, next)
	}
	return []*generation{next, cur}, made, nil
}

// generate makes the next-numbered generation, current from from for one
// lifetime.
func (k *gatewayKeys) generate(from time.Time) (*generation, error) {
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
	return &generation{n: n, from: from, until: from.Add(k.lifetime), hybrid: hybrid, classic: classic}, nil
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
	plain, err := json.Marshal(sealedGeneration{N: g.n, From: g.from, Until: g.until, Hybrid: hybrid, Classic: classic})
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

// attest makes the gateway of gens and the bundle that binds their key
// configurations, newest first (clients pick the first of the strongest
// KEM: the newest they verified), and the policy.
func (k *gatewayKeys) attest(ctx context.Context, gens []*generation) (*servedKeys, error) {
	var keys []*ohttp.PrivateKey
	for _, g := range gens {
		keys = append(keys, g.hybrid, g.classic)
	}
	gw, err := ohttp.NewGateway(keys...)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	list, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	b, err := attest.NewBundle(ctx, k.attester, list, k.policy)
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
