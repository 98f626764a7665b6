package service

import (
	"encoding/binary"
	"fmt"

	"github.com/conftrace/conftrace/ohttp"
)

// GatewaySecretsForTest returns the secret halves of the private keys the
// gateway serves now, for tests that look for them where they must not be.
func (s *Service) GatewaySecretsForTest() ([][]byte, error) {
	var secrets [][]byte
	for _, g := range s.keys.served.Load().gens {
		for _, k := range []*ohttp.PrivateKey{g.hybrid, g.classic} {
			// version || len16 || configuration || len16 || secret
			b, err := k.MarshalBinary()
			if err != nil {
				return nil, err
			}
			n := 3 + int(binary.BigEndian.Uint16(b[1:]))
			if len(b) < n+2 || len(b) != n+2+int(binary.BigEndian.Uint16(b[n:])) {
				return nil, fmt.Errorf("private key of %d bytes: unexpected serialization", len(b))
			}
			secrets = append(secrets, b[n+2:])
		}
	}
	return secrets, nil
}
