// Package socks is a SOCKS5 server (RFC 1928) for CONNECT, without
// authentication: the wire parser and the server that runs it. It knows
// nothing about where connections go; the caller's Dial decides.
package socks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Version is the protocol version byte, first in every message.
const Version = 5

// Method is an authentication method, as offered in the greeting.
type Method byte

const (
	MethodNoAuth       Method = 0x00
	MethodNoAcceptable Method = 0xff
)

// Command is the request's CMD byte. Only Connect is supported.
type Command byte

const (
	CmdConnect   Command = 0x01
	CmdBind      Command = 0x02
	CmdAssociate Command = 0x03
)

// AddrType is the ATYP byte of requests and replies.
type AddrType byte

const (
	AddrIPv4   AddrType = 0x01 // 4 bytes
	AddrDomain AddrType = 0x03 // 1 length byte, then 1..255 bytes
	AddrIPv6   AddrType = 0x04 // 16 bytes
)

// Reply is the REP byte of a reply.
type Reply byte

const (
	Succeeded               Reply = 0x00
	GeneralFailure          Reply = 0x01
	NotAllowed              Reply = 0x02 // connection not allowed by ruleset
	NetworkUnreachable      Reply = 0x03
	HostUnreachable         Reply = 0x04
	ConnectionRefused       Reply = 0x05
	TTLExpired              Reply = 0x06
	CommandNotSupported     Reply = 0x07
	AddressTypeNotSupported Reply = 0x08
)

func (r Reply) String() string {
	switch r {
	case Succeeded:
		return "succeeded"
	case GeneralFailure:
		return "general failure"
	case NotAllowed:
		return "not allowed"
	case NetworkUnreachable:
		return "network unreachable"
	case HostUnreachable:
		return "host unreachable"
	case ConnectionRefused:
		return "connection refused"
	case TTLExpired:
		return "ttl expired"
	case CommandNotSupported:
		return "command not supported"
	case AddressTypeNotSupported:
		return "address type not supported"
	}
	return "reply " + strconv.Itoa(int(r))
}

const (
	// MaxGreeting is the longest greeting: VER NMETHODS METHODS[255].
	MaxGreeting = 2 + 255
	// MaxRequest is the longest request: VER CMD RSV ATYP LEN NAME[255] PORT.
	MaxRequest = 4 + 1 + 255 + 2
)

// ErrShort means the bytes end before the message does: read more.
var ErrShort = errors.New("socks: message incomplete")

// Addr is a request's destination: an IP address or a domain name, and a
// port. Exactly one of IP and Name is set.
type Addr struct {
	IP   netip.Addr
	Name string
	Port uint16
}

func (a Addr) String() string {
	if a.Name != "" {
		return a.Name + ":" + strconv.Itoa(int(a.Port))
	}
	return netip.AddrPortFrom(a.IP, a.Port).String()
}

// Request is a client's request.
type Request struct {
	Cmd Command
	Dst Addr
}

// ParseGreeting parses a greeting at the start of b and returns the methods
// offered (a sub-slice of b) and the bytes used. ErrShort asks for more.
func ParseGreeting(b []byte) (methods []byte, n int, err error) {
	if len(b) < 2 {
		return nil, 0, ErrShort
	}
	if b[0] != Version {
		return nil, 0, fmt.Errorf("socks: version %d, want %d", b[0], Version)
	}
	m := int(b[1])
	if m == 0 {
		return nil, 0, errors.New("socks: greeting offers no method")
	}
	if len(b) < 2+m {
		return nil, 0, ErrShort
	}
	return b[2 : 2+m], 2 + m, nil
}

// AppendGreeting appends a greeting offering methods (1 to 255 of them).
func AppendGreeting(dst []byte, methods ...Method) []byte {
	dst = append(dst, Version, byte(len(methods)))
	for _, m := range methods {
		dst = append(dst, byte(m))
	}
	return dst
}

// requestLen returns the length of the request at the start of b, or
// ErrShort, checking the fixed fields on the way.
func requestLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, ErrShort
	}
	if b[0] != Version {
		return 0, fmt.Errorf("socks: version %d, want %d", b[0], Version)
	}
	if b[2] != 0 {
		return 0, errors.New("socks: reserved byte is not zero")
	}
	switch AddrType(b[3]) {
	case AddrIPv4:
		return 4 + 4 + 2, nil
	case AddrIPv6:
		return 4 + 16 + 2, nil
	case AddrDomain:
		if len(b) < 5 {
			return 0, ErrShort
		}
		if b[4] == 0 {
			return 0, errors.New("socks: empty domain name")
		}
		return 4 + 1 + int(b[4]) + 2, nil
	}
	return 0, &UnsupportedAddrError{AddrType(b[3])}
}

// UnsupportedAddrError is returned for an unknown ATYP; the server answers
// AddressTypeNotSupported.
type UnsupportedAddrError struct{ Type AddrType }

func (e *UnsupportedAddrError) Error() string {
	return fmt.Sprintf("socks: address type %d not supported", e.Type)
}

// ParseRequest parses a request at the start of b and returns it with the
// bytes used. ErrShort asks for more. The request's Name is a copy.
func ParseRequest(b []byte) (Request, int, error) {
	n, err := requestLen(b)
	if err != nil {
		return Request{}, 0, err
	}
	if len(b) < n {
		return Request{}, 0, ErrShort
	}
	r := Request{Cmd: Command(b[1])}
	switch AddrType(b[3]) {
	case AddrIPv4:
		r.Dst.IP = netip.AddrFrom4([4]byte(b[4:8]))
	case AddrIPv6:
		r.Dst.IP = netip.AddrFrom16([16]byte(b[4:20]))
	case AddrDomain:
		r.Dst.Name = string(b[5 : n-2])
	}
	r.Dst.Port = binary.BigEndian.Uint16(b[n-2:])
	return r, n, nil
}

// appendAddr appends ATYP, the address and the port. A Name longer than
// 255 bytes is truncated (ParseRequest never makes one).
func appendAddr(dst []byte, a Addr) []byte {
	switch {
	case a.Name != "":
		name := a.Name
		if len(name) > 255 {
			name = name[:255]
		}
		dst = append(dst, byte(AddrDomain), byte(len(name)))
		dst = append(dst, name...)
	case a.IP.Is4():
		dst = append(dst, byte(AddrIPv4))
		dst = append(dst, a.IP.AsSlice()...)
	case a.IP.Is6():
		dst = append(dst, byte(AddrIPv6))
		dst = append(dst, a.IP.AsSlice()...)
	default:
		dst = append(dst, byte(AddrIPv4), 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(dst, a.Port)
}

// AppendRequest appends r in wire form.
func AppendRequest(dst []byte, r Request) []byte {
	return appendAddr(append(dst, Version, byte(r.Cmd), 0), r.Dst)
}

// AppendReply appends a reply with the bound address bnd (the zero Addr
// gives 0.0.0.0:0).
func AppendReply(dst []byte, rep Reply, bnd Addr) []byte {
	return appendAddr(append(dst, Version, byte(rep), 0), bnd)
}

// ParseReply parses a reply (client side, for tests and tools).
func ParseReply(b []byte) (Reply, Addr, int, error) {
	r, n, err := ParseRequest(b)
	return Reply(r.Cmd), r.Dst, n, err
}

// MaxUDPHeader is the longest header of a UDP ASSOCIATE datagram:
// RSV(2) FRAG ATYP LEN NAME[255] PORT.
const MaxUDPHeader = 2 + 1 + 1 + 1 + 255 + 2

// ParseUDP parses the header of a datagram a client sends to the relay of
// a UDP ASSOCIATE (RFC 1928 §7): RSV(2)=0, FRAG, ATYP, DST.ADDR, DST.PORT,
// then the data, which is returned as a sub-slice of b. Fragments
// (FRAG ≠ 0) are refused: relays may drop them, and we do.
func ParseUDP(b []byte) (Addr, []byte, error) {
	if len(b) < 4 {
		return Addr{}, nil, errors.New("socks: udp datagram shorter than its header")
	}
	if b[0] != 0 || b[1] != 0 {
		return Addr{}, nil, errors.New("socks: udp reserved bytes are not zero")
	}
	if b[2] != 0 {
		return Addr{}, nil, errors.New("socks: udp fragments are not supported")
	}
	// The rest has the layout of a request after VER CMD RSV.
	hdr := append([]byte{Version, byte(CmdAssociate), 0}, b[3:min(len(b), MaxUDPHeader)]...)
	r, n, err := ParseRequest(hdr)
	if err != nil {
		if err == ErrShort {
			return Addr{}, nil, errors.New("socks: udp datagram shorter than its header")
		}
		return Addr{}, nil, err
	}
	return r.Dst, b[n:], nil
}

// AppendUDP appends the header of a datagram from src (relay to client)
// and the data.
func AppendUDP(dst []byte, src Addr, data []byte) []byte {
	dst = appendAddr(append(dst, 0, 0, 0), src)
	return append(dst, data...)
}
