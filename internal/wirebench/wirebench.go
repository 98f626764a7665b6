// Package wirebench measures what a phone's daily exposure check costs on
// the wire, to compare it with what a phone of a GAEN-style design
// downloads.
//
// [Measure] makes a phone's daily exchange with a running backend through
// the client SDK, as a phone makes it, over attested Oblivious HTTP, and
// counts the bytes of the request and of its answer on the wire: padded to
// their size classes and encapsulated to the backend's post-quantum hybrid
// key. Beside each check it computes the same check as protocol v2 sent it
// (whole heard RPIs and intervals, 22 bytes a sighting, size classes four
// times apart), which report version 3 replaced, so that the two can be
// compared in one run.
//
// A GAEN phone downloads every daily key that positive cases publish,
// whatever it met. [ExportBytesPerKey] measures what a key costs in a
// signed, compressed export file as package gaen writes it.
package wirebench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/ohttp"
)

// Check is what one daily exposure check cost on the wire.
type Check struct {
	// Sightings and Keys are what the check's report carries.
	Sightings, Keys int
	// Report is the size of the report.
	Report int
	// Request and Answer are the sizes on the wire of the Oblivious HTTP
	// request and of its answer.
	Request, Answer int
	// V2Report, V2Request and V2Answer are the same for the same check in
	// protocol v2.
	V2Report, V2Request, V2Answer int
}

// Bytes returns what the check cost on the wire, both ways.
func (c Check) Bytes() int { return c.Request + c.Answer }

// V2Bytes returns what the check cost on the wire, both ways, in protocol
// v2.
func (c Check) V2Bytes() int { return c.V2Request + c.V2Answer }

// Measure connects to a backend as cfg says, as a phone does (package
// client), and makes one daily exposure check of each count of sightings,
// each under keys daily keys (a phone's two weeks and today: 15), at the
// time of cfg's clock. It returns what each cost on the wire, the sizes of
// the requests and answers that the transport of cfg.HTTPClient (or the
// default one) carried, beside protocol v2's.
func Measure(ctx context.Context, cfg client.Config, counts []int, keys int) ([]Check, error) {
	if keys < 1 || keys > contactlog.MaxKeys {
		return nil, fmt.Errorf("wirebench: %d daily keys, want 1 to %d", keys, contactlog.MaxKeys)
	}
	m := &meter{base: http.DefaultTransport}
	hc := &http.Client{Timeout: time.Minute}
	if cfg.HTTPClient != nil {
		*hc = *cfg.HTTPClient
		if hc.Transport != nil {
			m.base = hc.Transport
		}
	}
	hc.Transport = m
	cfg.HTTPClient = hc
	c, err := client.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("wirebench: %w", err)
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	var checks []Check
	for _, n := range counts {
		r, err := Report(n, keys, now())
		if err != nil {
			return nil, err
		}
		body, err := r.AppendBinary(nil)
		if err != nil {
			return nil, fmt.Errorf("wirebench: %w", err)
		}
		if _, err := c.CheckExposure(ctx, r); err != nil {
			return nil, fmt.Errorf("wirebench: a check of %d sightings: %w", n, err)
		}
		ch := Check{Sightings: n, Keys: keys, Report: len(body)}
		ch.Request, ch.Answer = m.last()
		if err := ch.addV2(r); err != nil {
			return nil, err
		}
		checks = append(checks, ch)
	}
	return checks, nil
}

// Report returns a phone's report for a check at now: keys consecutive
// daily keys, the last of them today's, and n sightings spread evenly
// from the first key's start to now.
func Report(n, keys int, now time.Time) (contactlog.Report, error) {
	if n < 0 || keys < 1 || keys > contactlog.MaxKeys {
		return contactlog.Report{}, fmt.Errorf("wirebench: %d sightings under %d keys", n, keys)
	}
	cur := enid.IntervalOf(now)
	start := cur.RollingStart() - enid.Interval((keys-1)*enid.RollingPeriod)
	r := contactlog.Report{Keys: make([]contactlog.DailyKey, keys), Sightings: make([]contactlog.Sighting, n)}
	for i := range r.Keys {
		r.Keys[i] = contactlog.DailyKey{TEK: enid.NewTEK(), Start: start + enid.Interval(i*enid.RollingPeriod), Period: enid.RollingPeriod}
	}
	span := int(cur-start) + 1
	for i := range r.Sightings {
		var rpi enid.RPI
		rand.Read(rpi[:])
		r.Sightings[i] = contactlog.Sighting{Heard: rpi, Interval: start + enid.Interval(i*span/max(n, 1)), Minutes: 10, Attenuation: 60}
	}
	return r, nil
}

// meter is an http.RoundTripper that records the sizes of the last
// request it posted and of its answer: the Oblivious HTTP messages.
type meter struct {
	base http.RoundTripper

	mu                sync.Mutex
	request, response int
}

func (m *meter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := m.base.RoundTrip(r)
	if err != nil || r.Method != http.MethodPost {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.request, m.response = int(r.ContentLength), len(body)
	m.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func (m *meter) last() (request, response int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.request, m.response
}

// v2SightingSize is the size of a sighting in protocol v2: heard RPI,
// interval, minutes, attenuation.
const v2SightingSize = 16 + 4 + 1 + 1

// v2Class returns the protocol v2 size class of n bytes: v2 padded to 1
// KiB and every fourth power of two above it.
func v2Class(n int) int {
	c := 1 << 10
	for c < n {
		c *= 4
	}
	return c
}

// addV2 sets c's v2 fields from r, the report of c: its v2 encoding, and
// the v2 request and answer, padded to v2's classes and encapsulated as
// the client and the gateway encapsulate them now. The answer is as long
// inside as c's: v2's classes are among the classes of now, so the v2
// class of an answer is that of its class now.
func (c *Check) addV2(r contactlog.Report) error {
	report := v2Report(r)
	body, err := api.ExchangeRequest{Report: report}.MarshalBinary()
	if err != nil {
		return fmt.Errorf("wirebench: %w", err)
	}
	req := &bhttp.Request{
		Method:    http.MethodPost,
		Scheme:    "https",
		Authority: api.InnerAuthority,
		Path:      api.PathExchange,
		Header: []bhttp.Field{
			{Name: "content-type", Value: api.MediaTypeReport},
			{Name: "date", Value: time.Unix(0, 0).UTC().Format(http.TimeFormat)}, // as long as any date
		},
		Content: body,
	}
	plain, err := req.MarshalBinary()
	if err != nil {
		return fmt.Errorf("wirebench: %w", err)
	}
	reqOver, respOver, err := overheads()
	if err != nil {
		return err
	}
	c.V2Report = len(report)
	c.V2Request = v2Class(len(plain)) + reqOver
	c.V2Answer = v2Class(c.Answer-respOver) + respOver
	return nil
}

// v2Report returns r in protocol v2's report encoding.
func v2Report(r contactlog.Report) []byte {
	b := []byte{2, byte(len(r.Keys))}
	for _, k := range r.Keys {
		b = append(b, k.TEK[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(k.Start))
		b = append(b, k.Period)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Sightings)))
	for _, s := range r.Sightings {
		b = append(b, s.Heard[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(s.Interval))
		b = append(b, s.Minutes, s.Attenuation)
	}
	return b
}

// overheads returns what Oblivious HTTP adds to a request and to an answer
// on the wire, with the suite phones use (the post-quantum hybrid KEM).
func overheads() (request, response int, err error) {
	key, err := ohttp.GenerateKey(1, ohttp.KEMMLKEM768X25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES256GCM})
	if err != nil {
		return 0, 0, fmt.Errorf("wirebench: %w", err)
	}
	g, err := ohttp.NewGateway(key)
	if err != nil {
		return 0, 0, fmt.Errorf("wirebench: %w", err)
	}
	const n = 1 << 10
	enc, _, err := ohttp.EncapsulateRequest(key.KeyConfig(), make([]byte, n))
	if err != nil {
		return 0, 0, fmt.Errorf("wirebench: %w", err)
	}
	_, rc, err := g.DecapsulateRequest(enc)
	if err != nil {
		return 0, 0, fmt.Errorf("wirebench: %w", err)
	}
	resp, err := rc.EncapsulateResponse(make([]byte, n))
	if err != nil {
		return 0, 0, fmt.Errorf("wirebench: %w", err)
	}
	return len(enc) - n, len(resp) - n, nil
}

// ExportBytesPerKey returns what one key costs in a GAEN export file of
// n keys as package gaen writes it: signed, in a zip archive whose
// entries are compressed, the keys of the last 14 days with their report
// type and days since symptom onset.
func ExportBytesPerKey(n int) (float64, error) {
	if n < 1 {
		return 0, errors.New("wirebench: an export needs keys")
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return 0, fmt.Errorf("wirebench: %w", err)
	}
	now := time.Now().UTC()
	today := enid.IntervalOf(now).RollingStart()
	exp := &gaen.Export{Region: "XX", Start: now.Add(-24 * time.Hour), End: now, Keys: make([]gaen.Key, n)}
	for i := range exp.Keys {
		day := i % 14
		exp.Keys[i] = gaen.Key{TEK: enid.NewTEK(), RollingStart: today - enid.Interval(day*enid.RollingPeriod), RollingPeriod: enid.RollingPeriod,
			ReportType: gaen.ConfirmedTest, DaysSinceOnset: int32(2 - day), HasOnset: true}
	}
	b, err := gaen.Write(exp, gaen.SigningKey{KeyID: "000", KeyVersion: "v1", Key: priv})
	if err != nil {
		return 0, fmt.Errorf("wirebench: %w", err)
	}
	return float64(len(b)) / float64(n), nil
}
