// Package datagram carries UDP over the secure channel: one association
// per application 5-tuple between a client (the TUN, a SOCKS5 UDP
// ASSOCIATE) and an outlet's UDP service, which sends each datagram to
// the outlet's target from a socket of its own and sends the target's
// datagrams back.
//
// Datagrams are best effort, as UDP is: every queue on the way is bounded
// and drops when full (counted), none blocks, and no credit or
// retransmission exists. TCP flows of the same channel keep their windows.
//
// Log attribute keys used: "outlet", "peer", "target", "err".
package datagram

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Kind is the first byte of every datagram message. The values are on the
// wire (docs/PROTOCOL.md, "Datagrams").
//
//	Datagram kind(1)=1 | version(1) | port(2) | payload (≤ MaxDatagram)  client → outlet: one datagram to port (0: the outlet's own)
//	Reply    kind(1)=2 | payload (≤ MaxDatagram)                         outlet → client: one datagram from the target
//	Close    kind(1)=3 | reason (UTF-8, ≤ MaxReason)                     either way: the association is over (refused, idle, deleted)
//	Batch    kind(1)=4 | version(1) | port(2) | (len(2) | payload)+      client → outlet: datagrams that were queued, in order
//	Replies  kind(1)=5 | (len(2) | payload)+                             outlet → client: the same for replies
//
// A batch holds at least one datagram and at most MaxBatch bytes of
// entries; it is sent only when datagrams queue up (a flood, a burst), so
// that the channel carries one message for many small datagrams.
// Integers are big-endian. The association is named by where its messages
// come from: the outlet keys it by the secure channel peer, the return
// route and the port; the client by its own worker address.
type Kind uint8

const (
	KindDatagram Kind = 1
	KindReply    Kind = 2
	KindClose    Kind = 3
	KindBatch    Kind = 4
	KindReplies  Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindDatagram:
		return "datagram"
	case KindReply:
		return "reply"
	case KindClose:
		return "close"
	case KindBatch:
		return "batch"
	case KindReplies:
		return "replies"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Version is the datagram protocol version carried by every Datagram.
const Version = 1

const (
	// MaxDatagram is the largest UDP payload carried. It keeps a message,
	// its routes and the channel's overhead within the secure channel's
	// 64 KiB payload (as portal.MaxChunk does). Larger datagrams are
	// dropped and counted; the interface's MTU (65000) allows up to 64972
	// bytes over IPv4, so the few sizes between are the only loss.
	MaxDatagram = 63 << 10
	// MaxReason bounds the reason of Close.
	MaxReason = 256
	// MaxBatch bounds the entries (length prefixes included) of a Batch
	// or Replies message, as MaxDatagram bounds one datagram.
	MaxBatch = MaxDatagram
	// EntryHeader is the length prefix of each datagram of a batch.
	EntryHeader = 2
	// DatagramHeader and ReplyHeader are the header sizes.
	DatagramHeader = 4
	ReplyHeader    = 1
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("datagram: malformed message")

// Msg is a decoded message. Payload aliases the decoded buffer.
type Msg struct {
	Kind    Kind
	Port    uint16 // Datagram
	Payload []byte // Datagram, Reply
	Reason  string // Close
	// Entries holds the datagrams of Batch and Replies, each a length
	// (2 bytes) and a payload; iterate with Each.
	Entries []byte
}

// Each calls f with each datagram of a batch, in order; the payloads alias
// the decoded buffer. Entries were checked by Decode.
func (m *Msg) Each(f func(p []byte)) {
	b := m.Entries
	for len(b) >= EntryHeader {
		n := int(binary.BigEndian.Uint16(b))
		f(b[EntryHeader : EntryHeader+n])
		b = b[EntryHeader+n:]
	}
}

// checkEntries validates the entries of a batch.
func checkEntries(b []byte) error {
	if len(b) == 0 || len(b) > MaxBatch {
		return fmt.Errorf("%w: batch of %d bytes", ErrMalformed, len(b))
	}
	for len(b) > 0 {
		if len(b) < EntryHeader {
			return fmt.Errorf("%w: batch entry cut", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < EntryHeader+n {
			return fmt.Errorf("%w: batch entry of %d bytes, %d left", ErrMalformed, n, len(b)-EntryHeader)
		}
		b = b[EntryHeader+n:]
	}
	return nil
}

// AppendEntry appends one datagram to the entries of a batch being built.
// len(p) must be at most MaxDatagram and the batch within MaxBatch.
func AppendEntry(dst, p []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(p)))
	return append(dst, p...)
}

// Decode parses a message. It never allocates for Payload.
func Decode(b []byte) (Msg, error) {
	var m Msg
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", ErrMalformed)
	}
	m.Kind = Kind(b[0])
	b = b[1:]
	switch m.Kind {
	case KindDatagram:
		if len(b) < DatagramHeader-1 {
			return m, fmt.Errorf("%w: datagram of %d bytes", ErrMalformed, len(b))
		}
		if b[0] != Version {
			return m, fmt.Errorf("datagram: peer speaks datagram version %d, we speak %d", b[0], Version)
		}
		m.Port = binary.BigEndian.Uint16(b[1:])
		m.Payload = b[3:]
		if len(m.Payload) > MaxDatagram {
			return m, fmt.Errorf("%w: payload of %d bytes", ErrMalformed, len(m.Payload))
		}
	case KindReply:
		if len(b) > MaxDatagram {
			return m, fmt.Errorf("%w: payload of %d bytes", ErrMalformed, len(b))
		}
		m.Payload = b
	case KindClose:
		if len(b) > MaxReason || !utf8.Valid(b) {
			return m, fmt.Errorf("%w: reason", ErrMalformed)
		}
		m.Reason = string(b)
	case KindBatch:
		if len(b) < DatagramHeader-1 {
			return m, fmt.Errorf("%w: batch of %d bytes", ErrMalformed, len(b))
		}
		if b[0] != Version {
			return m, fmt.Errorf("datagram: peer speaks datagram version %d, we speak %d", b[0], Version)
		}
		m.Port = binary.BigEndian.Uint16(b[1:])
		if err := checkEntries(b[3:]); err != nil {
			return m, err
		}
		m.Entries = b[3:]
	case KindReplies:
		if err := checkEntries(b); err != nil {
			return m, err
		}
		m.Entries = b
	default:
		return m, fmt.Errorf("%w: unknown kind %d", ErrMalformed, m.Kind)
	}
	return m, nil
}

// Append appends the wire form of m to dst. Payloads over MaxDatagram and
// reasons over MaxReason are the caller's error for Datagram and Reply
// (Decode rejects them); reasons are cut.
func Append(dst []byte, m Msg) []byte {
	dst = append(dst, byte(m.Kind))
	switch m.Kind {
	case KindDatagram:
		dst = append(dst, Version)
		dst = binary.BigEndian.AppendUint16(dst, m.Port)
		dst = append(dst, m.Payload...)
	case KindReply:
		dst = append(dst, m.Payload...)
	case KindClose:
		r := m.Reason
		if len(r) > MaxReason {
			r = r[:MaxReason]
		}
		for !utf8.ValidString(r) {
			r = r[:len(r)-1]
		}
		dst = append(dst, r...)
	case KindBatch:
		dst = append(dst, Version)
		dst = binary.BigEndian.AppendUint16(dst, m.Port)
		dst = append(dst, m.Entries...)
	case KindReplies:
		dst = append(dst, m.Entries...)
	}
	return dst
}

// PutDatagramHeader writes a Datagram header into b[:DatagramHeader], in
// front of a payload read in place.
func PutDatagramHeader(b []byte, port uint16) {
	b[0] = byte(KindDatagram)
	b[1] = Version
	binary.BigEndian.PutUint16(b[2:], port)
}

// PutReplyHeader writes a Reply header into b[:ReplyHeader].
func PutReplyHeader(b []byte) { b[0] = byte(KindReply) }
