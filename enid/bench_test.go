package enid

import (
	"crypto/aes"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
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

// gaenMetadata is GAEN v1.2's Bluetooth metadata: version 1.0, a transmit
// power of 8 dBm and two reserved bytes.
var gaenMetadata = []byte{0x40, 0x08, 0x00, 0x00}

// BenchmarkAEM encrypts one interval's metadata under its RPI, the work a
// phone does for every broadcast and a receiver to read one.
func BenchmarkAEM(b *testing.B) {
	k, err := NewKey(TEK{0x75, 0xc7, 0x34, 0xc6}, 2642976, RollingPeriod)
	if err != nil {
		b.Fatal(err)
	}
	rpi := k.RPI(2642976)
	k.EncryptMetadata(rpi, gaenMetadata) // derive the AEMK outside the loop
	aem := make([]byte, 0, aes.BlockSize)
	for b.Loop() {
		aem = k.AppendAEM(aem[:0], rpi, gaenMetadata)
	}
}

// BenchmarkAEMAlloc is BenchmarkAEM through EncryptMetadata, which
// allocates the AEM it returns.
func BenchmarkAEMAlloc(b *testing.B) {
	k, err := NewKey(TEK{0x75, 0xc7, 0x34, 0xc6}, 2642976, RollingPeriod)
	if err != nil {
		b.Fatal(err)
	}
	rpi := k.RPI(2642976)
	var aem []byte
	for b.Loop() {
		aem = k.EncryptMetadata(rpi, gaenMetadata)
	}
	_ = aem
}

// BenchmarkAEMFloor is the baseline for BenchmarkAEM: raw AES-CTR over the
// same bytes with a cipher made once, which for metadata of one block is
// one AES block encryption of the RPI and an XOR.
func BenchmarkAEMFloor(b *testing.B) {
	tek := TEK{0x75, 0xc7, 0x34, 0xc6}
	aemk, err := hkdf.Key(sha256.New, tek[:], nil, "EN-AEMK", 16)
	if err != nil {
		b.Fatal(err)
	}
	block, err := aes.NewCipher(aemk)
	if err != nil {
		b.Fatal(err)
	}
	k, err := NewKey(tek, 2642976, RollingPeriod)
	if err != nil {
		b.Fatal(err)
	}
	rpi := k.RPI(2642976)
	var stream [aes.BlockSize]byte
	aem := make([]byte, len(gaenMetadata))
	for b.Loop() {
		block.Encrypt(stream[:], rpi[:])
		subtle.XORBytes(aem, gaenMetadata, stream[:])
	}
}
