package enid

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"testing"
	"time"
)

type vectorFile struct {
	KeyGenerationUnixSeconds int64  `json:"key_generation_unix_seconds"`
	IntervalNumberOfKey      uint32 `json:"interval_number_of_key"`
	TEK                      string `json:"tek"`
	RPIK                     string `json:"rpik"`
	AEMK                     string `json:"aemk"`
	BLEMetadata              string `json:"ble_metadata"`
	Advertised               []struct {
		IntervalNumber uint32 `json:"interval_number"`
		RPI            string `json:"rpi"`
		AEM            string `json:"aem"`
	} `json:"advertised"`
}

func loadVectors(t testing.TB) vectorFile {
	t.Helper()
	data, err := os.ReadFile("testdata/en-crypto-v1.2.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Advertised) == 0 {
		t.Fatal("vector file has no advertised identifiers")
	}
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGAENVectors(t *testing.T) {
	v := loadVectors(t)
	tek := TEK(unhex(t, v.TEK))

	if got := tek.RPIK(); !bytes.Equal(got[:], unhex(t, v.RPIK)) {
		t.Errorf("RPIK = %x, want %s", got, v.RPIK)
	}
	if got := tek.AEMK(); !bytes.Equal(got[:], unhex(t, v.AEMK)) {
		t.Errorf("AEMK = %x, want %s", got, v.AEMK)
	}
	start := IntervalOf(time.Unix(v.KeyGenerationUnixSeconds, 0))
	if start != Interval(v.IntervalNumberOfKey) {
		t.Errorf("IntervalOf(%d) = %d, want %d", v.KeyGenerationUnixSeconds, start, v.IntervalNumberOfKey)
	}

	key, err := NewKey(tek, start, RollingPeriod)
	if err != nil {
		t.Fatal(err)
	}
	all := key.AppendRPIs(nil)
	if len(all) != RollingPeriod {
		t.Fatalf("AppendRPIs returned %d RPIs, want %d", len(all), RollingPeriod)
	}
	meta := unhex(t, v.BLEMetadata)
	for _, a := range v.Advertised {
		i := Interval(a.IntervalNumber)
		want := unhex(t, a.RPI)
		if got := key.RPI(i); !bytes.Equal(got[:], want) {
			t.Errorf("RPI(%d) = %x, want %s", i, got, a.RPI)
		}
		if got := all[i-start]; !bytes.Equal(got[:], want) {
			t.Errorf("AppendRPIs[%d] = %x, want %s", i-start, got, a.RPI)
		}
		rpi := RPI(want)
		aem := key.EncryptMetadata(rpi, meta)
		if !bytes.Equal(aem, unhex(t, a.AEM)) {
			t.Errorf("AEM at %d = %x, want %s", i, aem, a.AEM)
		}
		if got := key.DecryptMetadata(rpi, aem); !bytes.Equal(got, meta) {
			t.Errorf("DecryptMetadata at %d = %x, want %x", i, got, meta)
		}
	}
}

func TestAppendRPIsMatchesRPI(t *testing.T) {
	tek := NewTEK()
	start := Interval(2700000).RollingStart()
	key, err := NewKey(tek, start, 37)
	if err != nil {
		t.Fatal(err)
	}
	prefix := RPI{0xff}
	got := key.AppendRPIs([]RPI{prefix})
	if len(got) != 1+37 || got[0] != prefix {
		t.Fatalf("AppendRPIs did not append to the existing slice: len %d, first %x", len(got), got[0])
	}
	seen := make(map[RPI]bool)
	for j, r := range got[1:] {
		if want := key.RPI(start + Interval(j)); r != want {
			t.Errorf("AppendRPIs[%d] = %x, RPI = %x", j, r, want)
		}
		if seen[r] {
			t.Errorf("RPI %x repeats within one key", r)
		}
		seen[r] = true
	}
}

func TestAppendRPIsDoesNotAllocate(t *testing.T) {
	key, err := NewKey(NewTEK(), 0, RollingPeriod)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]RPI, 0, RollingPeriod)
	allocs := testing.AllocsPerRun(100, func() {
		buf = key.AppendRPIs(buf[:0])
	})
	if allocs != 0 {
		t.Errorf("AppendRPIs into a large enough buffer made %v allocations, want 0", allocs)
	}
}

// TestPutRPI: PutRPI writes what RPI returns, into the caller's memory,
// without allocating (the enclave derives thousands a check with it).
func TestPutRPI(t *testing.T) {
	key, err := NewKey(NewTEK(), 100*RollingPeriod, RollingPeriod)
	if err != nil {
		t.Fatal(err)
	}
	own := make([]RPI, RollingPeriod)
	for j := range own {
		own[j] = RPI{0xff} // left over from a previous use
		key.PutRPI(&own[j], key.Start()+Interval(j))
		if want := key.RPI(key.Start() + Interval(j)); own[j] != want {
			t.Fatalf("PutRPI(%d) = %x, RPI = %x", j, own[j], want)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { key.PutRPI(&own[0], key.Start()) }); allocs != 0 {
		t.Errorf("PutRPI made %v allocations, want 0", allocs)
	}
}

func TestDistinctTEKsGiveDistinctRPIs(t *testing.T) {
	a, _ := NewKey(NewTEK(), 100*RollingPeriod, RollingPeriod)
	b, _ := NewKey(NewTEK(), 100*RollingPeriod, RollingPeriod)
	if a.TEK() == b.TEK() {
		t.Fatal("NewTEK returned the same key twice")
	}
	if a.RPI(100*RollingPeriod) == b.RPI(100*RollingPeriod) {
		t.Error("two TEKs gave the same RPI")
	}
}

func TestNewKeyErrors(t *testing.T) {
	tests := []struct {
		name   string
		start  Interval
		period int
		want   error
	}{
		{"zero period", 0, 0, ErrRollingPeriod},
		{"negative period", 0, -1, ErrRollingPeriod},
		{"period past a day", 0, RollingPeriod + 1, ErrRollingPeriod},
		{"ends past last interval", math.MaxUint32 - 10, 11, ErrIntervalRange},
		{"starts at last interval", math.MaxUint32, 1, ErrIntervalRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := NewKey(TEK{}, tt.start, tt.period)
			if !errors.Is(err, tt.want) {
				t.Fatalf("NewKey(%d, %d) error = %v, want %v", tt.start, tt.period, err, tt.want)
			}
			if k != nil {
				t.Error("NewKey returned a key with an error")
			}
		})
	}
}

func TestKeyValidity(t *testing.T) {
	start := Interval(2642976)
	k, err := NewKey(TEK{1}, start, 100)
	if err != nil {
		t.Fatal(err)
	}
	if k.Start() != start || k.Period() != 100 || k.End() != start+100 {
		t.Errorf("Start, Period, End = %d, %d, %d; want %d, 100, %d", k.Start(), k.Period(), k.End(), start, start+100)
	}
	for _, c := range []struct {
		i    Interval
		want bool
	}{
		{start - 1, false}, {start, true}, {start + 99, true}, {start + 100, false},
	} {
		if got := k.Contains(c.i); got != c.want {
			t.Errorf("Contains(%d) = %v, want %v", c.i, got, c.want)
		}
	}
	last, err := NewKey(TEK{1}, math.MaxUint32-1, 1)
	if err != nil {
		t.Fatalf("a key ending at the last interval: %v", err)
	}
	if !last.Contains(math.MaxUint32-1) || last.Contains(math.MaxUint32) {
		t.Error("a key ending at the last interval reports the wrong validity")
	}
}

func TestIntervals(t *testing.T) {
	day := time.Date(2020, 4, 2, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		t    time.Time
		want Interval
	}{
		{"epoch", time.Unix(0, 0), 0},
		{"before epoch", time.Unix(-1, 0), 0},
		{"last second of first interval", time.Unix(599, 0), 0},
		{"second interval", time.Unix(600, 0), 1},
		{"vector day", day, 2642976},
		{"mid-interval, other zone", day.Add(25 * time.Minute).In(time.FixedZone("x", 5*3600)), 2642978},
		{"far future", time.Unix(math.MaxInt64, 0), math.MaxUint32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IntervalOf(tt.t); got != tt.want {
				t.Errorf("IntervalOf(%v) = %d, want %d", tt.t, got, tt.want)
			}
		})
	}

	i := IntervalOf(day.Add(13*time.Hour + 7*time.Minute))
	if got := i.RollingStart(); got.Time() != day {
		t.Errorf("RollingStart of 13:07 is %v, want %v", got.Time(), day)
	}
	if got := i.Time(); got != day.Add(13*time.Hour) {
		t.Errorf("Time of the 13:07 interval = %v, want %v", got, day.Add(13*time.Hour))
	}
	if Interval(2642976).RollingStart() != 2642976 {
		t.Error("RollingStart moved an aligned interval")
	}
}

func TestMetadataIsKeyedAndPerRPI(t *testing.T) {
	k1, _ := NewKey(TEK{1}, 0, RollingPeriod)
	k2, _ := NewKey(TEK{2}, 0, RollingPeriod)
	meta := []byte{0x40, 0x08, 0, 0}
	r0, r1 := k1.RPI(0), k1.RPI(1)
	a := k1.EncryptMetadata(r0, meta)
	if bytes.Equal(a, meta) {
		t.Error("AEM equals the plaintext metadata")
	}
	if bytes.Equal(a, k1.EncryptMetadata(r1, meta)) {
		t.Error("the same metadata encrypts alike under two RPIs")
	}
	if bytes.Equal(k2.DecryptMetadata(r0, a), meta) {
		t.Error("another TEK decrypted the metadata")
	}
	if got := k1.EncryptMetadata(r0, nil); len(got) != 0 {
		t.Errorf("empty metadata encrypted to %x", got)
	}
}

// AppendAEM is AES-CTR as crypto/cipher computes it, at every length and
// across a counter that wraps; it keeps what dst held, works in place, and
// leaves no keystream in the room it used.
func TestAppendAEMIsCTR(t *testing.T) {
	k, _ := NewKey(TEK{7}, 0, RollingPeriod)
	aemk := TEK{7}.AEMK()
	block, err := aes.NewCipher(aemk[:])
	if err != nil {
		t.Fatal(err)
	}
	rpis := []RPI{k.RPI(3), {15: 0xfe}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for _, rpi := range rpis {
		for n := range 50 {
			meta := bytes.Repeat([]byte{byte(n)}, n)
			want := make([]byte, n)
			cipher.NewCTR(block, rpi[:]).XORKeyStream(want, meta)
			if got := k.EncryptMetadata(rpi, meta); !bytes.Equal(got, want) {
				t.Fatalf("RPI %x, %d bytes: EncryptMetadata = %x, want %x", rpi, n, got, want)
			}
			dst := append(make([]byte, 0, 3+n+2*aes.BlockSize), "abc"...)
			got := k.AppendAEM(dst, rpi, meta)
			if !bytes.Equal(got, append([]byte("abc"), want...)) {
				t.Fatalf("RPI %x, %d bytes: AppendAEM = %x, want abc then %x", rpi, n, got, want)
			}
			if spare := got[len(got):cap(got)]; !bytes.Equal(spare, make([]byte, len(spare))) {
				t.Fatalf("RPI %x, %d bytes: keystream left in dst's spare room: %x", rpi, n, spare)
			}
			inPlace := append(make([]byte, 0, n+aes.BlockSize), meta...)
			if got := k.AppendAEM(inPlace[:0], rpi, inPlace); !bytes.Equal(got, want) {
				t.Fatalf("RPI %x, %d bytes: in place = %x, want %x", rpi, n, got, want)
			}
		}
	}
}

// With room in dst, AEMs cost no allocation, as the benchmark against
// raw AES-CTR assumes.
func TestAppendAEMDoesNotAllocate(t *testing.T) {
	k, _ := NewKey(TEK{7}, 0, RollingPeriod)
	rpi, meta := k.RPI(0), []byte{0x40, 0x08, 0, 0}
	buf := make([]byte, 0, aes.BlockSize)
	if n := testing.AllocsPerRun(100, func() { buf = k.AppendAEM(buf[:0], rpi, meta) }); n != 0 {
		t.Errorf("AppendAEM allocates %.0f times with room in dst", n)
	}
}

func TestKeyConcurrentUse(t *testing.T) {
	v := loadVectors(t)
	key, err := NewKey(TEK(unhex(t, v.TEK)), Interval(v.IntervalNumberOfKey), RollingPeriod)
	if err != nil {
		t.Fatal(err)
	}
	meta := unhex(t, v.BLEMetadata)
	a := v.Advertised[0]
	rpi, want := RPI(unhex(t, a.RPI)), unhex(t, a.AEM)
	done := make(chan []byte)
	for range 8 {
		go func() { done <- key.EncryptMetadata(rpi, meta) }()
	}
	for range 8 {
		if got := <-done; !bytes.Equal(got, want) {
			t.Errorf("concurrent EncryptMetadata = %x, want %x", got, want)
		}
	}
}
