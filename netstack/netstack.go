// Package netstack terminates the TCP connections that host applications
// open through the TUN interface, in a userspace gVisor stack, and hands
// each one to a Handler as a net.Conn. It also answers DNS for mapped names
// and ICMP echo, and (outlet mode, server side) dials connections from
// virtual source addresses with DialTCP.
//
// This is the only package of the module that imports gVisor; the rest of
// the code sees a wireguard-go tun.Device going in and net.Conns coming out.
//
// Log attribute keys used: "src", "dst", "err".
package netstack

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const (
	// MaxPending bounds the SYNs awaiting a Handler decision, and so the
	// Handler goroutines that have not yet called Accept or Refuse. Beyond
	// it gVisor drops new SYNs (the app's kernel retransmits them).
	MaxPending = 1024

	// Buffer sizes of gVisor TCP endpoints. gVisor's TCP spans only the
	// local hop (app ↔ kernel ↔ TUN, microseconds of RTT), so small buffers
	// fill the pipe; WAN throughput comes from the portal's flow windows.
	tcpBufferMin     = 4 << 10
	tcpBufferDefault = 256 << 10
	tcpBufferMax     = 2 << 20

	// Keepalive on every gVisor endpoint, so that copy goroutines of
	// vanished peers end within about a minute, not hours.
	keepaliveIdle     = 30 * time.Second
	keepaliveInterval = 10 * time.Second
	keepaliveCount    = 3

	nicID = tcpip.NICID(1)
)

// Config configures a Stack. New does not modify it.
type Config struct {
	// Logger receives lifecycle events and errors; nil discards them.
	// Nothing is logged per packet.
	Logger *slog.Logger

	// MTU of the device; 0 asks the device.
	MTU int

	// Handler is called, on its own goroutine, for every TCP SYN that
	// reaches the stack. It must call exactly one of Request.Accept or
	// Request.Refuse; returning without deciding refuses. A nil Handler
	// refuses every connection (outlet mode: the stack only dials).
	Handler func(*Request)

	// UDPHandler is called for the first datagram of every UDP tuple
	// (application address and port, destination address and port) the
	// stack has no association for, on the stack's packet goroutine: it
	// must not block. It accepts with UDPRequest.Accept and serves the
	// association on goroutines of its own; not accepting drops the
	// datagram. A nil UDPHandler leaves UDP uncaptured: gVisor answers
	// ICMP port unreachable (outlet mode: the stack only dials).
	UDPHandler func(*UDPRequest)

	// UDPAdmit, if set, is asked for every captured UDP datagram (not
	// those to DNSAddr) as it arrives from the device, before the stack
	// spends anything on it, with its length; false drops it (counted in
	// UDPDropped). A rate limiter here sheds a flood cheaply. It runs on
	// the packet goroutine and must not block.
	UDPAdmit func(n int) bool

	// Echo, if set, decides ICMP echo requests (ping) to captured
	// addresses: it is called on the packet goroutine (it must not block)
	// and must call answer exactly once, later and from any goroutine:
	// answer(true) sends the reply, answer(false) drops it. A nil Echo
	// answers every request at once.
	Echo func(dst netip.Addr, answer func(ok bool))

	// DNSAddr is the address at which the stack answers DNS on UDP port 53
	// for the names given to SetNames. The zero Addr disables DNS.
	DNSAddr netip.Addr

	// AllowLoopback accepts packets with a loopback source or destination
	// (127.0.0.0/8, ::1) from the device, which gVisor otherwise drops as
	// martians. The outlet mode needs it to DialTCP a 127.0.0.0/8 target:
	// the replies come back from 127.x.y.z (the host must also set
	// net.ipv4.conf.<tun>.route_localnet=1).
	AllowLoopback bool
}

// Stats are counters of a Stack since New.
type Stats struct {
	FlowsOpen   int64  // TCP conns handed out and not yet closed
	FlowsTotal  uint64 // TCP conns handed out (Accept and DialTCP)
	SYNsRefused uint64 // SYNs answered with RST (Refuse, Handler nil or not deciding, Close)
	BytesIn     uint64 // bytes read from conns (sent by host applications)
	BytesOut    uint64 // bytes written to conns (sent to host applications)
	PacketsIn   uint64 // packets read from the device
	PacketsOut  uint64 // packets written to the device
	AcksCarried uint64 // pure ACKs not written: the connection's next data carried them (acks.go)
	DNSQueries  uint64 // DNS queries answered
	EchoReplies uint64 // ICMP echo replies sent
	UDPOpen     int64  // UDP associations open (Accept and DialUDP)
	UDPTotal    uint64 // UDP associations made
	UDPIn       uint64 // datagrams read from associations
	UDPOut      uint64 // datagrams written to associations
	UDPDropped  uint64 // first datagrams not accepted (no handler decision, over MaxUDPAssocs)
	EchoDropped uint64 // echo requests Echo declined
	WriteErrors uint64 // packets the device refused to take
	InDropped   uint64 // packets read from the device and not understood
}

// Stack is a gVisor network stack attached to a TUN device.
type Stack struct {
	log      *slog.Logger
	cfg      Config
	dev      wgtun.Device
	ep       *endpoint
	s        *stack.Stack
	names    atomic.Pointer[map[string]netip.Addr]
	dns      io.Closer
	wg       sync.WaitGroup // device and DNS goroutines
	handlers sync.WaitGroup // Handler goroutines

	mu       sync.Mutex
	closed   bool
	conns    map[*Conn]struct{}
	udpConns map[*UDPConn]struct{}

	closeOnce sync.Once
	closeErr  error

	stats struct {
		flowsOpen                         atomic.Int64
		flowsTotal, synsRefused           atomic.Uint64
		bytesIn, bytesOut                 atomic.Uint64
		packetsIn, packetsOut             atomic.Uint64
		acksCarried                       atomic.Uint64 // held ACKs replaced by data (acks.go)
		dnsQueries, echoReplies, writeErr atomic.Uint64
		inDropped                         atomic.Uint64
		udpOpen                           atomic.Int64
		udpTotal, udpIn, udpOut           atomic.Uint64
		udpDropped, echoDropped           atomic.Uint64
	}
}

// New builds a stack on dev and starts reading from it. The Stack takes
// ownership of dev: Close closes it. If New fails, dev is left open and
// still belongs to the caller.
//
// The stack captures every destination: TCP to any address routed into the
// interface is handed to cfg.Handler.
func New(dev wgtun.Device, cfg Config) (*Stack, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mtu := cfg.MTU
	if mtu <= 0 {
		m, err := dev.MTU()
		if err != nil {
			return nil, fmt.Errorf("netstack: reading device mtu: %w", err)
		}
		mtu = m
	}
	if mtu < 1280 || mtu > 65535 {
		return nil, fmt.Errorf("netstack: mtu %d out of range [1280, 65535]", mtu)
	}
	if cfg.DNSAddr.IsValid() && cfg.DNSAddr.Zone() != "" {
		return nil, fmt.Errorf("netstack: dns address %s has a zone", cfg.DNSAddr)
	}

	st := &Stack{
		log:      log,
		cfg:      cfg,
		dev:      dev,
		conns:    make(map[*Conn]struct{}),
		udpConns: make(map[*UDPConn]struct{}),
	}
	st.names.Store(&map[string]netip.Addr{})

	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: cfg.AllowLoopback}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: cfg.AllowLoopback}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	st.s = s
	if err := setTCPOptions(s); err != nil {
		s.Close()
		return nil, err
	}

	// The forwarder must be the TCP handler before the NIC exists, or SYNs
	// arriving in between meet no handler and are reset.
	fwd := tcp.NewForwarder(s, 0, MaxPending, st.forward)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	if cfg.UDPHandler != nil {
		ufwd := udp.NewForwarder(s, st.udpForward)
		s.SetTransportProtocolHandler(udp.ProtocolNumber, ufwd.HandlePacket)
	}

	ep, err := newEndpoint(st, dev, uint32(mtu))
	if err != nil {
		s.Close()
		return nil, err
	}
	st.ep = ep
	if terr := s.CreateNIC(nicID, ep); terr != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: creating nic: %s", terr)
	}
	// Promiscuous: accept packets for any destination. Spoofing: send from
	// any source (replies from the captured destination, DialTCP sources).
	if terr := s.SetPromiscuousMode(nicID, true); terr != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: promiscuous mode: %s", terr)
	}
	if terr := s.SetSpoofing(nicID, true); terr != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: spoofing: %s", terr)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})

	if cfg.DNSAddr.IsValid() {
		if err := st.startDNS(cfg.DNSAddr.Unmap()); err != nil {
			s.Close()
			return nil, err
		}
	}
	ep.start()
	return st, nil
}

func setTCPOptions(s *stack.Stack) error {
	sack := tcpip.TCPSACKEnabled(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufferMin, Default: tcpBufferDefault, Max: tcpBufferMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufferMin, Default: tcpBufferDefault, Max: tcpBufferMax}
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd, &mod} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: setting tcp option %T: %s", opt, err)
		}
	}
	return nil
}

// setEndpointOptions enables keepalive with a short idle time.
func setEndpointOptions(ep tcpip.Endpoint) {
	ep.SocketOptions().SetKeepAlive(true)
	idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
	ep.SetSockOpt(&idle)
	intvl := tcpip.KeepaliveIntervalOption(keepaliveInterval)
	ep.SetSockOpt(&intvl)
	ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
}

// Stats returns a snapshot of the stack's counters.
func (st *Stack) Stats() Stats {
	c := &st.stats
	return Stats{
		FlowsOpen:   c.flowsOpen.Load(),
		FlowsTotal:  c.flowsTotal.Load(),
		SYNsRefused: c.synsRefused.Load(),
		BytesIn:     c.bytesIn.Load(),
		BytesOut:    c.bytesOut.Load(),
		PacketsIn:   c.packetsIn.Load(),
		PacketsOut:  c.packetsOut.Load(),
		AcksCarried: c.acksCarried.Load(),
		DNSQueries:  c.dnsQueries.Load(),
		EchoReplies: c.echoReplies.Load(),
		UDPOpen:     c.udpOpen.Load(),
		UDPTotal:    c.udpTotal.Load(),
		UDPIn:       c.udpIn.Load(),
		UDPOut:      c.udpOut.Load(),
		UDPDropped:  c.udpDropped.Load(),
		EchoDropped: c.echoDropped.Load(),
		WriteErrors: c.writeErr.Load(),
		InDropped:   c.inDropped.Load(),
	}
}

// Close shuts the stack down: it refuses new SYNs, closes every conn it
// handed out, closes the device, and returns once all of its goroutines and
// all running Handlers have returned (a Handler must return once its conns
// fail). Close is idempotent; later calls return the first result.
func (st *Stack) Close() error {
	st.closeOnce.Do(func() {
		st.mu.Lock()
		st.closed = true
		conns := st.conns
		st.conns = nil
		udpConns := st.udpConns
		st.udpConns = nil
		st.mu.Unlock()

		for c := range conns {
			c.Close()
		}
		for c := range udpConns {
			c.Close()
		}
		if st.dns != nil {
			st.dns.Close()
		}
		// Closing gVisor aborts handshakes in progress, so that Handlers
		// blocked in Accept return; Accept and DialTCP fail from here on.
		st.s.Close()
		st.handlers.Wait()
		// The FINs and resets of the connections just ended are queued
		// for the device: let them out before it closes.
		st.ep.flush(500 * time.Millisecond)
		// Closing the device unblocks the reader and ends the device's
		// event goroutine, which the endpoint drains.
		err := st.dev.Close()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			st.closeErr = fmt.Errorf("netstack: closing device: %w", err)
		}
		st.ep.close()
		st.wg.Wait()
		st.s.Wait()
	})
	return st.closeErr
}

// track registers a conn handed out; it fails after Close.
func (st *Stack) track(c *Conn) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	st.conns[c] = struct{}{}
	st.stats.flowsOpen.Add(1)
	st.stats.flowsTotal.Add(1)
	return true
}

func (st *Stack) untrack(c *Conn) {
	st.mu.Lock()
	if st.conns != nil {
		delete(st.conns, c)
	}
	st.mu.Unlock()
	st.stats.flowsOpen.Add(-1)
}
