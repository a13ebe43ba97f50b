package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/datagram"
	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/socks"
	"github.com/ockam-go/ockam/netstack"
	"github.com/ockam-go/ockam/tun"
)

// The virtual interface (TUN + netstack) and the SOCKS5 listeners of a node.
//
// The mapping table (virtual address and DNS name -> route to an outlet)
// belongs to the node and exists without an interface: SOCKS5 listeners
// without a fixed outlet resolve the requested host through it, which needs
// no root. `tun create` adds the interface; its netstack Handler looks the
// destination address up in the same table.

// dnsDefault is where the interface answers DNS when it lies in the prefix
// (as in the default 100.64.0.0/10); otherwise the prefix's second address.
var dnsDefault = netip.MustParseAddr("100.100.100.100")

// nameSuffix is appended to mapping names given without a dot.
const nameSuffix = ".ockam"

// maxMappings bounds the mapping table.
const maxMappings = 1 << 16

type tunState struct {
	mu     sync.Mutex
	ifc    *iface // nil: no interface
	prefix netip.Prefix
	maps   map[netip.Addr]*mapping // by IPv4 and by IPv6 address
	names  map[string]*mapping
	socks  map[string]*socksListener
	flows  map[*portal.Flow]*flowEntry
	added  uint64 // flows tracked, for sweeping
	closed bool
	wg     sync.WaitGroup // SOCKS listeners and flow watchers

	udpOut        map[string]*datagram.Outlet // UDP services of outlets, by outlet name
	udpStats      datagram.Stats              // the interface's UDP associations
	udpOutLimit   *datagram.Limiter           // shapes the replies of all outlets' UDP services
	socksUDPLimit *datagram.Limiter           // shapes UDP from SOCKS5 clients

	outMu sync.Mutex // serialises creating and closing out
	out   *outletNet // the outlet netstack mode's interface; nil: none
}

// iface is a created interface and the stack behind it.
type iface struct {
	name        string
	addr, addr6 netip.Prefix // addr6 invalid: IPv6 left out
	leftOut     string       // why a family was left out; "" for none
	dns         netip.Addr
	mtu         int
	udpRate     int64        // bytes per second, 0: none
	policer     *tun.Policer // sheds UDP beyond udpRate in the kernel; nil: none
	policerNote string       // why there is no policer despite a rate; "" for none
	st          *netstack.Stack
	created     time.Time
	ctx         context.Context // ends pending opens when the interface goes
	cancel      context.CancelFunc
}

type mapping struct {
	ip, ip6  netip.Addr
	name     string
	to       string
	route    routing.Route
	total    atomic.Uint64
	udpTotal atomic.Uint64
	lastErr  atomic.Value // string

	// warm holds the ports the outlet last accepted a flow to, and when
	// (see tunHandler); bounded by the 65,536 ports of one address.
	warmMu sync.Mutex
	warm   map[uint16]time.Time
}

// WarmFor is how long after the outlet accepted a flow to a mapped
// (address, port) the interface accepts new connections to it at once and
// opens their flows with early data (one tunnel round trip, not two), like
// a TCP Fast Open cookie. A refusal or failed open ends it.
const WarmFor = 30 * time.Second

// isWarm says whether port was accepted by the outlet within WarmFor.
func (m *mapping) isWarm(port uint16) bool {
	m.warmMu.Lock()
	defer m.warmMu.Unlock()
	at, ok := m.warm[port]
	return ok && time.Since(at) < WarmFor
}

// setWarm records an open that the outlet accepted (ok) or refused.
func (m *mapping) setWarm(port uint16, ok bool) {
	m.warmMu.Lock()
	defer m.warmMu.Unlock()
	if !ok {
		delete(m.warm, port)
		return
	}
	if m.warm == nil {
		m.warm = make(map[uint16]time.Time)
	}
	m.warm[port] = time.Now()
}

// flowEntry is a flow the node opened for the interface or a SOCKS
// listener; owner is the *mapping or *socksListener it belongs to.
type flowEntry struct {
	owner          any
	client, target string
}

func newTunState() *tunState {
	return &tunState{
		prefix: tun.DefaultPrefix,
		maps:   map[netip.Addr]*mapping{},
		names:  map[string]*mapping{},
		socks:  map[string]*socksListener{},
		flows:  map[*portal.Flow]*flowEntry{},
		udpOut: map[string]*datagram.Outlet{},
	}
}

// ip6For embeds a virtual IPv4 address in the last 32 bits of the IPv6
// prefix, so each mapping answers on both families.
func ip6For(v4 netip.Addr) netip.Addr {
	b := tun.DefaultPrefix6.Addr().As16()
	a := v4.As4()
	copy(b[12:], a[:])
	return netip.AddrFrom16(b)
}

// reserved reports addresses of the prefix a mapping may not take: the
// network and broadcast addresses, the interface's own, the DNS address.
func (t *tunState) reserved(a netip.Addr) bool {
	p := t.prefix
	if a == p.Addr() || a == p.Addr().Next() || a == t.dnsAddr() {
		return true
	}
	last := lastAddr(p)
	return a == last
}

func (t *tunState) dnsAddr() netip.Addr {
	if t.prefix.Contains(dnsDefault) {
		return dnsDefault
	}
	return t.prefix.Addr().Next().Next()
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lookup returns the mapping of a virtual address or a name.
func (t *tunState) lookup(a netip.Addr, name string) *mapping {
	t.mu.Lock()
	defer t.mu.Unlock()
	if name != "" {
		return t.names[canonicalName(name)]
	}
	return t.maps[a.Unmap()]
}

func canonicalName(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) }

func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// namesLocked is the DNS table for the stack. t.mu held.
func (t *tunState) namesLocked() map[string]netip.Addr {
	m := make(map[string]netip.Addr, len(t.names))
	for n, mp := range t.names {
		m[n] = mp.ip
	}
	return m
}

// track records a flow. No goroutine waits for its end (an idle flow
// would hold that goroutine's stack): ended flows are swept from the table
// every sweepEvery additions and whenever the table is read.
func (t *tunState) track(f *portal.Flow, e *flowEntry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.flows[f] = e
	if t.added++; t.added%sweepEvery == 0 {
		t.sweepLocked()
	}
	return true
}

// sweepEvery is how many flow additions go between sweeps of the table.
const sweepEvery = 1024

// sweepLocked drops the flows that have ended. t.mu held.
func (t *tunState) sweepLocked() {
	for f := range t.flows {
		select {
		case <-f.Done():
			delete(t.flows, f)
		default:
		}
	}
}

// abortOwned ends the flows that belong to owner.
func (t *tunState) abortOwned(owner any, reason string) {
	t.mu.Lock()
	var fs []*portal.Flow
	for f, e := range t.flows {
		if e.owner == owner {
			fs = append(fs, f)
		}
	}
	t.mu.Unlock()
	for _, f := range fs {
		f.Abort(reason)
	}
}

func (t *tunState) flowInfos(owner func(any) bool) []api.FlowInfo {
	t.mu.Lock()
	t.sweepLocked()
	var fs []portal.FlowInfo
	for f, e := range t.flows {
		if owner(e.owner) {
			fs = append(fs, portal.FlowInfo{ID: f.ID(), Client: e.client, Target: e.target, BytesIn: f.BytesIn.Load(), BytesOut: f.BytesOut.Load(), Opened: f.Opened})
		}
	}
	t.mu.Unlock()
	sort.Slice(fs, func(i, j int) bool { return fs[i].Opened.Before(fs[j].Opened) })
	return flowInfos(fs)
}

// handler is the netstack Handler. To a target the outlet has not accepted
// lately it is dial-then-accept, so the application sees "connection
// refused" when nothing is mapped or the outlet refuses. To a warm target
// (the outlet accepted a flow to it within WarmFor) it is accept-then-dial
// with the application's first bytes sent with the open, as the per-port
// inlet does: one tunnel round trip for connect + request + response; if
// the outlet then refuses after all, the application's connection is reset
// (as if the server had crashed right after accepting), and the target is
// cold again. docs/TUN.md, "Early data and the TUN".
func (d *Daemon) tunHandler(ifc *iface) func(*netstack.Request) {
	t := d.tun
	return func(r *netstack.Request) {
		m := t.lookup(r.Dst.Addr(), "")
		if m == nil {
			r.Refuse()
			return
		}
		m.total.Add(1)
		port := r.Dst.Port()
		var (
			c   net.Conn
			f   *portal.Flow
			err error
		)
		if m.isWarm(port) {
			if c, err = r.Accept(); err != nil {
				return
			}
			var early []byte
			if early, err = d.portals.ReadEarly(c); err != nil {
				portal.Abort(c)
				d.log.Debug("tun connection failed before its flow opened", "dst", r.Dst.String(), "err", err)
				return
			}
			if f, err = d.portals.DialEarly(ifc.ctx, m.route, port, early); err != nil {
				m.setWarm(port, false)
				m.lastErr.Store(err.Error())
				portal.Abort(c)
				d.log.Info("tun flow to a warm target failed after accept: reset", "dst", r.Dst.String(), "err", err)
				return
			}
			m.setWarm(port, true)
		} else {
			if f, err = d.portals.Dial(ifc.ctx, m.route, port); err != nil {
				m.setWarm(port, false)
				m.lastErr.Store(err.Error())
				r.Refuse()
				d.log.Debug("tun flow refused", "dst", r.Dst.String(), "err", err)
				return
			}
			m.setWarm(port, true)
			if c, err = r.Accept(); err != nil {
				f.Abort("the application went away")
				return
			}
		}
		if !t.track(f, &flowEntry{owner: m, client: r.Src.String(), target: r.Dst.String()}) {
			portal.Abort(c)
			f.Abort("node stopping")
			return
		}
		// The flow owns the conn from here; Stack.Close closes the conn
		// and so ends the flow. The handler returns at once: its
		// goroutine (gVisor's, with the stack the handshake grew) does
		// not stay with the idle flow.
		f.Run(c)
	}
}

func (d *Daemon) createTun(req api.CreateTun) (api.TunInfo, error) {
	t := d.tun
	name := req.Name
	if name == "" {
		name = tun.DefaultName
	}
	prefix := tun.DefaultPrefix
	if req.Prefix != "" {
		p, err := netip.ParsePrefix(req.Prefix)
		if err != nil || !p.Addr().Is4() || p.Bits() > 24 || p.Bits() < 8 {
			return api.TunInfo{}, badRequest(fmt.Errorf("--prefix %q: want an IPv4 range from /8 to /24, e.g. %s", req.Prefix, tun.DefaultPrefix))
		}
		prefix = p.Masked()
	}
	mtu := req.MTU
	if mtu == 0 {
		mtu = tun.DefaultMTU
	}
	if mtu < 1280 || mtu > 65535 {
		return api.TunInfo{}, badRequest(fmt.Errorf("--mtu %d: want 1280 to 65535", mtu))
	}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return api.TunInfo{}, errors.New("node is shutting down")
	}
	if t.ifc != nil {
		n := t.ifc.name
		t.mu.Unlock()
		return api.TunInfo{}, conflict(fmt.Errorf("node %s already has interface %s (see `ockam tun show`)", d.cfg.Name, n))
	}
	for a, m := range t.maps {
		if a.Is4() && !prefix.Contains(a) {
			t.mu.Unlock()
			return api.TunInfo{}, conflict(fmt.Errorf("mapping %s lies outside %s: unmap it first", m.ip, prefix))
		}
	}
	old := t.prefix
	t.prefix = prefix
	for a := range t.maps {
		if a.Is4() && t.reserved(a) {
			t.prefix = old
			t.mu.Unlock()
			return api.TunInfo{}, conflict(fmt.Errorf("mapping %s is an address the interface needs: unmap it first", a))
		}
	}
	// Hold the slot while creating, so two creates cannot race.
	ctx, cancel := context.WithCancel(context.Background())
	ifc := &iface{name: name, mtu: mtu, dns: t.dnsAddr(), ctx: ctx, cancel: cancel, created: time.Now().UTC(),
		addr: netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits())}
	// The host decides the families: an IPv6 address on a host with IPv6
	// disabled fails with "permission denied", so IPv6 is left out there.
	if ok, why := tun.IPv6(); ok {
		ifc.addr6 = netip.PrefixFrom(tun.DefaultPrefix6.Addr().Next(), tun.DefaultPrefix6.Bits())
	} else {
		ifc.leftOut = "IPv6 left out: " + why
	}
	t.ifc = ifc
	t.mu.Unlock()

	fail := func(err error) (api.TunInfo, error) {
		cancel()
		t.mu.Lock()
		t.ifc = nil
		t.mu.Unlock()
		return api.TunInfo{}, err
	}
	dev, err := tun.Create(name, mtu)
	if err != nil {
		if strings.Contains(err.Error(), "CAP_NET_ADMIN") {
			err = fmt.Errorf("node %s (pid %d) lacks CAP_NET_ADMIN to create interface %s: start the node as root", d.cfg.Name, d.state.PID, name)
		}
		return fail(err)
	}
	if err := tun.Configure(name, ifc.prefixes(), nil); err != nil {
		dev.Close()
		tun.Delete(name)
		return fail(err)
	}
	ncfg := netstack.Config{Logger: d.log.With("tun", name), MTU: mtu, Handler: d.tunHandler(ifc), DNSAddr: ifc.dns,
		UDPHandler: d.tunUDPHandler(ifc), Echo: d.tunEcho(ifc)}
	switch {
	case req.UDPRate == 0:
		ifc.udpRate = datagram.DefaultRate
	case req.UDPRate > 0:
		ifc.udpRate = req.UDPRate
	}
	if l := datagram.NewLimiter(int(ifc.udpRate), 0); l != nil {
		ncfg.UDPAdmit = l.Allow
		ifc.policer, ifc.policerNote = policeUDP(name, ifc.udpRate, ifc.dns)
	}
	st, err := netstack.New(dev, ncfg)
	if err != nil {
		dev.Close()
		ifc.closePolicer(d.log)
		tun.Delete(name)
		return fail(err)
	}
	t.mu.Lock()
	if t.closed { // the node stopped while the interface was being made
		t.ifc = nil
		t.mu.Unlock()
		cancel()
		st.Close()
		ifc.closePolicer(d.log)
		tun.Delete(name)
		return api.TunInfo{}, errors.New("node is shutting down")
	}
	ifc.st = st
	st.SetNames(t.namesLocked())
	t.mu.Unlock()
	d.log.Info("tun created", "tun", name, "address", ifc.addr.String(), "dns", ifc.dns.String(), "mtu", mtu)
	if ifc.leftOut != "" {
		d.log.Warn("tun "+ifc.leftOut, "tun", name)
	}
	if ifc.policerNote != "" {
		d.log.Warn("tun: UDP beyond --udp-rate is shed by the node only, after reading it", "tun", name, "why", ifc.policerNote)
	}
	return d.tunInfo(), nil
}

// policeUDP asks the kernel to shed what the interface's UDP sends beyond
// rate, before the node reads it (tun.PoliceUDP says why). The node's own
// limiter stays the exact gate: it counts payload bytes over 50 ms, the
// kernel counts IP packets over a second, so the kernel's rate leaves room
// for headers (28 to 48 bytes a datagram) and sheds only the excess of a
// flood. Without the kernel's help (no nftables, a kernel before 5.16) the
// node still sheds, at the cost of reading every datagram; note says why.
func policeUDP(name string, rate int64, dns netip.Addr) (p *tun.Policer, note string) {
	p, err := tun.PoliceUDP(name, uint64(rate+rate/16), uint32(min(rate/20, math.MaxUint32)), dns)
	if err != nil {
		return nil, err.Error()
	}
	return p, ""
}

// closePolicer deletes the interface's policer table, if any.
func (ifc *iface) closePolicer(log *slog.Logger) {
	if ifc.policer == nil {
		return
	}
	if err := ifc.policer.Close(); err != nil {
		log.Error("removing the UDP policer", "tun", ifc.name, "err", err)
	}
}

// prefixes are the interface's addresses, by family.
func (ifc *iface) prefixes() []netip.Prefix {
	ps := []netip.Prefix{ifc.addr}
	if ifc.addr6.IsValid() {
		ps = append(ps, ifc.addr6)
	}
	return ps
}

// families names the families of prefixes ps.
func families(ps []netip.Prefix) []string {
	var fs []string
	for _, p := range ps {
		f := "ipv4"
		if p.Addr().Is6() {
			f = "ipv6"
		}
		if !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	return fs
}

// deleteTun closes the stack (ending its flows) and removes the interface
// with its addresses and routes.
func (d *Daemon) deleteTun() error {
	t := d.tun
	t.mu.Lock()
	ifc := t.ifc
	if ifc == nil || ifc.st == nil {
		t.mu.Unlock()
		if ifc != nil {
			return conflict(errors.New("the interface is being created"))
		}
		return notFound(fmt.Errorf("node %s has no interface", d.cfg.Name))
	}
	t.ifc = nil
	t.mu.Unlock()
	ifc.cancel()
	ifc.st.Close()
	ifc.closePolicer(d.log)
	err := tun.Delete(ifc.name)
	d.log.Info("tun deleted", "tun", ifc.name)
	return err
}

// tunStats returns the TUN interface's netstack counters, if it has one.
func (d *Daemon) tunStats() (netstack.Stats, bool) {
	t := d.tun
	if t == nil {
		return netstack.Stats{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ifc == nil || t.ifc.st == nil {
		return netstack.Stats{}, false
	}
	return t.ifc.st.Stats(), true
}

func (d *Daemon) tunInfo() api.TunInfo {
	t := d.tun
	out := api.TunInfo{Mappings: []api.Mapping{}}
	t.mu.Lock()
	if ifc := t.ifc; ifc != nil && ifc.st != nil {
		out.Name, out.Address, out.DNS, out.MTU, out.Created = ifc.name, ifc.addr.String(), ifc.dns.String(), ifc.mtu, ifc.created
		if ifc.addr6.IsValid() {
			out.Address6 = ifc.addr6.String()
		}
		out.Families, out.LeftOut = families(ifc.prefixes()), ifc.leftOut
		out.UDPRate = ifc.udpRate
		if ifc.policer != nil {
			out.UDPPolicer = "kernel (nftables netdev table " + ifc.policer.Table() + ")"
		} else if ifc.policerNote != "" {
			out.UDPPolicer = "node only: " + ifc.policerNote
		}
		s := ifc.st.Stats()
		out.Stats = &api.TunStats{FlowsOpen: s.FlowsOpen, FlowsTotal: s.FlowsTotal, SYNsRefused: s.SYNsRefused,
			BytesIn: s.BytesIn, BytesOut: s.BytesOut, DNSQueries: s.DNSQueries, EchoReplies: s.EchoReplies,
			UDPAssocsOpen: t.udpStats.Open.Load(), UDPAssocsTotal: t.udpStats.Total.Load(), UDPDropped: t.udpStats.Dropped.Load() + s.UDPDropped}
		if ifc.policer != nil {
			out.Stats.UDPPoliced, _, _ = ifc.policer.Dropped()
		}
	}
	open := map[*mapping]int{}
	t.sweepLocked()
	for _, e := range t.flows {
		if m, ok := e.owner.(*mapping); ok {
			open[m]++
		}
	}
	for a, m := range t.maps {
		if a != m.ip {
			continue
		}
		mi := api.Mapping{IP: m.ip.String(), IP6: m.ip6.String(), Name: m.name, To: m.to, Flows: open[m], Total: m.total.Load()}
		mi.LastError, _ = m.lastErr.Load().(string)
		out.Mappings = append(out.Mappings, mi)
	}
	t.mu.Unlock()
	sort.Slice(out.Mappings, func(i, j int) bool {
		return netip.MustParseAddr(out.Mappings[i].IP).Less(netip.MustParseAddr(out.Mappings[j].IP))
	})
	out.Flows = t.flowInfos(func(o any) bool { _, ok := o.(*mapping); return ok })
	return out
}

func (d *Daemon) createMapping(req api.CreateMapping) (api.Mapping, error) {
	t := d.tun
	route, err := d.resolve(req.To)
	if err != nil {
		return api.Mapping{}, badRequest(err)
	}
	if len(route) == 0 {
		return api.Mapping{}, badRequest(errors.New("--to: want the route to an outlet, e.g. /service/<channel>/service/outlet"))
	}
	name := canonicalName(req.Name)
	if name == "" {
		last := route[len(route)-1]
		if last.Type == routing.Local && validName(strings.ToLower(last.Value)) {
			name = strings.ToLower(last.Value)
		}
	}
	if name != "" && !strings.Contains(name, ".") {
		name += nameSuffix
	}
	if name != "" && !validName(name) {
		return api.Mapping{}, badRequest(fmt.Errorf("--name %q: want a DNS name like api.ockam", req.Name))
	}
	var ip netip.Addr
	if req.IP != "" {
		if ip, err = netip.ParseAddr(req.IP); err != nil || !ip.Is4() {
			return api.Mapping{}, badRequest(fmt.Errorf("--ip %q: want an IPv4 address", req.IP))
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return api.Mapping{}, errors.New("node is shutting down")
	}
	if len(t.maps) >= 2*maxMappings {
		return api.Mapping{}, conflict(fmt.Errorf("the node holds %d mappings already", maxMappings))
	}
	if ip.IsValid() {
		switch {
		case !t.prefix.Contains(ip):
			return api.Mapping{}, badRequest(fmt.Errorf("--ip %s is outside %s", ip, t.prefix))
		case t.reserved(ip):
			return api.Mapping{}, badRequest(fmt.Errorf("--ip %s is reserved (network, broadcast, interface or DNS address)", ip))
		case t.maps[ip] != nil:
			return api.Mapping{}, conflict(fmt.Errorf("%s is already mapped to %s", ip, t.maps[ip].to))
		}
	} else {
		for a := t.prefix.Addr().Next(); t.prefix.Contains(a); a = a.Next() {
			if !t.reserved(a) && t.maps[a] == nil {
				ip = a
				break
			}
		}
		if !ip.IsValid() {
			return api.Mapping{}, conflict(fmt.Errorf("no free address left in %s", t.prefix))
		}
	}
	if name != "" && t.names[name] != nil {
		if req.Name != "" {
			return api.Mapping{}, conflict(fmt.Errorf("name %s is already mapped to %s", name, t.names[name].ip))
		}
		// A default name that is taken: number it.
		base := strings.TrimSuffix(name, nameSuffix)
		for i := 2; ; i++ {
			n := fmt.Sprintf("%s-%d%s", base, i, nameSuffix)
			if t.names[n] == nil {
				name = n
				break
			}
		}
	}
	m := &mapping{ip: ip, ip6: ip6For(ip), name: name, to: route.String(), route: route}
	t.maps[m.ip] = m
	t.maps[m.ip6] = m
	if name != "" {
		t.names[name] = m
	}
	if t.ifc != nil && t.ifc.st != nil {
		t.ifc.st.SetNames(t.namesLocked())
	}
	d.log.Info("tun mapping added", "ip", ip.String(), "name", name, "to", m.to)
	return api.Mapping{IP: m.ip.String(), IP6: m.ip6.String(), Name: m.name, To: m.to}, nil
}

// deleteMapping removes the mapping of an address or a name and ends its
// flows.
func (d *Daemon) deleteMapping(key string) error {
	t := d.tun
	t.mu.Lock()
	var m *mapping
	if a, err := netip.ParseAddr(key); err == nil {
		m = t.maps[a.Unmap()]
	} else {
		m = t.names[canonicalName(key)]
		if m == nil && !strings.Contains(key, ".") {
			m = t.names[canonicalName(key)+nameSuffix]
		}
	}
	if m == nil {
		t.mu.Unlock()
		return notFound(fmt.Errorf("nothing is mapped at %s (see `ockam tun show`)", key))
	}
	delete(t.maps, m.ip)
	delete(t.maps, m.ip6)
	if m.name != "" {
		delete(t.names, m.name)
	}
	if t.ifc != nil && t.ifc.st != nil {
		t.ifc.st.SetNames(t.namesLocked())
	}
	t.mu.Unlock()
	t.abortOwned(m, "tun: mapping removed")
	return nil
}

// socksListener is a SOCKS5 listener of the node.
type socksListener struct {
	from    string
	to      string        // "" resolves hosts through the mapping table
	route   routing.Route // nil with to ""
	cancel  context.CancelFunc
	done    chan struct{}
	total   atomic.Uint64
	lastErr atomic.Value // string
}

// socksReply maps a portal error to the SOCKS reply the client sees. The
// portal reports outlet refusals as text, so this reads it.
func socksReply(err error) socks.Reply {
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return socks.ConnectionRefused
	case strings.Contains(s, "not allowed"):
		return socks.NotAllowed
	case strings.Contains(s, "network is unreachable"):
		return socks.NetworkUnreachable
	case strings.Contains(s, "no route to host"), strings.Contains(s, "no answer from the outlet"), strings.Contains(s, "path to the outlet failed"):
		return socks.HostUnreachable
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline"):
		return socks.TTLExpired
	}
	return socks.ReplyFor(err)
}

func (d *Daemon) createSocks(req api.CreateSocks) (api.SocksInfo, error) {
	t := d.tun
	if req.From == "" {
		return api.SocksInfo{}, badRequest(errors.New("missing --from HOST:PORT"))
	}
	l := &socksListener{done: make(chan struct{})}
	if req.To != "" {
		route, err := d.resolve(req.To)
		if err != nil {
			return api.SocksInfo{}, badRequest(err)
		}
		l.route, l.to = route, route.String()
	}
	ln, err := net.Listen("tcp", req.From)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return api.SocksInfo{}, conflict(fmt.Errorf("socks: cannot listen on %s: %v", req.From, err))
	}
	l.from = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	t.mu.Lock()
	if t.closed || t.socks[l.from] != nil {
		t.mu.Unlock()
		cancel()
		ln.Close()
		if t.closed {
			return api.SocksInfo{}, errors.New("node is shutting down")
		}
		return api.SocksInfo{}, conflict(fmt.Errorf("a SOCKS listener on %s exists", l.from))
	}
	t.socks[l.from] = l
	t.wg.Add(1)
	t.mu.Unlock()

	srv := &socks.Server{Logger: d.log.With("socks", l.from), Dial: func(ctx context.Context, dst socks.Addr) (socks.Flow, error) {
		return d.socksDial(ctx, l, dst)
	}, UDP: func(ctx context.Context, dst socks.Addr, c net.Conn) error {
		return d.socksUDP(ctx, l, dst, c)
	}}
	go func() {
		defer t.wg.Done()
		defer close(l.done)
		if err := srv.Serve(ctx, ln); err != nil {
			l.lastErr.Store(err.Error())
			d.log.Error("socks listener failed", "socks", l.from, "err", err)
		}
	}()
	d.log.Info("socks listener created", "socks", l.from, "to", l.to)
	return d.socksInfo(l), nil
}

func (d *Daemon) socksDial(ctx context.Context, l *socksListener, dst socks.Addr) (socks.Flow, error) {
	t := d.tun
	l.total.Add(1)
	route := l.route
	if route == nil {
		m := t.lookup(dst.IP, dst.Name)
		if m == nil {
			err := fmt.Errorf("%s is not mapped (see `ockam tun map`)", dst)
			l.lastErr.Store(err.Error())
			return nil, &socks.Error{Reply: socks.HostUnreachable, Err: err}
		}
		route = m.route
	}
	f, err := d.portals.Dial(ctx, route, dst.Port)
	if err != nil {
		l.lastErr.Store(err.Error())
		return nil, &socks.Error{Reply: socksReply(err), Err: err}
	}
	if !t.track(f, &flowEntry{owner: l, client: "socks " + l.from, target: dst.String()}) {
		f.Abort("node stopping")
		return nil, errors.New("node stopping")
	}
	return f, nil
}

func (d *Daemon) socksInfo(l *socksListener) api.SocksInfo {
	info := api.SocksInfo{From: l.from, To: l.to, Total: l.total.Load(),
		Flows: d.tun.flowInfos(func(o any) bool { return o == l })}
	info.LastError, _ = l.lastErr.Load().(string)
	return info
}

// closeSocks stops a listener and ends its flows.
func (d *Daemon) closeSocks(l *socksListener) {
	l.cancel()
	<-l.done
	d.tun.abortOwned(l, "socks listener deleted")
}

func (d *Daemon) deleteSocks(from string) error {
	t := d.tun
	t.mu.Lock()
	l := t.socks[from]
	delete(t.socks, from)
	t.mu.Unlock()
	if l == nil {
		return notFound(fmt.Errorf("no SOCKS listener on %s", from))
	}
	d.closeSocks(l)
	return nil
}

// stopTun ends every SOCKS listener and the interface with their flows.
func (d *Daemon) stopTun() {
	t := d.tun
	if t == nil {
		return
	}
	t.mu.Lock()
	t.closed = true
	ls := t.socks
	t.socks = map[string]*socksListener{}
	t.mu.Unlock()
	for _, l := range ls {
		d.closeSocks(l)
	}
	if err := d.deleteTun(); err != nil {
		var es *errStatus
		if !errors.As(err, &es) {
			d.log.Error("removing the interface", "err", err)
		}
	}
	d.closeUDPOutlets()
	d.closeOutletNet()
	t.wg.Wait()
}

func (d *Daemon) tunServices() []string {
	t := d.tun
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var s []string
	if t.ifc != nil && t.ifc.st != nil {
		addrs := t.ifc.addr.String()
		if t.ifc.addr6.IsValid() {
			addrs += ", " + t.ifc.addr6.String()
		} else {
			addrs += "; " + t.ifc.leftOut
		}
		s = append(s, fmt.Sprintf("tun %s (%s; dns %s, %d mappings)", t.ifc.name, addrs, t.ifc.dns, len(t.names)))
	}
	for _, l := range t.socks {
		to := l.to
		if to == "" {
			to = "mapped names"
		}
		s = append(s, fmt.Sprintf("socks5 %s (to %s)", l.from, to))
	}
	return append(s, t.outletServicesLocked()...)
}
