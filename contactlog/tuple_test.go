package contactlog

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conftrace/conftrace/enid"
)

var (
	_ encoding.BinaryAppender    = Tuple{}
	_ encoding.BinaryMarshaler   = Tuple{}
	_ encoding.BinaryUnmarshaler = (*Tuple)(nil)
)

func randomTuple(r *rand.Rand) Tuple {
	var t Tuple
	for i := range t.Own {
		t.Own[i] = byte(r.Uint32())
		t.Heard[i] = byte(r.Uint32())
	}
	t.Interval = enid.Interval(r.Uint32())
	t.Duration = uint16(r.IntN(MaxDuration + 1))
	t.Attenuation = uint8(r.Uint32())
	return t
}

func randomTuples(seed uint64, n int) []Tuple {
	r := rand.New(rand.NewPCG(seed, 1))
	ts := make([]Tuple, n)
	for i := range ts {
		ts[i] = randomTuple(r)
	}
	return ts
}

// allErrors lists the decoding errors, to check that each failure matches
// its own error and no other.
var allErrors = []error{ErrTruncated, ErrTrailing, ErrVersion, ErrTooMany, ErrInvalid}

func checkOnly(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	for _, other := range allErrors {
		if other != want && errors.Is(err, other) {
			t.Errorf("error %v also matches %v", err, other)
		}
	}
}

func TestMirror(t *testing.T) {
	a := randomTuples(1, 1)[0]
	m := a.Mirror()
	if m.Own != a.Heard || m.Heard != a.Own || m.Interval != a.Interval || m.Duration != a.Duration || m.Attenuation != a.Attenuation {
		t.Errorf("Mirror(%+v) = %+v: want Own and Heard swapped, the rest equal", a, m)
	}
	if m.Mirror() != a {
		t.Error("the mirror of the mirror is not the original tuple")
	}
}

func TestTupleEncoding(t *testing.T) {
	tu := Tuple{
		Own:         enid.RPI{0: 0xaa, 15: 0xab},
		Heard:       enid.RPI{0: 0xcc, 15: 0xcd},
		Interval:    2642976,
		Duration:    MaxDuration,
		Attenuation: 73,
	}
	b, err := tu.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != TupleSize {
		t.Fatalf("encoded tuple is %d bytes, want %d", len(b), TupleSize)
	}
	// The layout is part of the wire format other implementations rely on.
	if !bytes.Equal(b[0:16], tu.Own[:]) || !bytes.Equal(b[16:32], tu.Heard[:]) ||
		binary.BigEndian.Uint32(b[32:36]) != uint32(tu.Interval) ||
		binary.BigEndian.Uint16(b[36:38]) != tu.Duration || b[38] != tu.Attenuation {
		t.Errorf("encoding %x does not follow the documented layout", b)
	}
	var got Tuple
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got != tu {
		t.Errorf("round trip gave %+v, want %+v", got, tu)
	}
	prefix := []byte("xy")
	app, err := tu.AppendBinary(prefix)
	if err != nil || !bytes.Equal(app[:2], prefix) || !bytes.Equal(app[2:], b) {
		t.Errorf("AppendBinary(%q) = %x, %v; want the prefix then the encoding", prefix, app, err)
	}
}

func TestTupleErrors(t *testing.T) {
	good, _ := randomTuples(2, 1)[0].MarshalBinary()
	long := append(slices.Clone(good), 0)
	badDur := slices.Clone(good)
	binary.BigEndian.PutUint16(badDur[36:], MaxDuration+1)
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"one short", good[:TupleSize-1], ErrTruncated},
		{"one long", long, ErrTrailing},
		{"duration too long", badDur, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := Tuple{Attenuation: 9}
			tu := orig
			checkOnly(t, tu.UnmarshalBinary(tt.data), tt.want)
			if tu != orig {
				t.Error("UnmarshalBinary changed the tuple despite an error")
			}
		})
	}
	if _, err := (Tuple{Duration: MaxDuration + 1}).MarshalBinary(); !errors.Is(err, ErrInvalid) {
		t.Errorf("marshaling a too-long duration: error %v, want ErrInvalid", err)
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 500} {
		ts := randomTuples(uint64(n), n)
		prefix := []byte{0xde, 0xad}
		b, err := AppendBatch(prefix, ts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:2], prefix) {
			t.Fatal("AppendBatch overwrote the prefix")
		}
		b = b[2:]
		if len(b) != 5+n*TupleSize || b[0] != BatchVersion || binary.BigEndian.Uint32(b[1:5]) != uint32(n) {
			t.Errorf("batch of %d: %d bytes, header %x; want %d bytes, version %d, count %d", n, len(b), b[:5], 5+n*TupleSize, BatchVersion, n)
		}
		got, err := UnmarshalBatch(b, n)
		if err != nil {
			t.Fatalf("batch of %d: %v", n, err)
		}
		if len(got) != n || (n > 0 && !slices.Equal(got, ts)) {
			t.Errorf("batch of %d did not round-trip", n)
		}
	}
}

func TestAppendBatchInvalid(t *testing.T) {
	ts := randomTuples(3, 3)
	ts[2].Duration = MaxDuration + 1
	prefix := []byte("keep")
	b, err := AppendBatch(prefix, ts)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	if !bytes.Equal(b, prefix) {
		t.Errorf("AppendBatch returned %q on error, want the input %q", b, prefix)
	}
}

func TestUnmarshalBatchErrors(t *testing.T) {
	good, err := AppendBatch(nil, randomTuples(4, 3))
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	tests := []struct {
		name string
		data []byte
		max  int
		want error
	}{
		{"empty", nil, 10, ErrTruncated},
		{"version only", good[:1], 10, ErrTruncated},
		{"header cut", good[:4], 10, ErrTruncated},
		{"tuples cut", good[:len(good)-1], 10, ErrTruncated},
		{"last tuple missing", good[:len(good)-TupleSize], 10, ErrTruncated},
		{"trailing byte", append(slices.Clone(good), 0), 10, ErrTrailing},
		{"extra tuple", append(slices.Clone(good), good[5:5+TupleSize]...), 10, ErrTrailing},
		{"version 0", with(func(b []byte) []byte { b[0] = 0; return b }), 10, ErrVersion},
		{"version 2", with(func(b []byte) []byte { b[0] = 2; return b }), 10, ErrVersion},
		{"over max", good, 2, ErrTooMany},
		{"zero max", good, 0, ErrTooMany},
		{"negative max", good, -1, ErrTooMany},
		{"huge count, little data", []byte{BatchVersion, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}, math.MaxInt, ErrTruncated},
		{"huge count over max", []byte{BatchVersion, 0xff, 0xff, 0xff, 0xff}, 1000, ErrTooMany},
		{"invalid duration", with(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[5+TupleSize+36:], math.MaxUint16)
			return b
		}), 10, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := UnmarshalBatch(tt.data, tt.max)
			checkOnly(t, err, tt.want)
			if ts != nil {
				t.Errorf("returned %d tuples with an error", len(ts))
			}
		})
	}
	if ts, err := UnmarshalBatch(good, 3); err != nil || len(ts) != 3 {
		t.Errorf("a batch of exactly max tuples: %d tuples, %v", len(ts), err)
	}
}

func FuzzUnmarshalBatch(f *testing.F) {
	for _, n := range []int{0, 1, 3} {
		b, _ := AppendBatch(nil, randomTuples(uint64(n), n))
		f.Add(b, 3)
	}
	f.Add([]byte{BatchVersion, 0xff, 0xff, 0xff, 0xff}, math.MaxInt)
	f.Add([]byte{2, 0, 0, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		ts, err := UnmarshalBatch(data, limit)
		if err != nil {
			return
		}
		if len(ts) > max(limit, 0) {
			t.Fatalf("decoded %d tuples with max %d", len(ts), limit)
		}
		// The encoding is canonical: a decoded batch re-encodes to itself.
		again, err := AppendBatch(nil, ts)
		if err != nil {
			t.Fatalf("re-encoding a decoded batch: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("decode then encode changed %x into %x", data, again)
		}
	})
}

func FuzzTupleUnmarshalBinary(f *testing.F) {
	good, _ := randomTuples(5, 1)[0].MarshalBinary()
	f.Add(good)
	f.Add(good[:20])
	f.Add(append(slices.Clone(good), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tu Tuple
		if err := tu.UnmarshalBinary(data); err != nil {
			return
		}
		again, err := tu.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding a decoded tuple: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("decode then encode changed %x into %x", data, again)
		}
		if tu.Mirror().Mirror() != tu {
			t.Fatal("Mirror is not an involution")
		}
	})
}
