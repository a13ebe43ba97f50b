package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DialTCP opens a TCP connection to dst from the virtual source src
// (outlet mode, server side). src is an address inside the prefix routed
// into this stack's TUN, chosen per client, so that the server application
// sees a distinct source address per client; port 0 picks an ephemeral
// port. The SYN leaves through the TUN into the host kernel, which must
// route the replies to src back into the TUN: the TUN needs a route for
// the virtual prefix (tun.Configure with that prefix as an address or a
// route), and dst must be an address the kernel accepts from a non-loopback
// interface (a host address, not 127.0.0.0/8 unless route_localnet is set
// on the TUN).
//
// The returned conn is a *Conn, owned by the caller; Stack.Close closes it
// too. A refused connection returns an error wrapping
// syscall.ECONNREFUSED.
func (st *Stack) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !src.Addr().IsValid() || !dst.Addr().IsValid() || src.Addr().Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("netstack: dial %s -> %s: invalid or mixed address families", src, dst)
	}
	la, proto := fullAddr(src)
	ra, _ := fullAddr(dst)
	ra.NIC = 0

	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, dialErr(src, dst, terr)
	}
	setEndpointOptions(ep)
	we, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)

	if terr := ep.Bind(la); terr != nil {
		ep.Close()
		return nil, dialErr(src, dst, terr)
	}
	terr = ep.Connect(ra)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, &net.OpError{Op: "dial", Net: "tcp", Source: net.TCPAddrFromAddrPort(src), Addr: net.TCPAddrFromAddrPort(dst), Err: ctx.Err()}
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, dialErr(src, dst, terr)
	}
	c := newConn(st, &wq, ep)
	if !st.track(c) {
		c.TCPConn.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Source: net.TCPAddrFromAddrPort(src), Addr: net.TCPAddrFromAddrPort(dst), Err: net.ErrClosed}
	}
	return c, nil
}

func dialErr(src, dst netip.AddrPort, terr tcpip.Error) error {
	var err error
	switch terr.(type) {
	case *tcpip.ErrConnectionRefused:
		err = syscall.ECONNREFUSED
	case *tcpip.ErrTimeout:
		err = syscall.ETIMEDOUT
	case *tcpip.ErrHostUnreachable, *tcpip.ErrNetworkUnreachable, *tcpip.ErrHostDown:
		err = syscall.EHOSTUNREACH
	default:
		err = fmt.Errorf("%s", terr)
	}
	return &net.OpError{Op: "dial", Net: "tcp", Source: net.TCPAddrFromAddrPort(src), Addr: net.TCPAddrFromAddrPort(dst), Err: err}
}
