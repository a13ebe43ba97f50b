package routing

import (
	"errors"
	"fmt"
)

// Message is what travels between workers and nodes.
//
// Payload ownership: a Message handed to a worker is the worker's only for
// the duration of the call; a worker that keeps the payload (or the routes)
// beyond it must copy them.
type Message struct {
	// Kind is KindData for every message a worker sends, and KindError
	// for the error replies routers send (Payload is then an
	// Unreachable in its wire form, see AppendUnreachable).
	Kind    Kind
	Onward  Route
	Return  Route
	Payload []byte

	// Peer is the identifier of the secure channel peer the message came
	// from, set only by a secure channel's decryptor (its address is then
	// the first hop of Return). It is never on the wire: a message that
	// arrives over a transport connection has no Peer, which is how an
	// outlet refuses anything that did not come through a secure channel.
	Peer string

	// Via is the ID of the transport connection the message arrived on,
	// set by the node's router when it reads the message and kept while
	// workers pass the same message on (a relay's forwarder). It is empty
	// for messages that originate on the node and for what comes out of a
	// secure channel, and it is never on the wire. The router uses it to
	// decide what a remote sender may reach (see node.Access) and never to
	// make one connection's reader wait for another's writer.
	Via string

	// Lane is a hint for which lane (TCP connection) of a bundle the
	// message goes on when it leaves the node (lane Lane modulo the
	// bundle's size): messages of one lane stay in order. A sender that
	// needs its messages in order gives them all the same lane; the
	// transport sets it to the lane a message arrived on, so a node
	// passing it on keeps its lane. It is never on the wire.
	Lane uint8
}

// Wire form of a Message (version 2, see docs/PROTOCOL.md):
//
//	onward route   u8 flags|hop count, then per hop: u8 type, u8 length, value
//	return route   u8 hop count, then the hops
//	payload        every byte up to the end of the frame
//
// The top bit of the onward count (errorFlag) marks an error reply; the
// other flag bits are zero. A message of KindData is byte for byte what
// version 1 sent.
//
// The format is hand-written rather than CBOR because it is on the hot path of
// every byte the tunnel carries: it decodes without reflection, in one pass,
// with one small allocation per address. Control messages inside payloads use
// CBOR.

// Kind says what a message is. It is on the wire (errorFlag).
type Kind uint8

const (
	// KindData is every message a worker sends.
	KindData Kind = iota
	// KindError is an error reply: a router could not deliver a message
	// and sent this back along its return route. It is never answered
	// with another error reply, never makes a node connect anywhere, and
	// reaches only workers that asked for error replies.
	KindError
)

func (k Kind) String() string {
	switch k {
	case KindData:
		return "data"
	case KindError:
		return "error"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// errorFlag is the top bit of the onward route's count byte: the message
// is an error reply.
const errorFlag = 0x80

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("routing: malformed message")

// EncodedLen returns the number of bytes AppendMessage adds for m.
func EncodedLen(m *Message) int {
	n := 2 + len(m.Payload)
	for _, a := range m.Onward {
		n += 2 + len(a.Value)
	}
	for _, a := range m.Return {
		n += 2 + len(a.Value)
	}
	return n
}

// AppendMessage appends the wire form of m to dst and returns the extended
// slice. It fails only if a route or address is over its limit.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	var err error
	start := len(dst)
	if dst, err = appendRoute(dst, m.Onward); err != nil {
		return dst, err
	}
	switch m.Kind {
	case KindData:
	case KindError:
		dst[start] |= errorFlag
	default:
		return dst, fmt.Errorf("routing: unknown message kind %d", m.Kind)
	}
	if dst, err = appendRoute(dst, m.Return); err != nil {
		return dst, err
	}
	return append(dst, m.Payload...), nil
}

// AppendRoute appends the wire form of a route (see AppendMessage).
func AppendRoute(dst []byte, r Route) ([]byte, error) { return appendRoute(dst, r) }

func appendRoute(dst []byte, r Route) ([]byte, error) {
	if len(r) > MaxRouteLen {
		return dst, fmt.Errorf("routing: route has %d hops, more than %d", len(r), MaxRouteLen)
	}
	dst = append(dst, byte(len(r)))
	for _, a := range r {
		if len(a.Value) > MaxAddressLen {
			return dst, fmt.Errorf("routing: address of %d bytes, more than %d", len(a.Value), MaxAddressLen)
		}
		dst = append(dst, byte(a.Type), byte(len(a.Value)))
		dst = append(dst, a.Value...)
	}
	return dst, nil
}

// DecodeMessage decodes b into m, reusing m's route slices. m.Payload aliases
// b: the caller that reuses b must not keep m.Payload.
func DecodeMessage(m *Message, b []byte) error { return decodeMessage(m, b, nil) }

func decodeMessage(m *Message, b []byte, in *Interner) error {
	var err error
	m.Kind = KindData
	if len(b) < 1 {
		return fmt.Errorf("%w: truncated route", ErrMalformed)
	}
	// The kind flag is read here; the hops see the bare count. b is the
	// caller's buffer: read the count without writing to it.
	n := b[0]
	if n&errorFlag != 0 {
		m.Kind = KindError
		n &^= errorFlag
	}
	if m.Onward, b, err = decodeHops(m.Onward[:0], n, b[1:], in); err != nil {
		return err
	}
	if m.Return, b, err = decodeRoute(m.Return[:0], b, in); err != nil {
		return err
	}
	m.Payload = b
	m.Peer = ""
	m.Via = ""
	return nil
}

// Interner hands out one string per address value it has seen, so that
// decoding a stream of messages between the same few addresses does not
// allocate a string per address. It holds at most MaxInterned values of at
// most MaxInternedLen bytes (longer ones are not kept), starting afresh when
// full: what a peer sending random addresses can make it hold is bounded.
// Not safe for concurrent use; the zero value is ready, and a nil
// *Interner allocates every time.
type Interner struct{ m map[string]string }

// Bounds of an Interner.
const (
	MaxInterned    = 64
	MaxInternedLen = 64
)

func (in *Interner) intern(b []byte) string {
	if in == nil || len(b) > MaxInternedLen {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if in.m == nil || len(in.m) >= MaxInterned {
		in.m = make(map[string]string)
	}
	s := string(b)
	in.m[s] = s
	return s
}

// DecodeMessageInterned is DecodeMessage taking address strings from in.
func DecodeMessageInterned(m *Message, b []byte, in *Interner) error { return decodeMessage(m, b, in) }

// DecodeRoute appends the route at the start of b to dst and returns the
// rest of b.
func DecodeRoute(dst Route, b []byte) (Route, []byte, error) { return decodeRoute(dst, b, nil) }

func decodeRoute(dst Route, b []byte, in *Interner) (Route, []byte, error) {
	if len(b) < 1 {
		return dst, b, fmt.Errorf("%w: truncated route", ErrMalformed)
	}
	return decodeHops(dst, b[0], b[1:], in)
}

// decodeHops decodes the count hops at the start of b.
func decodeHops(dst Route, count byte, b []byte, in *Interner) (Route, []byte, error) {
	n := int(count)
	if n > MaxRouteLen {
		return dst, b, fmt.Errorf("%w: route of %d hops, more than %d", ErrMalformed, n, MaxRouteLen)
	}
	for i := 0; i < n; i++ {
		if len(b) < 2 {
			return dst, b, fmt.Errorf("%w: truncated address", ErrMalformed)
		}
		t, l := AddrType(b[0]), int(b[1])
		if t != Local && t != TCP {
			return dst, b, fmt.Errorf("%w: unknown address type %d", ErrMalformed, t)
		}
		if len(b) < 2+l {
			return dst, b, fmt.Errorf("%w: truncated address", ErrMalformed)
		}
		dst = append(dst, Address{Type: t, Value: in.intern(b[2 : 2+l])})
		b = b[2+l:]
	}
	return dst, b, nil
}

// Unreachable is the body of an error reply: the hop a router could not
// deliver a message to. A router answers an address nobody holds and one
// the sender may not reach in the same way, so the two cannot be told
// apart by whoever receives it.
//
// Wire form (version 1 of the body):
//
//	code     u8  CodeUnreachable
//	address  u8 type, u8 length, value (the missing hop)
//
// Nothing may follow the address.
type Unreachable struct {
	Hop Address
}

// CodeUnreachable is the only error code: the hop is missing (or not
// reachable from the sender, which looks the same).
const CodeUnreachable = 1

// MaxErrorPayload bounds the body of an error reply.
const MaxErrorPayload = 1 + 2 + MaxAddressLen

// AppendUnreachable appends the body of an error reply naming hop.
func AppendUnreachable(dst []byte, hop Address) []byte {
	v := hop.Value
	if len(v) > MaxAddressLen {
		v = v[:MaxAddressLen]
	}
	dst = append(dst, CodeUnreachable, byte(hop.Type), byte(len(v)))
	return append(dst, v...)
}

// DecodeUnreachable decodes the body of an error reply.
func DecodeUnreachable(b []byte) (Unreachable, error) {
	if len(b) > MaxErrorPayload {
		return Unreachable{}, fmt.Errorf("%w: error reply of %d bytes, more than %d", ErrMalformed, len(b), MaxErrorPayload)
	}
	if len(b) < 3 {
		return Unreachable{}, fmt.Errorf("%w: truncated error reply", ErrMalformed)
	}
	if b[0] != CodeUnreachable {
		return Unreachable{}, fmt.Errorf("%w: unknown error code %d", ErrMalformed, b[0])
	}
	t, l := AddrType(b[1]), int(b[2])
	if t != Local && t != TCP {
		return Unreachable{}, fmt.Errorf("%w: unknown address type %d", ErrMalformed, t)
	}
	if len(b) != 3+l {
		return Unreachable{}, fmt.Errorf("%w: error reply address of %d bytes in %d", ErrMalformed, l, len(b)-3)
	}
	return Unreachable{Hop: Address{Type: t, Value: string(b[3:])}}, nil
}
