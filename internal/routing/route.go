// Package routing defines addresses, routes and the routed message that every
// hop of the tunnel carries, together with their text and wire forms.
//
// A message carries an onward route (where it is going) and a return route
// (how to answer it). A hop that forwards a message pops itself from the
// onward route; a hop that must see the replies (a transport connection, a
// secure channel) pushes its own address onto the return route.
package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// AddrType says how an address is reached. The values are on the wire.
type AddrType uint8

const (
	// Local addresses name a worker on the node that holds the message.
	Local AddrType = 0
	// TCP addresses are "host:port" of a node's TCP listener.
	TCP AddrType = 1
)

func (t AddrType) String() string {
	switch t {
	case Local:
		return "local"
	case TCP:
		return "tcp"
	}
	return "type" + strconv.Itoa(int(t))
}

// Limits checked before anything is allocated.
const (
	// MaxAddressLen is the longest address value, in bytes.
	MaxAddressLen = 255
	// MaxRouteLen is the largest number of hops in one route.
	MaxRouteLen = 32
)

// Address is one hop of a route.
type Address struct {
	Type  AddrType
	Value string
}

// LocalAddr returns the local address of a worker.
func LocalAddr(name string) Address { return Address{Type: Local, Value: name} }

// TCPAddr returns the address of a node's TCP listener ("host:port").
func TCPAddr(hostport string) Address { return Address{Type: TCP, Value: hostport} }

// String prints the address in route syntax: /service/NAME,
// /ip4/A/tcp/P, /ip6/A/tcp/P or /dnsaddr/HOST/tcp/P.
func (a Address) String() string {
	switch a.Type {
	case Local:
		return "/service/" + a.Value
	case TCP:
		host, port, err := splitHostPort(a.Value)
		if err != nil {
			return "/tcp/" + a.Value
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Is4() || ip.Is4In6() {
				return "/ip4/" + ip.Unmap().String() + "/tcp/" + port
			}
			return "/ip6/" + ip.String() + "/tcp/" + port
		}
		return "/dnsaddr/" + host + "/tcp/" + port
	}
	return fmt.Sprintf("/%s/%s", a.Type, a.Value)
}

// Route is an ordered list of hops.
type Route []Address

// String prints the route; the empty route prints as "/".
func (r Route) String() string {
	if len(r) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, a := range r {
		b.WriteString(a.String())
	}
	return b.String()
}

// Clone returns a copy of r that shares nothing with it.
func (r Route) Clone() Route {
	if r == nil {
		return nil
	}
	return append(Route(nil), r...)
}

// Join returns a new route made of r followed by rest.
func (r Route) Join(rest Route) Route {
	out := make(Route, 0, len(r)+len(rest))
	return append(append(out, r...), rest...)
}

// Resolver turns the name in /node/NAME into the route of that node
// (usually the TCP address of its listener).
type Resolver func(name string) (Route, error)

// ErrNoResolver is returned when a route names a node but no resolver was given.
var ErrNoResolver = errors.New("routing: /node/NAME needs a node resolver here")

// ParseRoute parses route syntax. Segments:
//
//	/service/NAME  /worker/NAME        a worker on the node holding the message
//	/ip4/A/tcp/P   /ip6/A/tcp/P        a node's TCP listener
//	/dnsaddr/HOST/tcp/P                the same, by host name
//	/tcp/HOST:P                        the same, compact
//	/node/NAME                         resolved with resolve (may be nil)
func ParseRoute(s string, resolve Resolver) (Route, error) {
	orig := s
	if !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("routing: route %q must start with /", orig)
	}
	parts := strings.Split(s[1:], "/")
	if len(parts) == 1 && parts[0] == "" {
		return nil, fmt.Errorf("routing: empty route %q", orig)
	}
	var r Route
	next := func(i int, what string) (string, error) {
		if i >= len(parts) || parts[i] == "" {
			return "", fmt.Errorf("routing: route %q: %s is missing after /%s", orig, what, parts[i-1])
		}
		return parts[i], nil
	}
	for i := 0; i < len(parts); {
		seg := parts[i]
		switch seg {
		case "service", "worker":
			v, err := next(i+1, "a name")
			if err != nil {
				return nil, err
			}
			if len(v) > MaxAddressLen {
				return nil, fmt.Errorf("routing: route %q: address longer than %d bytes", orig, MaxAddressLen)
			}
			r = append(r, LocalAddr(v))
			i += 2
		case "ip4", "ip6", "dnsaddr":
			host, err := next(i+1, "a host")
			if err != nil {
				return nil, err
			}
			if i+2 >= len(parts) || parts[i+2] != "tcp" {
				return nil, fmt.Errorf("routing: route %q: /%s/%s must be followed by /tcp/PORT", orig, seg, host)
			}
			port, err := next(i+3, "a port")
			if err != nil {
				return nil, err
			}
			if err := checkPort(port); err != nil {
				return nil, fmt.Errorf("routing: route %q: %w", orig, err)
			}
			switch seg {
			case "ip4":
				ip, err := netip.ParseAddr(host)
				if err != nil || !ip.Is4() {
					return nil, fmt.Errorf("routing: route %q: %q is not an IPv4 address", orig, host)
				}
			case "ip6":
				ip, err := netip.ParseAddr(host)
				if err != nil || !ip.Is6() {
					return nil, fmt.Errorf("routing: route %q: %q is not an IPv6 address", orig, host)
				}
			case "dnsaddr":
				if !validHost(host) {
					return nil, fmt.Errorf("routing: route %q: %q is not a host name", orig, host)
				}
			}
			r = append(r, TCPAddr(joinHostPort(host, port)))
			i += 4
		case "tcp":
			hp, err := next(i+1, "HOST:PORT")
			if err != nil {
				return nil, err
			}
			host, port, err := splitHostPort(hp)
			if err != nil || checkPort(port) != nil || host == "" {
				return nil, fmt.Errorf("routing: route %q: %q is not HOST:PORT", orig, hp)
			}
			r = append(r, TCPAddr(joinHostPort(host, port)))
			i += 2
		case "node":
			name, err := next(i+1, "a node name")
			if err != nil {
				return nil, err
			}
			if resolve == nil {
				return nil, ErrNoResolver
			}
			nr, err := resolve(name)
			if err != nil {
				return nil, err
			}
			r = append(r, nr...)
			i += 2
		case "":
			return nil, fmt.Errorf("routing: route %q has an empty segment", orig)
		default:
			return nil, fmt.Errorf("routing: route %q: unknown segment /%s (want /service, /node, /ip4, /ip6, /dnsaddr or /tcp)", orig, seg)
		}
		if len(r) > MaxRouteLen {
			return nil, fmt.Errorf("routing: route %q has more than %d hops", orig, MaxRouteLen)
		}
	}
	return r, nil
}

func checkPort(p string) error {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("%q is not a TCP port", p)
	}
	return nil
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

func splitHostPort(hp string) (host, port string, err error) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return "", "", errors.New("missing port")
	}
	host, port = hp[:i], hp[i+1:]
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host, port, nil
}

func joinHostPort(host, port string) string {
	if strings.IndexByte(host, ':') >= 0 {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}
