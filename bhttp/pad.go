package bhttp

import "fmt"

// MaxSize is the largest size class, and so the largest message that
// MarshalPadded produces. It is also the default maximum for the parsers.
const MaxSize = 1 << 20

// minSizeClass is the smallest size class. Classes grow by a factor of
// four up to MaxSize: padding costs at most 4x in bandwidth while leaving
// only six distinguishable sizes.
const minSizeClass = 1 << 10

// SizeClasses returns the sizes, in bytes and ascending, to which
// MarshalPadded and Pad round messages up.
func SizeClasses() []int {
	var cs []int
	for c := minSizeClass; c <= MaxSize; c *= 4 {
		cs = append(cs, c)
	}
	return cs
}

// SizeClass returns the smallest size class that holds n bytes, or an error
// wrapping ErrTooLarge if n exceeds MaxSize.
func SizeClass(n int) (int, error) {
	for c := minSizeClass; c <= MaxSize; c *= 4 {
		if n <= c {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%w: %d bytes exceeds the largest size class of %d", ErrTooLarge, n, MaxSize)
}

// Pad appends zero bytes to an encoded Binary HTTP message until it is as
// long as its size class. Zero padding is part of RFC 9292, so any
// conforming decoder reads the padded message as the original. Pad may
// reuse msg's spare capacity.
func Pad(msg []byte) ([]byte, error) {
	c, err := SizeClass(len(msg))
	if err != nil {
		return nil, err
	}
	if cap(msg) < c {
		msg = append(make([]byte, 0, c), msg...)
	}
	return append(msg, make([]byte, c-len(msg))...), nil
}
