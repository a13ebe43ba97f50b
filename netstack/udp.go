package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// UDP: the stack captures datagrams to any address, one association per
// application 5-tuple. The first datagram of a tuple calls
// Config.UDPHandler; an accepted association is a connected *UDPConn that
// receives the later datagrams of the tuple (the first one included) and
// sends replies that the application sees come from the address it sent
// to.

const (
	// MaxUDPAssocs bounds the UDP associations open at once. Beyond it the
	// first datagrams of new tuples are dropped (and counted).
	MaxUDPAssocs = 16 << 10

	// udpReceiveBuffer bounds the datagrams queued in gVisor for one
	// association before its reader takes them: a full buffer drops
	// (counted by gVisor as receive-buffer errors), it never blocks the
	// stack. 256 KiB holds about 170 datagrams of 1500 bytes, or 4 of
	// 64 KiB.
	udpReceiveBuffer = 256 << 10
)

// UDPRequest is the first datagram of a UDP association the stack has not
// seen. The UDPHandler decides with Accept; not accepting drops the
// datagram.
type UDPRequest struct {
	// Src is the application's address, Dst the address it sent to.
	Src, Dst netip.AddrPort
	// Len is the payload length of the first datagram.
	Len int

	st *Stack
	fr *udp.ForwarderRequest
}

// Accept creates the association: a connected conn whose Read returns one
// datagram of the tuple (the first one first) and whose Write sends one
// datagram to Src from Dst. The caller owns it and must Close it (an idle
// timeout is the caller's); Stack.Close closes it too.
func (r *UDPRequest) Accept() (*UDPConn, error) {
	if r.fr == nil {
		return nil, errDecided
	}
	fr := r.fr
	r.fr = nil
	if r.st.stats.udpOpen.Load() >= MaxUDPAssocs {
		r.st.stats.udpDropped.Add(1)
		return nil, fmt.Errorf("netstack: udp %s -> %s: %d associations open already", r.Src, r.Dst, MaxUDPAssocs)
	}
	var wq waiter.Queue
	ep, terr := fr.CreateEndpoint(&wq)
	if terr != nil {
		r.st.stats.udpDropped.Add(1)
		return nil, fmt.Errorf("netstack: udp %s -> %s: %s", r.Src, r.Dst, terr)
	}
	c := newUDPConn(r.st, &wq, ep)
	if !r.st.trackUDP(c) {
		c.UDPConn.Close()
		return nil, fmt.Errorf("netstack: udp %s -> %s: %w", r.Src, r.Dst, net.ErrClosed)
	}
	return c, nil
}

// UDPConn is a UDP association of the stack: the application's side of a
// captured tuple (Accept) or a socket from a virtual source (DialUDP).
type UDPConn struct {
	*gonet.UDPConn
	st     *Stack
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	closed chan struct{}
	once   sync.Once
}

func newUDPConn(st *Stack, wq *waiter.Queue, ep tcpip.Endpoint) *UDPConn {
	ep.SocketOptions().SetReceiveBufferSize(udpReceiveBuffer, true)
	return &UDPConn{UDPConn: gonet.NewUDPConn(wq, ep), st: st, ep: ep, wq: wq, closed: make(chan struct{})}
}

// ErrWouldBlock is returned by ReadSized without wait when no datagram is
// queued.
var ErrWouldBlock = errors.New("netstack: no datagram queued")

type countWriter int

func (w *countWriter) Write(b []byte) (int, error) { *w += countWriter(len(b)); return len(b), nil }

// ReadSized reads one datagram into the buffer get returns for its length
// n (get must return at least n bytes), so that a reader holds no buffer
// while it waits. With wait false it returns ErrWouldBlock at once when
// nothing is queued. It returns the datagram's length, net.ErrClosed after
// Close. One reader at a time.
func (c *UDPConn) ReadSized(get func(n int) []byte, wait bool) (int, error) {
	var entry waiter.Entry
	var notify <-chan struct{}
	for {
		var size countWriter
		_, terr := c.ep.Read(&size, tcpip.ReadOptions{Peek: true})
		if terr == nil {
			b := get(int(size))
			w := tcpip.SliceWriter(b[:size])
			res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
			if notify != nil {
				c.wq.EventUnregister(&entry)
			}
			if terr != nil {
				return 0, c.readErr(terr)
			}
			c.st.stats.udpIn.Add(1)
			return res.Count, nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			if notify != nil {
				c.wq.EventUnregister(&entry)
			}
			return 0, c.readErr(terr)
		}
		if !wait {
			return 0, ErrWouldBlock
		}
		if notify == nil {
			var ch chan struct{}
			entry, ch = waiter.NewChannelEntry(waiter.ReadableEvents)
			notify = ch
			c.wq.EventRegister(&entry)
			continue // look again now that a wake-up cannot be missed
		}
		select {
		case <-notify:
		case <-c.closed:
			c.wq.EventUnregister(&entry)
			return 0, net.ErrClosed
		}
	}
}

func (c *UDPConn) readErr(terr tcpip.Error) error {
	select {
	case <-c.closed:
		return net.ErrClosed
	default:
	}
	if _, ok := terr.(*tcpip.ErrClosedForReceive); ok {
		return net.ErrClosed
	}
	return fmt.Errorf("netstack: udp read: %s", terr)
}

// Read reads one datagram; a datagram longer than b is truncated.
func (c *UDPConn) Read(b []byte) (int, error) {
	n, err := c.UDPConn.Read(b)
	if err == nil {
		c.st.stats.udpIn.Add(1)
	}
	return n, err
}

// Write sends b as one datagram.
func (c *UDPConn) Write(b []byte) (int, error) {
	n, err := c.UDPConn.Write(b)
	if err == nil {
		c.st.stats.udpOut.Add(1)
	}
	return n, err
}

// Close ends the association. It is idempotent.
func (c *UDPConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.UDPConn.Close()
		c.st.untrackUDP(c)
	})
	return err
}

// udpForward runs on the stack's packet goroutine for the first datagram
// of each tuple without an endpoint: it must not block.
func (st *Stack) udpForward(fr *udp.ForwarderRequest) {
	st.mu.Lock()
	closed := st.closed
	st.mu.Unlock()
	id := fr.ID()
	if closed {
		st.stats.udpDropped.Add(1)
		return
	}
	r := &UDPRequest{
		Src: netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		Dst: netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
		st:  st,
		fr:  fr,
	}
	st.cfg.UDPHandler(r)
	if r.fr != nil {
		st.stats.udpDropped.Add(1)
	}
}

// DialUDP opens a UDP socket from the virtual source src to dst (outlet
// mode, server side), with the same routing needs as DialTCP. Port 0 of
// src picks an ephemeral port. The returned conn is owned by the caller;
// Stack.Close closes it too.
func (st *Stack) DialUDP(src, dst netip.AddrPort) (*UDPConn, error) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !src.Addr().IsValid() || !dst.Addr().IsValid() || src.Addr().Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("netstack: udp dial %s -> %s: invalid or mixed address families", src, dst)
	}
	la, proto := fullAddr(src)
	ra, _ := fullAddr(dst)
	ra.NIC = 0
	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: udp dial %s -> %s: %s", src, dst, terr)
	}
	if terr := ep.Bind(la); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: udp dial %s -> %s: bind: %s", src, dst, terr)
	}
	if terr := ep.Connect(ra); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: udp dial %s -> %s: %s", src, dst, terr)
	}
	c := newUDPConn(st, &wq, ep)
	if !st.trackUDP(c) {
		c.UDPConn.Close()
		return nil, fmt.Errorf("netstack: udp dial %s -> %s: %w", src, dst, net.ErrClosed)
	}
	return c, nil
}

func (st *Stack) trackUDP(c *UDPConn) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	st.udpConns[c] = struct{}{}
	st.stats.udpOpen.Add(1)
	st.stats.udpTotal.Add(1)
	return true
}

func (st *Stack) untrackUDP(c *UDPConn) {
	st.mu.Lock()
	if st.udpConns != nil {
		delete(st.udpConns, c)
	}
	st.mu.Unlock()
	st.stats.udpOpen.Add(-1)
}
