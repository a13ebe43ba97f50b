// Package wire declares, once, every type byte and size of the messages
// that secure channels and relays exchange as routing payloads. It imports
// nothing but fmt: the relay (which must link no decryption code), the
// channel library and the channel runtime all agree through it, and a test
// holds docs/PROTOCOL.md to it.
//
// Layouts (|| is concatenation, sizes in bytes, integers big-endian):
//
//	Handshake1: 1 || version(1) || e(32)                        exactly Handshake1Len
//	Handshake2: 2 || e(32) || enc(s)(32+16) || enc(payload)(n+16)
//	Handshake3: 3 || enc(s)(32+16) || enc(payload)(n+16)
//	Data:       4 || nonce(8) || AES-256-GCM(plaintext)(n+16)  at least Overhead
//	Close:      5 || nonce(8) || AES-256-GCM(empty)(16)        exactly Overhead
//	Refusal:    0x10 || reason (UTF-8, at most MaxRefusal)      unauthenticated
//	Unknown:    0x11                                            exactly 1 byte, unauthenticated
//
// Data and Close authenticate their 9-byte header (type || nonce) as
// associated data. Refusal is the responder's answer to a third handshake
// message it does not accept; Unknown is what every node's forwarding
// service answers to Data for a decryptor address nobody holds. Both can
// only make a channel fail, which anyone on the path can do by dropping
// messages. Every other first byte (0, 6 to 0x0f, 0x12 to 0xff) is refused.
package wire

import "fmt"

// Type is the first byte of every secure channel message.
type Type uint8

// Message types.
const (
	Handshake1 Type = 1
	Handshake2 Type = 2
	Handshake3 Type = 3
	Data       Type = 4
	Close      Type = 5
	// Refusal and Unknown are sent by the channel runtime (package
	// securechannel) and the forwarding service, never by package
	// channel, and are not authenticated.
	Refusal Type = 0x10
	Unknown Type = 0x11
)

// Types lists every defined type, in order.
var Types = []Type{Handshake1, Handshake2, Handshake3, Data, Close, Refusal, Unknown}

func (t Type) String() string {
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
	case Refusal:
		return "refusal"
	case Unknown:
		return "unknown-channel"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// ProtocolVersion is carried in Handshake1 and mixed into the Noise
// prologue, so both ends agree on it or the handshake fails.
const ProtocolVersion = 1

// Sizes of the secure channel.
const (
	// KeyLen is a Curve25519 public key and an AES-256 key.
	KeyLen = 32
	// NonceLen is the explicit nonce of Data and Close.
	NonceLen = 8
	// HeaderLen is the type byte plus the explicit nonce.
	HeaderLen = 1 + NonceLen
	// TagLen is the AES-GCM authentication tag.
	TagLen = 16
	// Overhead is what sealing adds to a plaintext: the size of a Close
	// and of the smallest Data.
	Overhead = HeaderLen + TagLen
	// MaxPayload is the largest plaintext of one Data message.
	MaxPayload = 64 << 10
	// MaxMessage is the largest Data message.
	MaxMessage = MaxPayload + Overhead
	// Handshake1Len is the size of every Handshake1.
	Handshake1Len = 1 + 1 + KeyLen
	// UnknownLen is the size of the unknown-channel notice.
	UnknownLen = 1
	// MaxRefusal bounds the reason of a Refusal.
	MaxRefusal = 256
)

// Sizes of the forwarding service's requests (CBOR maps, package relay).
const (
	// MaxRelayRequest bounds a request to the forwarding service: it
	// carries the registrant's identity (a few hundred bytes) and a
	// signature.
	MaxRelayRequest = 8 << 10
	// ChallengeLen is the size of a registration challenge.
	ChallengeLen = 32
)
