package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// errDecided is returned by Accept when Accept or Refuse was already called.
var errDecided = errors.New("netstack: request already accepted or refused")

// Request is a TCP connection attempt (a SYN) captured by the stack. The
// Handler must call exactly one of Accept or Refuse; the handshake with the
// host application stays pending until then. The intended order is
// dial-then-accept: open the remote flow first, then Accept, or Refuse if
// the remote side cannot be reached, so the application sees a true
// "connection refused".
type Request struct {
	// Src is the host application's address, Dst the address it dialed.
	Src, Dst netip.AddrPort

	st *Stack
	mu sync.Mutex
	fr *tcp.ForwarderRequest // nil once decided
}

// Accept completes the handshake with the host application and returns
// the connection, a *Conn (with CloseRead and CloseWrite). The caller owns
// the conn and must Close it; Stack.Close closes it too.
func (r *Request) Accept() (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fr := r.fr
	if fr == nil {
		return nil, errDecided
	}
	r.fr = nil

	var wq waiter.Queue
	ep, terr := fr.CreateEndpoint(&wq)
	if terr != nil {
		// The handshake could not complete (app gone, or stack closed).
		fr.Complete(true)
		r.st.stats.synsRefused.Add(1)
		return nil, fmt.Errorf("netstack: accepting %s -> %s: %s", r.Src, r.Dst, terr)
	}
	fr.Complete(false)
	setEndpointOptions(ep)
	c := newConn(r.st, &wq, ep)
	if !r.st.track(c) {
		c.TCPConn.Close()
		return nil, fmt.Errorf("netstack: accepting %s -> %s: %w", r.Src, r.Dst, net.ErrClosed)
	}
	return c, nil
}

// Refuse answers the SYN with a reset: the application's connect fails at
// once with "connection refused". Refuse after a decision does nothing.
func (r *Request) Refuse() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fr == nil {
		return
	}
	r.fr.Complete(true)
	r.fr = nil
	r.st.stats.synsRefused.Add(1)
}

// forward runs on the goroutine gVisor starts for each new SYN (at most
// MaxPending undecided at once).
func (st *Stack) forward(fr *tcp.ForwarderRequest) {
	st.mu.Lock()
	if st.closed || st.cfg.Handler == nil {
		st.mu.Unlock()
		fr.Complete(true)
		st.stats.synsRefused.Add(1)
		return
	}
	st.handlers.Add(1)
	st.mu.Unlock()
	defer st.handlers.Done()

	id := fr.ID()
	r := &Request{
		Src: netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		Dst: netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
		st:  st,
		fr:  fr,
	}
	defer r.Refuse() // a Handler that returns without deciding refuses
	st.cfg.Handler(r)
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := protoOf(a)
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}, proto
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}
