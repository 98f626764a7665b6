package enid

import (
	"crypto/aes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// BenchmarkDayRPIs derives the 144 RPIs of one key from its TEK, the work
// a backend does for every uploaded TEK.
func BenchmarkDayRPIs(b *testing.B) {
	tek := TEK{0x75, 0xc7, 0x34, 0xc6}
	buf := make([]RPI, 0, RollingPeriod)
	for b.Loop() {
		k, err := NewKey(tek, 2642976, RollingPeriod)
		if err != nil {
			b.Fatal(err)
		}
		buf = k.AppendRPIs(buf[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkDayRPIsFloor is the baseline for BenchmarkDayRPIs: one HKDF and
// 144 raw AES block encryptions with crypto/aes, the least any
// implementation of the spec can do.
func BenchmarkDayRPIsFloor(b *testing.B) {
	tek := []byte{0x75, 0xc7, 0x34, 0xc6, 12: 0}
	var out [RollingPeriod][16]byte
	for b.Loop() {
		rpik, err := hkdf.Key(sha256.New, tek, nil, "EN-RPIK", 16)
		if err != nil {
			b.Fatal(err)
		}
		block, err := aes.NewCipher(rpik)
		if err != nil {
			b.Fatal(err)
		}
		in := [16]byte{'E', 'N', '-', 'R', 'P', 'I'}
		for j := range RollingPeriod {
			binary.LittleEndian.PutUint32(in[12:], uint32(2642976+j))
			block.Encrypt(out[j][:], in[:])
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}
