package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/datagram"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/socks"
	"github.com/ockam-go/ockam/netstack"
)

// UDP through the node: the interface's UDP associations (client side),
// the UDP services of outlets created with --udp (server side), and pings
// answered only when the path to the outlet answers.

const (
	// maxEchoProbes bounds the pings being checked against their path at
	// once; beyond it, pings go unanswered (as over a lossy path).
	maxEchoProbes = 64
	// echoTimeout is how long a ping waits for the far node.
	echoTimeout = 2 * time.Second
)

// udpOutlet returns the UDP service of the outlet name, or nil.
func (d *Daemon) udpOutlet(name string) *datagram.Outlet {
	t := d.tun
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.udpOut[name]
}

// createUDPOutlet adds the UDP service of outlet o: the same host, ports
// and identities, at o's address + datagram.ServiceSuffix.
func (d *Daemon) createUDPOutlet(o *portal.Outlet, ports []uint16, req api.CreateOutlet) error {
	cfg := datagram.OutletConfig{
		Logger: d.log, Name: o.Name(), Address: o.Address() + datagram.ServiceSuffix,
		Ports: ports, Allow: req.Allow,
		Allowed: func(peer string) error {
			id, err := identity.ParseIdentifier(peer)
			if err != nil {
				return err
			}
			return d.trusts(id)
		},
	}
	host, port, err := net.SplitHostPort(o.Target())
	if err != nil {
		cfg.Host = o.Target()
	} else {
		n, _ := strconv.ParseUint(port, 10, 16)
		cfg.Host, cfg.Port = host, uint16(n)
	}
	if req.Netstack {
		cfg.Dial = d.dialOutletUDP
	}
	t := d.tun
	t.mu.Lock()
	if t.udpOutLimit == nil {
		t.udpOutLimit = datagram.NewLimiter(datagram.DefaultRate, 0)
	}
	cfg.Limiter = t.udpOutLimit
	t.mu.Unlock()
	u, err := datagram.NewOutlet(d.node, cfg)
	if err != nil {
		return conflict(err)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		u.Close()
		return errors.New("node is shutting down")
	}
	t.udpOut[o.Name()] = u
	t.mu.Unlock()
	return nil
}

func (d *Daemon) deleteUDPOutlet(name string) {
	t := d.tun
	t.mu.Lock()
	u := t.udpOut[name]
	delete(t.udpOut, name)
	t.mu.Unlock()
	if u != nil {
		u.Close()
	}
}

// closeUDPOutlets ends every outlet's UDP service. Before the outlet
// netstack closes: their sockets may be its.
func (d *Daemon) closeUDPOutlets() {
	t := d.tun
	t.mu.Lock()
	us := t.udpOut
	t.udpOut = map[string]*datagram.Outlet{}
	t.mu.Unlock()
	for _, u := range us {
		u.Close()
	}
}

// withUDP adds the UDP counters of an outlet that carries UDP.
func (d *Daemon) withUDP(p api.PortalInfo) api.PortalInfo {
	if u := d.udpOutlet(p.Name); u != nil {
		s := &u.Stats
		p.UDP = &api.UDPInfo{Open: s.Open.Load(), Total: s.Total.Load(), Sent: s.Sent.Load(), Received: s.Recv.Load(), Dropped: s.Dropped.Load(), LastError: u.LastError()}
	}
	return p
}

// dialOutletUDP is the UDP service's dial hook in the outlet netstack
// mode: a socket from the virtual source address of peer.
func (d *Daemon) dialOutletUDP(ctx context.Context, peer, target string) (net.Conn, error) {
	o, err := d.outletNet()
	if err != nil {
		return nil, err
	}
	dst, err := resolveTarget(ctx, target)
	if err != nil {
		return nil, err
	}
	src, err := o.source(d, peer, dst)
	if err != nil {
		return nil, err
	}
	return o.st.DialUDP(netip.AddrPortFrom(src, 0), dst)
}

// tunUDPHandler is the interface's UDPHandler: each new application tuple
// to a mapped address becomes an association with the outlet's UDP
// service. It runs on the stack's packet goroutine, so it only accepts and
// starts a goroutine.
func (d *Daemon) tunUDPHandler(ifc *iface) func(*netstack.UDPRequest) {
	t := d.tun
	return func(r *netstack.UDPRequest) {
		m := t.lookup(r.Dst.Addr(), "")
		if m == nil {
			t.udpStats.Dropped.Add(1)
			return
		}
		route, err := datagram.ServiceRoute(m.route)
		if err != nil {
			m.lastErr.Store(err.Error())
			return
		}
		c, err := r.Accept()
		if err != nil {
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.wg.Add(1)
		t.mu.Unlock()
		m.udpTotal.Add(1)
		go func() {
			defer t.wg.Done()
			err := datagram.Serve(ifc.ctx, d.node, route, r.Dst.Port(), c, datagram.Config{Logger: d.log}, &t.udpStats)
			if err != nil && !errors.Is(err, datagram.ErrIdle) && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) {
				m.lastErr.Store("udp: " + err.Error())
			}
		}()
	}
}

// tunEcho answers a ping to a mapped address only when the node behind
// the outlet's channel answers: a probe to its echo service through the
// same route. Unmapped addresses get no reply.
func (d *Daemon) tunEcho(ifc *iface) func(netip.Addr, func(bool)) {
	t := d.tun
	sem := make(chan struct{}, maxEchoProbes)
	return func(dst netip.Addr, answer func(bool)) {
		m := t.lookup(dst, "")
		if m == nil || len(m.route) < 2 {
			// A route of one hop leads to an outlet on this node.
			answer(m != nil)
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			answer(false)
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			<-sem
			answer(false)
			return
		}
		t.wg.Add(1)
		t.mu.Unlock()
		probe := append(m.route[:len(m.route)-1].Clone(), routing.LocalAddr(router.EchoAddress))
		go func() {
			defer t.wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ifc.ctx, echoTimeout)
			defer cancel()
			_, err := d.node.Request(ctx, probe, []byte("ping"))
			answer(err == nil)
			if err != nil {
				m.lastErr.Store(fmt.Sprintf("ping: no answer through %s: %v", probe, err))
			}
		}()
	}
}

// socksUDP carries the datagrams of a SOCKS5 UDP ASSOCIATE to one
// destination: to the listener's outlet with the destination's port, or
// to the outlet mapped at the destination's name or address.
func (d *Daemon) socksUDP(ctx context.Context, l *socksListener, dst socks.Addr, c net.Conn) error {
	t := d.tun
	route := l.route
	if route == nil {
		m := t.lookup(dst.IP, dst.Name)
		if m == nil {
			err := fmt.Errorf("udp to %s: not mapped (see `ockam tun map`)", dst)
			l.lastErr.Store(err.Error())
			c.Close()
			return err
		}
		route = m.route
	}
	r, err := datagram.ServiceRoute(route)
	if err != nil {
		c.Close()
		return err
	}
	t.mu.Lock()
	if t.socksUDPLimit == nil {
		t.socksUDPLimit = datagram.NewLimiter(datagram.DefaultRate, 0)
	}
	lim := t.socksUDPLimit
	t.mu.Unlock()
	err = datagram.Serve(ctx, d.node, r, dst.Port, c, datagram.Config{Logger: d.log, Limiter: lim}, &t.udpStats)
	if err != nil && !errors.Is(err, datagram.ErrIdle) && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) {
		l.lastErr.Store("udp: " + err.Error())
		return err
	}
	return nil
}
