package channel

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}}

// BenchmarkSealOpen measures one Seal and one Open per operation.
func BenchmarkSealOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			a, r := sessionPair(b)
			pt := make([]byte, size.n)
			rand.Read(pt)
			msg := make([]byte, 0, size.n+Overhead)
			out := make([]byte, 0, size.n)
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if msg, err = a.Seal(msg[:0], pt); err != nil {
					b.Fatal(err)
				}
				if out, err = r.Open(out[:0], msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawAESGCM is the floor: AES-256-GCM seal and open of the same
// sizes with no framing, replay window or locks.
func BenchmarkRawAESGCM(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			key := make([]byte, 32)
			rand.Read(key)
			block, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(block)
			pt := make([]byte, size.n)
			rand.Read(pt)
			ct := make([]byte, 0, size.n+gcm.Overhead())
			out := make([]byte, 0, size.n)
			var nonce [12]byte
			var n uint64
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			for b.Loop() {
				n++
				binary.BigEndian.PutUint64(nonce[4:], n)
				ct = gcm.Seal(ct[:0], nonce[:], pt, nil)
				var err error
				if out, err = gcm.Open(out[:0], nonce[:], ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
