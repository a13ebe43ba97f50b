package channel

import (
	"fmt"

	"github.com/ockam-go/ockam/identity"
)

// MessageType is the first byte of every channel message.
type MessageType uint8

// Message types. Layouts (|| is concatenation, sizes in bytes):
//
//	Handshake1: type(1)=1 || version(1) || e(32)
//	Handshake2: type(1)=2 || e(32) || enc(s)(32+16) || enc(payload)(n+16)
//	Handshake3: type(1)=3 || enc(s)(32+16) || enc(payload)(n+16)
//	Data:       type(1)=4 || nonce(8, big-endian) || AES-256-GCM(plaintext)(n+16)
//	Close:      type(1)=5 || nonce(8, big-endian) || AES-256-GCM(empty)(16)
//
// The handshake payload is the CBOR array [identity export, attestation].
// Data and Close authenticate their 9-byte header as associated data.
const (
	Handshake1 MessageType = 1
	Handshake2 MessageType = 2
	Handshake3 MessageType = 3
	Data       MessageType = 4
	Close      MessageType = 5
)

func (t MessageType) String() string {
	switch t {
	case Handshake1:
		return "handshake1"
	case Handshake2:
		return "handshake2"
	case Handshake3:
		return "handshake3"
	case Data:
		return "data"
	case Close:
		return "close"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// TypeOf returns the type byte of msg, or 0 if msg is empty. It does not
// validate anything else; use it to dispatch handshake and data messages.
func TypeOf(msg []byte) MessageType {
	if len(msg) == 0 {
		return 0
	}
	return MessageType(msg[0])
}

// ProtocolVersion is carried in Handshake1 and mixed into the Noise
// prologue, so both ends agree on it or the handshake fails.
const ProtocolVersion = 1

// NoiseProtocolName is the standard Noise protocol name used, unmodified.
const NoiseProtocolName = "Noise_XX_25519_AESGCM_SHA256"

// prologue is mixed into the handshake hash: "ockam-go/channel" || version.
func prologue(version byte) []byte { return append([]byte("ockam-go/channel"), version) }

// Sizes of the data phase.
const (
	// HeaderLen is the type byte plus the 8-byte explicit nonce.
	HeaderLen = 1 + 8
	// TagLen is the AES-GCM authentication tag.
	TagLen = 16
	// Overhead is what Seal adds to a plaintext.
	Overhead = HeaderLen + TagLen
	// MaxPayload is the largest plaintext Seal accepts.
	MaxPayload = 64 << 10
	// MaxMessage is the largest message Open accepts.
	MaxMessage = MaxPayload + Overhead
)

// Handshake sizes.
const (
	keyLen = 32
	// maxHandshakePayload bounds the CBOR handshake payload.
	maxHandshakePayload = identity.MaxIdentityBytes + identity.MaxAttestationBytes + 16
	// MaxHandshakeMessage bounds every handshake message; longer input is
	// refused before any work.
	MaxHandshakeMessage = 1 + keyLen + keyLen + TagLen + maxHandshakePayload + TagLen
)
