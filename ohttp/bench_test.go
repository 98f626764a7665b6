package ohttp

import (
	"testing"
)

// BenchmarkRoundTrip measures a full exchange per suite: the client
// encapsulates a 1 KiB request, the gateway decapsulates it and
// encapsulates a 1 KiB response, the client decapsulates it. Compare the
// sub-benchmarks to see what the post-quantum hybrid costs over X25519.
func BenchmarkRoundTrip(b *testing.B) {
	g, hybrid, classic := testGateway(b)
	msg := make([]byte, 1024)
	for _, c := range []struct {
		name string
		key  *PrivateKey
	}{{"X25519", classic}, {"MLKEM768X25519", hybrid}} {
		cfg := c.key.KeyConfig()
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(2 * int64(len(msg)))
			for b.Loop() {
				req, client, err := EncapsulateRequest(cfg, msg)
				if err != nil {
					b.Fatal(err)
				}
				_, server, err := g.DecapsulateRequest(req)
				if err != nil {
					b.Fatal(err)
				}
				resp, err := server.EncapsulateResponse(msg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := client.DecapsulateResponse(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
