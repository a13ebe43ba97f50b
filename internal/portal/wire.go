package portal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Kind is the first byte of every portal message. The values are on the wire.
//
//	Open     kind(1)=1 | version(1) | window(4) | port(2) | early bytes (≤ MaxEarly)
//	                                                        a new flow; port 0 = the outlet's own;
//	                                                        early bytes are the stream's first
//	Opened   kind(1)=2 | window(4)                          the outlet connected
//	Refused  kind(1)=3 | reason (UTF-8, ≤ MaxReason)        the flow could not open
//	Data     kind(1)=4 | seq(4) | bytes (≤ MaxChunk)        the next chunk of the stream
//	Credit   kind(1)=5 | bytes(4) | received(8)             more credit, and the stream bytes received in all
//	Fin      kind(1)=6 | seq(4) | flags(1)                  no more data after seq-1 (half-close);
//	                                                        flag 1: the sender keeps the flow until
//	                                                        FinAck, and sends Fin again until then
//	Reset    kind(1)=7 | reason (UTF-8, ≤ MaxReason)        the flow is aborted, both ways
//	Ping     kind(1)=8 | id(4)                              receiver → sender: answer Pong at once
//	Pong     kind(1)=9 | id(4)                              the answer (one round trip: a BDP sample)
//	Release  kind(1)=10 | bytes(4)                          sender → receiver: unused credit given back
//	Resume   kind(1)=11 | state | flow id (1..MaxFlowID)    opener → outlet, after its path came back
//	Resumed  kind(1)=12 | state                             the outlet's answer
//	Rewind   kind(1)=13 | seq(4)                            outlet → opener: Data or Fin after seq-1 were
//	                                                        lost on the way; resume to send them again
//	Probe    kind(1)=14 | seq(4)                            sender → receiver: out of credit and nothing
//	                                                        acknowledged for a while; seq is the next Data
//	Granted  kind(1)=15 | granted(8) | received(8)          the answer when nothing was lost: the bytes the
//	                                                        receiver grants in all, and received in all
//	FinAck   kind(1)=16 | seq(4)                            the answer to a Fin with flag 1, taken in
//	                                                        order at seq (also to one sent again)
//
// state (ResumeState bytes) is gen(4) | received(8) | granted(8) | seq(4) | flags(1):
// the resume's number (strictly increasing per flow), the stream bytes the
// sender of the message has received in all, the bytes it grants in all,
// the Data seq it expects next, and flag 1: it has received Fin.
//
// All integers are big-endian.
type Kind uint8

const (
	KindOpen    Kind = 1
	KindOpened  Kind = 2
	KindRefused Kind = 3
	KindData    Kind = 4
	KindCredit  Kind = 5
	KindFin     Kind = 6
	KindReset   Kind = 7
	KindPing    Kind = 8
	KindPong    Kind = 9
	KindRelease Kind = 10
	KindResume  Kind = 11
	KindResumed Kind = 12
	KindRewind  Kind = 13
	KindProbe   Kind = 14
	KindGranted Kind = 15
	KindFinAck  Kind = 16
)

func (k Kind) String() string {
	switch k {
	case KindOpen:
		return "open"
	case KindOpened:
		return "opened"
	case KindRefused:
		return "refused"
	case KindData:
		return "data"
	case KindCredit:
		return "credit"
	case KindFin:
		return "fin"
	case KindReset:
		return "reset"
	case KindPing:
		return "ping"
	case KindPong:
		return "pong"
	case KindRelease:
		return "release"
	case KindResume:
		return "resume"
	case KindResumed:
		return "resumed"
	case KindRewind:
		return "rewind"
	case KindProbe:
		return "probe"
	case KindGranted:
		return "granted"
	case KindFinAck:
		return "finack"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Version is the portal protocol version carried by Open. Version 2 added
// early data in Open, Ping/Pong (window autotuning) and Release; version 3
// added the received count in Credit and Resume/Resumed (flows that survive
// their path); version 4 added Rewind, Probe and Granted (flows that
// survive a relay dropping some of their messages); version 5 added Fin's
// flags and FinAck (the end of a stream survives them too).
const Version = 5

const (
	// MaxChunk is the most stream bytes one Data message carries. It keeps
	// a Data message, its routes and the channel's overhead within the
	// secure channel's 64 KiB payload.
	MaxChunk = 63 << 10
	// MaxReason bounds the reason of Refused and Reset.
	MaxReason = 256
	// MaxWindow bounds the receive window a peer may announce.
	MaxWindow = 64 << 20
	// DataHeader is the size of a Data message's header.
	DataHeader = 5
	// MaxEarly bounds the early bytes of an Open: enough for a request's
	// headers or a TLS ClientHello, and never more than a window.
	MaxEarly = 16 << 10
	// OpenHeader is the size of an Open message before its early bytes.
	OpenHeader = 8
	// ResumeState is the size of the state in Resume and Resumed.
	ResumeState = 25
	// MaxFlowID bounds the flow address a Resume names.
	MaxFlowID = 64
	// MaxCtl is the most bytes any message but Open, Data, Refused and
	// Reset takes.
	MaxCtl = 1 + ResumeState + MaxFlowID
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("portal: malformed message")

// Msg is a decoded portal message. Data aliases the decoded buffer.
type Msg struct {
	Kind   Kind
	Window uint32 // Open, Opened
	Port   uint16 // Open
	Seq    uint32 // Data, Fin
	Credit uint32 // Credit, Release
	ID     uint32 // Ping, Pong
	Recv   uint64 // Credit, Resume, Resumed: stream bytes received in all
	// Resume, Resumed.
	Gen     uint32
	Granted uint64
	Fin     bool   // Seq is the Data seq expected next; Fin: Fin was received
	Ack     bool   // Fin: the sender waits for FinAck
	Flow    string // Resume: the outlet's flow address
	Reason  string // Refused, Reset
	Data    []byte // Data; Open: the early bytes
}

// Decode parses a portal message. It never allocates for Data.
func Decode(b []byte) (Msg, error) {
	var m Msg
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", ErrMalformed)
	}
	m.Kind = Kind(b[0])
	b = b[1:]
	switch m.Kind {
	case KindOpen:
		if len(b) >= 1 && b[0] != Version {
			return m, fmt.Errorf("portal: peer speaks portal version %d, we speak %d", b[0], Version)
		}
		if len(b) < 7 || len(b) > 7+MaxEarly {
			return m, fmt.Errorf("%w: open of %d bytes", ErrMalformed, len(b))
		}
		m.Window = binary.BigEndian.Uint32(b[1:])
		m.Port = binary.BigEndian.Uint16(b[5:])
		if m.Window == 0 || m.Window > MaxWindow {
			return m, fmt.Errorf("%w: window %d", ErrMalformed, m.Window)
		}
		if len(b) > 7 {
			m.Data = b[7:]
		}
	case KindOpened:
		if len(b) != 4 {
			return m, fmt.Errorf("%w: opened of %d bytes", ErrMalformed, len(b))
		}
		m.Window = binary.BigEndian.Uint32(b)
		if m.Window == 0 || m.Window > MaxWindow {
			return m, fmt.Errorf("%w: window %d", ErrMalformed, m.Window)
		}
	case KindRefused, KindReset:
		if len(b) > MaxReason || !utf8.Valid(b) {
			return m, fmt.Errorf("%w: reason", ErrMalformed)
		}
		m.Reason = string(b)
	case KindData:
		if len(b) < 4 || len(b) > 4+MaxChunk {
			return m, fmt.Errorf("%w: data of %d bytes", ErrMalformed, len(b))
		}
		m.Seq = binary.BigEndian.Uint32(b)
		m.Data = b[4:]
	case KindCredit:
		if len(b) != 12 {
			return m, fmt.Errorf("%w: credit of %d bytes", ErrMalformed, len(b))
		}
		m.Credit = binary.BigEndian.Uint32(b)
		m.Recv = binary.BigEndian.Uint64(b[4:])
	case KindRelease:
		if len(b) != 4 {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		m.Credit = binary.BigEndian.Uint32(b)
	case KindResume, KindResumed:
		if len(b) < ResumeState {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		m.Gen = binary.BigEndian.Uint32(b)
		m.Recv = binary.BigEndian.Uint64(b[4:])
		m.Granted = binary.BigEndian.Uint64(b[12:])
		m.Seq = binary.BigEndian.Uint32(b[20:])
		switch b[24] {
		case 0:
		case 1:
			m.Fin = true
		default:
			return m, fmt.Errorf("%w: %v flags %#x", ErrMalformed, m.Kind, b[24])
		}
		id := b[ResumeState:]
		if m.Kind == KindResumed && len(id) != 0 || m.Kind == KindResume && (len(id) == 0 || len(id) > MaxFlowID) {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		for _, c := range id {
			if c <= ' ' || c >= 0x7f || c == '/' {
				return m, fmt.Errorf("%w: flow id", ErrMalformed)
			}
		}
		m.Flow = string(id)
	case KindGranted:
		if len(b) != 16 {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		m.Granted = binary.BigEndian.Uint64(b)
		m.Recv = binary.BigEndian.Uint64(b[8:])
	case KindPing, KindPong:
		if len(b) != 4 {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		m.ID = binary.BigEndian.Uint32(b)
	case KindFin:
		if len(b) != 5 {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		m.Seq = binary.BigEndian.Uint32(b)
		switch b[4] {
		case 0:
		case 1:
			m.Ack = true
		default:
			return m, fmt.Errorf("%w: %v flags %#x", ErrMalformed, m.Kind, b[4])
		}
	case KindRewind, KindProbe, KindFinAck:
		if len(b) != 4 {
			return m, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, m.Kind, len(b))
		}
		m.Seq = binary.BigEndian.Uint32(b)
	default:
		return m, fmt.Errorf("%w: unknown kind %d", ErrMalformed, m.Kind)
	}
	return m, nil
}

// Append appends the wire form of m to dst. For Data it writes the header
// and m.Data; callers on the hot path write the header with PutDataHeader
// in front of bytes they read in place.
func Append(dst []byte, m Msg) []byte {
	dst = append(dst, byte(m.Kind))
	switch m.Kind {
	case KindOpen:
		dst = append(dst, Version)
		dst = binary.BigEndian.AppendUint32(dst, m.Window)
		dst = binary.BigEndian.AppendUint16(dst, m.Port)
		dst = append(dst, m.Data...)
	case KindOpened:
		dst = binary.BigEndian.AppendUint32(dst, m.Window)
	case KindRefused, KindReset:
		r := m.Reason
		if len(r) > MaxReason {
			r = r[:MaxReason]
		}
		dst = append(dst, []byte(toValidUTF8(r))...)
	case KindData:
		dst = binary.BigEndian.AppendUint32(dst, m.Seq)
		dst = append(dst, m.Data...)
	case KindCredit:
		dst = binary.BigEndian.AppendUint32(dst, m.Credit)
		dst = binary.BigEndian.AppendUint64(dst, m.Recv)
	case KindRelease:
		dst = binary.BigEndian.AppendUint32(dst, m.Credit)
	case KindResume, KindResumed:
		dst = binary.BigEndian.AppendUint32(dst, m.Gen)
		dst = binary.BigEndian.AppendUint64(dst, m.Recv)
		dst = binary.BigEndian.AppendUint64(dst, m.Granted)
		dst = binary.BigEndian.AppendUint32(dst, m.Seq)
		flags := byte(0)
		if m.Fin {
			flags = 1
		}
		dst = append(dst, flags)
		if m.Kind == KindResume {
			dst = append(dst, m.Flow...)
		}
	case KindPing, KindPong:
		dst = binary.BigEndian.AppendUint32(dst, m.ID)
	case KindGranted:
		dst = binary.BigEndian.AppendUint64(dst, m.Granted)
		dst = binary.BigEndian.AppendUint64(dst, m.Recv)
	case KindFin:
		dst = binary.BigEndian.AppendUint32(dst, m.Seq)
		flags := byte(0)
		if m.Ack {
			flags = 1
		}
		dst = append(dst, flags)
	case KindRewind, KindProbe, KindFinAck:
		dst = binary.BigEndian.AppendUint32(dst, m.Seq)
	}
	return dst
}

// PutDataHeader writes a Data header into b[:DataHeader].
func PutDataHeader(b []byte, seq uint32) {
	b[0] = byte(KindData)
	binary.BigEndian.PutUint32(b[1:], seq)
}

func toValidUTF8(s string) string {
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
