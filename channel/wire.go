package channel

import (
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/wire"
)

// MessageType is the first byte of every channel message; the types, their
// layouts and the sizes below are declared once in package wire (see its
// documentation and docs/PROTOCOL.md section 4).
type MessageType = wire.Type

// Message types made by this package.
const (
	Handshake1 = wire.Handshake1
	Handshake2 = wire.Handshake2
	Handshake3 = wire.Handshake3
	Data       = wire.Data
	Close      = wire.Close
)

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
const ProtocolVersion = wire.ProtocolVersion

// NoiseProtocolName is the standard Noise protocol name used, unmodified.
const NoiseProtocolName = "Noise_XX_25519_AESGCM_SHA256"

// prologue is mixed into the handshake hash: "ockam-go/channel" || version.
func prologue(version byte) []byte { return append([]byte("ockam-go/channel"), version) }

// Sizes of the data phase (package wire).
const (
	HeaderLen  = wire.HeaderLen
	TagLen     = wire.TagLen
	Overhead   = wire.Overhead
	MaxPayload = wire.MaxPayload
	MaxMessage = wire.MaxMessage
)

// Handshake sizes.
const (
	keyLen = wire.KeyLen
	// maxHandshakePayload bounds the CBOR handshake payload.
	maxHandshakePayload = identity.MaxIdentityBytes + identity.MaxAttestationBytes + 16
	// MaxHandshakeMessage bounds every handshake message; longer input is
	// refused before any work.
	MaxHandshakeMessage = 1 + keyLen + keyLen + TagLen + maxHandshakePayload + TagLen
)
