package tdx

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// Layout of a version 4 quote, as far as it is needed to bound the
// variable-length parts before go-tdx-guest slices them.
const (
	quoteHeaderSize     = 0x30
	quoteBodySize       = 0x248
	quoteSignedSizeOff  = quoteHeaderSize + quoteBodySize // u32: size of the signed data
	quoteSignedDataOff  = quoteSignedSizeOff + 4
	sigAndKeySize       = 0x40 + 0x40 // quote signature, attestation key
	certDataHeaderSize  = 2 + 4       // type u16, size u32
	qeReportAndSigSize  = 0x180 + 0x40
	qeAuthDataSizeBytes = 2
)

// parseQuote decodes a raw TDX quote with go-tdx-guest after checking that
// every length field stays inside the quote: the library's parser slices
// with those lengths unchecked and panics on a quote that lies about them.
// A panic that still escapes the library is turned into ErrMalformed, since
// a verifier must never crash on outside bytes.
func parseQuote(b []byte) (q *pb.QuoteV4, err error) {
	if err := checkLayout(b); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("%w: go-tdx-guest failed to parse the quote: %v", ErrMalformed, r)
		}
	}()
	parsed, err := abi.QuoteToProto(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	quote, ok := parsed.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("%w: unsupported quote type %T", ErrMalformed, parsed)
	}
	if err := abi.CheckQuoteV4(quote); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return quote, nil
}

// checkLayout checks the sizes that a version 4 quote declares.
func checkLayout(b []byte) error {
	if len(b) < abi.QuoteMinSize {
		return fmt.Errorf("%w: %d bytes, shorter than the %d of any version 4 quote", ErrMalformed, len(b), abi.QuoteMinSize)
	}
	if v := binary.LittleEndian.Uint16(b); v != abi.QuoteVersion {
		return fmt.Errorf("%w: quote version %d, want %d", ErrMalformed, v, abi.QuoteVersion)
	}
	signed := uint64(binary.LittleEndian.Uint32(b[quoteSignedSizeOff:]))
	rest := b[quoteSignedDataOff:]
	if signed > uint64(len(rest)) {
		return fmt.Errorf("%w: signed data of %d bytes declared, %d present", ErrMalformed, signed, len(rest))
	}
	sd := rest[:signed]
	if len(sd) < sigAndKeySize+certDataHeaderSize {
		return fmt.Errorf("%w: signed data of %d bytes is too short", ErrMalformed, len(sd))
	}
	cd := sd[sigAndKeySize:]
	if size := uint64(binary.LittleEndian.Uint32(cd[2:])); size != uint64(len(cd)-certDataHeaderSize) {
		return fmt.Errorf("%w: certification data of %d bytes declared, %d present", ErrMalformed, size, len(cd)-certDataHeaderSize)
	}
	qe := cd[certDataHeaderSize:]
	if len(qe) < qeReportAndSigSize+qeAuthDataSizeBytes {
		return fmt.Errorf("%w: QE report certification data of %d bytes is too short", ErrMalformed, len(qe))
	}
	auth := int(binary.LittleEndian.Uint16(qe[qeReportAndSigSize:]))
	if len(qe) < qeReportAndSigSize+qeAuthDataSizeBytes+auth+certDataHeaderSize {
		return fmt.Errorf("%w: QE authentication data of %d bytes leaves no room for the PCK chain", ErrMalformed, auth)
	}
	return nil
}
