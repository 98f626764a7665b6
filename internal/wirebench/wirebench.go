// Package wirebench measures what a phone's daily exposure check costs on
// the wire: the bytes of the Oblivious HTTP request it sends, padded to its
// size class and encrypted to the backend's key, for a given number of
// sightings. Beside each it measures, in the same run, the same check in
// protocol v1's encoding (bare 39-byte own/heard tuples, base64 in JSON),
// which protocol v2 replaced, so that the two can be compared.
package wirebench

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/ohttp"
)

// v1TupleSize is the size of a protocol v1 tuple: own RPI, heard RPI,
// interval, minutes, attenuation.
const v1TupleSize = 16 + 16 + 4 + 2 + 1

// Row is one measurement.
type Row struct {
	// Sightings is the number of sightings the check carries.
	Sightings int
	// Keys is the number of daily keys it carries.
	Keys int
	// Body is the size of the report, the inner request's body.
	Body int
	// Wire is the size of the encapsulated request on the wire.
	Wire int
	// V1Body and V1Wire are the same for protocol v1's encoding of as
	// many tuples.
	V1Body, V1Wire int
}

// Measure encodes an exposure check of n sightings under keys daily keys
// (a phone's two weeks: 14 or 15), encapsulates it to a post-quantum hybrid
// key as the client does, and returns the sizes beside protocol v1's.
func Measure(n, keys int) (Row, error) {
	if keys < 1 || keys > contactlog.MaxKeys || n < 0 {
		return Row{}, fmt.Errorf("wirebench: %d sightings under %d keys", n, keys)
	}
	key, err := ohttp.GenerateKey(1, ohttp.KEMMLKEM768X25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES256GCM})
	if err != nil {
		return Row{}, fmt.Errorf("wirebench: %w", err)
	}
	r := report(n, keys)
	body, err := r.AppendBinary(nil)
	if err != nil {
		return Row{}, fmt.Errorf("wirebench: %w", err)
	}
	wire, err := encapsulate(key.KeyConfig(), api.MediaTypeReport, body)
	if err != nil {
		return Row{}, err
	}
	v1Body, err := v1Check(n)
	if err != nil {
		return Row{}, err
	}
	v1Wire, err := encapsulate(key.KeyConfig(), "application/json", v1Body)
	if err != nil {
		return Row{}, err
	}
	return Row{Sightings: n, Keys: keys, Body: len(body), Wire: wire, V1Body: len(v1Body), V1Wire: v1Wire}, nil
}

// report returns a phone's report: keys consecutive daily keys and n
// sightings spread over their days.
func report(n, keys int) contactlog.Report {
	start := enid.Interval(20_000 * enid.RollingPeriod)
	r := contactlog.Report{Keys: make([]contactlog.DailyKey, keys), Sightings: make([]contactlog.Sighting, n)}
	for i := range r.Keys {
		r.Keys[i] = contactlog.DailyKey{TEK: enid.NewTEK(), Start: start + enid.Interval(i*enid.RollingPeriod), Period: enid.RollingPeriod}
	}
	span := keys * enid.RollingPeriod
	for i := range r.Sightings {
		var rpi enid.RPI
		rand.Read(rpi[:])
		r.Sightings[i] = contactlog.Sighting{Heard: rpi, Interval: start + enid.Interval(i*span/max(n, 1)), Minutes: 10, Attenuation: 60}
	}
	return r
}

// v1Check returns protocol v1's exposure check body for n tuples: a JSON
// object whose "tuples" is the base64 of a batch (version, count, tuples).
func v1Check(n int) ([]byte, error) {
	batch := make([]byte, 5+n*v1TupleSize)
	batch[0] = 1
	binary.BigEndian.PutUint32(batch[1:5], uint32(n))
	rand.Read(batch[5:])
	b, err := json.Marshal(struct {
		Tuples string `json:"tuples"`
	}{base64.StdEncoding.EncodeToString(batch)})
	if err != nil {
		return nil, fmt.Errorf("wirebench: %w", err)
	}
	return b, nil
}

// encapsulate returns the size on the wire of an inner request with body,
// as the client sends it.
func encapsulate(cfg ohttp.KeyConfig, contentType string, body []byte) (int, error) {
	req := &bhttp.Request{
		Method:    http.MethodPost,
		Scheme:    "https",
		Authority: api.InnerAuthority,
		Path:      api.PathCheckExposure,
		Header:    []bhttp.Field{{Name: "content-type", Value: contentType}},
		Content:   body,
	}
	plain, err := req.MarshalPadded()
	if err != nil {
		return 0, fmt.Errorf("wirebench: %w", err)
	}
	enc, _, err := ohttp.EncapsulateRequest(cfg, plain)
	if err != nil {
		return 0, fmt.Errorf("wirebench: %w", err)
	}
	return len(enc), nil
}
