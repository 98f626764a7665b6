package bhttp

import "fmt"

// MaxSize is the largest size class, and so the largest message that
// MarshalPadded produces. It is also the default maximum for the parsers.
const MaxSize = 1 << 20

// minSizeClass is the smallest size class. Above it the classes are the
// powers of two and the sizes halfway between them: 1, 1.5, 2, 3, 4, 6, 8
// KiB and so on up to MaxSize. Padding then costs at most 1.5× in
// bandwidth, and an observer learns a message's length within that
// factor. Those are the two sides of the choice: an exposure check's
// length follows how many encounters its phone logged, so every class
// tells that number to within a factor; a ×4 ladder told less but could
// make a check cost four times its bytes, and a phone's daily check must
// stay a hundredth of what a GAEN phone downloads (see package
// contactlog). Steps of 1.5 keep a two-week check of 2,000 sightings
// within that bound wherever it falls in its class; finer steps would
// tell more and save little.
const minSizeClass = 1 << 10

// SizeClasses returns the sizes, in bytes and ascending, to which
// MarshalPadded and Pad round messages up.
func SizeClasses() []int {
	var cs []int
	for c := minSizeClass; c < MaxSize; c *= 2 {
		cs = append(cs, c, c+c/2)
	}
	return append(cs, MaxSize)
}

// SizeClass returns the smallest size class that holds n bytes, or an error
// wrapping ErrTooLarge if n exceeds MaxSize.
func SizeClass(n int) (int, error) {
	if n > MaxSize {
		return 0, fmt.Errorf("%w: %d bytes exceeds the largest size class of %d", ErrTooLarge, n, MaxSize)
	}
	for c := minSizeClass; ; c *= 2 {
		switch {
		case n <= c:
			return c, nil
		case n <= c+c/2:
			return c + c/2, nil
		}
	}
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
