package channel

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/flynn/noise"
)

// cacophonyVector is one vector in the cacophony JSON format.
type cacophonyVector struct {
	ProtocolName  string `json:"protocol_name"`
	InitPrologue  string `json:"init_prologue"`
	InitStatic    string `json:"init_static"`
	InitEphemeral string `json:"init_ephemeral"`
	RespPrologue  string `json:"resp_prologue"`
	RespStatic    string `json:"resp_static"`
	RespEphemeral string `json:"resp_ephemeral"`
	Messages      []struct {
		Payload    string `json:"payload"`
		Ciphertext string `json:"ciphertext"`
	} `json:"messages"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNoiseVectors checks the Noise implementation and this package's use
// of the split keys (key assignment, AES-GCM nonce layout) against the
// Noise_XX_25519_AESGCM_SHA256 vectors in testdata.
func TestNoiseVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/noise_xx_25519_aesgcm_sha256.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []cacophonyVector }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for i, v := range file.Vectors {
		if v.ProtocolName != NoiseProtocolName || string(cipherSuite.Name()) != "25519_AESGCM_SHA256" {
			t.Fatalf("vector %d: protocol %q, suite %q", i, v.ProtocolName, cipherSuite.Name())
		}
		t.Run(v.ProtocolName+"/"+string(rune('0'+i)), func(t *testing.T) {
			key := func(priv string) noise.DHKey {
				k, err := cipherSuite.GenerateKeypair(bytes.NewReader(unhex(t, priv)))
				if err != nil {
					t.Fatal(err)
				}
				return k
			}
			hsI, err := noise.NewHandshakeState(noise.Config{
				CipherSuite: cipherSuite, Pattern: noise.HandshakeXX, Initiator: true,
				Prologue: unhex(t, v.InitPrologue), StaticKeypair: key(v.InitStatic),
				Random: bytes.NewReader(unhex(t, v.InitEphemeral)),
			})
			if err != nil {
				t.Fatal(err)
			}
			hsR, err := noise.NewHandshakeState(noise.Config{
				CipherSuite: cipherSuite, Pattern: noise.HandshakeXX,
				Prologue: unhex(t, v.RespPrologue), StaticKeypair: key(v.RespStatic),
				Random: bytes.NewReader(unhex(t, v.RespEphemeral)),
			})
			if err != nil {
				t.Fatal(err)
			}
			var sI, sR *Session
			nonces := [2]uint64{}
			for j, m := range v.Messages {
				payload, want := unhex(t, m.Payload), unhex(t, m.Ciphertext)
				if j < len(noise.HandshakeXX.Messages) {
					w, r := hsI, hsR
					if j%2 == 1 {
						w, r = hsR, hsI
					}
					got, cs1, cs2, err := w.WriteMessage(nil, payload)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("message %d:\n got %x\nwant %x", j, got, want)
					}
					pt, rcs1, rcs2, err := r.ReadMessage(nil, got)
					if err != nil || !bytes.Equal(pt, payload) {
						t.Fatalf("message %d: read %x, %v", j, pt, err)
					}
					if cs1 != nil {
						// Build sessions the way Handshake.finish does.
						ini, resp := [2]*noise.CipherState{cs1, cs2}, [2]*noise.CipherState{rcs1, rcs2}
						if j%2 == 1 {
							ini, resp = resp, ini
						}
						sI = newSession(ini[0].UnsafeKey(), ini[1].UnsafeKey(), nil, true, nil)
						sR = newSession(resp[1].UnsafeKey(), resp[0].UnsafeKey(), nil, false, nil)
					}
					continue
				}
				// Transport messages alternate initiator, responder. The
				// session's raw AEAD with Noise's nonce layout and empty
				// associated data must reproduce Noise transport encryption.
				dir := (j - len(noise.HandshakeXX.Messages)) % 2
				s, peer := sI, sR
				if dir == 1 {
					s, peer = sR, sI
				}
				var nonce [12]byte
				binary.BigEndian.PutUint64(nonce[4:], nonces[dir])
				nonces[dir]++
				got := s.send.aead.Seal(nil, nonce[:], payload, nil)
				if !bytes.Equal(got, want) {
					t.Fatalf("transport message %d:\n got %x\nwant %x", j, got, want)
				}
				if pt, err := peer.recv.cur.Open(nil, nonce[:], got, nil); err != nil || !bytes.Equal(pt, payload) {
					t.Fatalf("transport message %d: open %x, %v", j, pt, err)
				}
			}
		})
	}
}

// TestRekeyMatchesNoise checks rekey against flynn/noise's REKEY.
func TestRekeyMatchesNoise(t *testing.T) {
	var k [32]byte
	for i := range k {
		k[i] = byte(i)
	}
	cs := noise.UnsafeNewCipherState(cipherSuite, k, 0)
	for range 3 {
		cs.Rekey()
		k = rekey(&k)
		if got := cs.UnsafeKey(); got != k {
			t.Fatalf("rekey = %x, noise REKEY = %x", k, got)
		}
	}
}
