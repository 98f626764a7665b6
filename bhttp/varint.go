package bhttp

import "fmt"

// maxVarint is the largest value a QUIC variable-length integer can hold.
const maxVarint = 1<<62 - 1

// appendVarint appends v in the QUIC variable-length integer encoding
// (RFC 9000, section 16), always in the shortest form. v must not exceed
// maxVarint; callers only pass lengths of in-memory data and status codes.
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, 0x40|byte(v>>8), byte(v))
	case v < 1<<30:
		return append(b, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(b, 0xc0|byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
			byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

// decoder reads a message front to back. It never reads past b and reports
// every problem as one of the package's sentinel errors.
type decoder struct {
	b       []byte
	off     int
	maxSize uint64
}

// empty reports whether the whole input has been consumed; a known-length
// message may end (be truncated) before any section's length prefix.
func (d *decoder) empty() bool { return d.off == len(d.b) }

func (d *decoder) varint(what string) (uint64, error) {
	if d.off >= len(d.b) {
		return 0, fmt.Errorf("%w: %s", ErrTruncated, what)
	}
	n := 1 << (d.b[d.off] >> 6)
	if len(d.b)-d.off < n {
		return 0, fmt.Errorf("%w: %s", ErrTruncated, what)
	}
	v := uint64(d.b[d.off] & 0x3f)
	for _, c := range d.b[d.off+1 : d.off+n] {
		v = v<<8 | uint64(c)
	}
	// RFC 9000 tolerates longer-than-needed encodings; we do not, so that
	// a message has exactly one encoding (see ErrInvalidVarint).
	if (n == 2 && v < 1<<6) || (n == 4 && v < 1<<14) || (n == 8 && v < 1<<30) {
		return 0, fmt.Errorf("%w: %s: %d encoded in %d bytes", ErrInvalidVarint, what, v, n)
	}
	d.off += n
	return v, nil
}

// bytes reads a length-prefixed byte string. The result aliases the input.
func (d *decoder) bytes(what string) ([]byte, error) {
	n, err := d.varint(what + " length")
	if err != nil {
		return nil, err
	}
	if n > d.maxSize {
		return nil, fmt.Errorf("%w: %s of %d bytes exceeds the limit of %d", ErrTooLarge, what, n, d.maxSize)
	}
	if n > uint64(len(d.b)-d.off) {
		return nil, fmt.Errorf("%w: %s of %d bytes, %d left", ErrTruncated, what, n, len(d.b)-d.off)
	}
	s := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return s, nil
}
