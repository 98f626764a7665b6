package contactlog

import (
	"bytes"
	"errors"
	"testing"

	"github.com/conftrace/conftrace/enid"
)

// A key list holds different devices' keys, which may overlap, and
// refuses what a report refuses of a single key.
func TestKeyList(t *testing.T) {
	keys := []DailyKey{
		{TEK: enid.TEK{1}, Start: 100, Period: 144},
		{TEK: enid.TEK{2}, Start: 100, Period: 144}, // another device's key of the same day
		{TEK: enid.TEK{3}, Start: 150, Period: 10},
	}
	b, err := AppendKeys([]byte{9}, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 1+4+3*DailyKeySize || b[0] != 9 {
		t.Fatalf("encoding of %d bytes, want the prefix, a count and 3 keys", len(b))
	}
	got, err := ParseKeys(b[1:], 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if got[i] != keys[i] {
			t.Errorf("key %d: %+v, want %+v", i, got[i], keys[i])
		}
	}
	for _, c := range []struct {
		name  string
		data  []byte
		limit int
		want  error
	}{
		{"over the limit", b[1:], 2, ErrTooMany},
		{"negative limit", b[1:], -1, ErrTooMany},
		{"truncated", b[1 : len(b)-1], 3, ErrTruncated},
		{"no count", b[1:3], 3, ErrTruncated},
		{"trailing", append(bytes.Clone(b[1:]), 0), 3, ErrTrailing},
		{"period 0", append(bytes.Clone(b[1:len(b)-1]), 0), 3, ErrInvalid},
		{"period 145", append(bytes.Clone(b[1:len(b)-1]), 145), 3, ErrInvalid},
	} {
		if _, err := ParseKeys(c.data, c.limit); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := AppendKeys(nil, []DailyKey{{Start: 1, Period: 0}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendKeys of a key of period 0: %v, want ErrInvalid", err)
	}
}

func FuzzParseKeys(f *testing.F) {
	b, _ := AppendKeys(nil, []DailyKey{{TEK: enid.TEK{1}, Start: 100, Period: 144}, {TEK: enid.TEK{2}, Start: 100, Period: 144}})
	f.Add(b, 2)
	f.Add(b[:10], 2)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 1<<30)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		keys, err := ParseKeys(data, limit)
		if err != nil {
			return
		}
		if len(keys) > limit {
			t.Fatalf("%d keys over the limit %d", len(keys), limit)
		}
		again, err := AppendKeys(nil, keys)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted keys re-encode to %x, %v; want %x", again, err, data)
		}
	})
}
