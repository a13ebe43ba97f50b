package node

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ockam-go/ockam/netstack"
	"github.com/ockam-go/ockam/tun"
)

// The outlet netstack mode (server side): an outlet created with
// --netstack connects to its target from a virtual source address derived
// from the client's identifier, so the server application sees, and logs,
// a distinct and stable address per client identity.
//
// On the first such outlet the node creates its own TUN (outletIfName) with
// a gVisor stack behind it that accepts nothing (Handler nil) and only
// dials: the SYN leaves the stack through the TUN into the host kernel,
// which delivers it to the target's socket; the replies, addressed to the
// virtual source, follow the TUN's connected route back into the stack.
// The interface stays until the node stops.

const (
	// outletIfName is the outlet interface. A node has at most one; a
	// second node with netstack outlets in the same network namespace
	// fails with a clear error (the name and the prefix are taken).
	outletIfName = "ockamo0"

	// maxOutletPeers bounds the table of identifiers seen, kept only to
	// log each client's address once and to warn about collisions.
	maxOutletPeers = 1 << 16
)

var (
	// OutletPrefix is the IPv4 range of the virtual source addresses:
	// 198.18.0.0/15 (RFC 2544, benchmarking; not routed on the Internet
	// and rarely used on LANs). It lies outside the client side's
	// 100.64.0.0/10, so a host can run a client TUN and a netstack outlet
	// at once, and its 131,069 usable addresses keep hash collisions rare.
	OutletPrefix = netip.MustParsePrefix("198.18.0.0/15")

	// OutletPrefix6 is the IPv6 range of the virtual source addresses, a
	// ULA /48 next to the client side's fd7a:6f63:6b6d::/48.
	OutletPrefix6 = netip.MustParsePrefix("fd7a:6f63:6b6f::/48")
)

// outletNet is the outlet interface and the stack behind it.
type outletNet struct {
	name           string
	range4, range6 netip.Prefix // the virtual source ranges
	addr, addr6    netip.Prefix // addr6 invalid: IPv6 left out
	leftOut        string       // why IPv6 was left out
	st             *netstack.Stack

	mu    sync.Mutex
	peers map[netip.Addr]string // virtual source -> identifier, for logs
}

// VirtualSource returns the address from which an outlet in netstack mode
// connects for the client with identifier id: IPv4 in OutletPrefix, or
// IPv6 in OutletPrefix6 for an IPv6 target. It is a hash of the identifier
// (SHA-256), so it stays the same across connections, client restarts and
// server restarts. Two identifiers can share an IPv4 address (the node
// logs a warning when it sees that); with 64 hashed bits, IPv6 addresses
// practically never collide.
func VirtualSource(id string, ipv6 bool) netip.Addr {
	if ipv6 {
		return virtualSource(id, OutletPrefix6)
	}
	return virtualSource(id, OutletPrefix)
}

// virtualSource is VirtualSource in the range p (IPv4 up to /30, IPv6 up
// to /64): in IPv4, host addresses .2 to broadcast-1 (not the network
// address, not the interface's own .1, not the broadcast address); in
// IPv6, the low 64 bits, never ::0 or ::1.
func virtualSource(id string, p netip.Prefix) netip.Addr {
	sum := sha256.Sum256([]byte(id))
	h := binary.BigEndian.Uint64(sum[:8])
	if p.Addr().Is6() {
		b := p.Masked().Addr().As16()
		if h < 2 { // not the network address, not the interface's ::1
			h += 2
		}
		binary.BigEndian.PutUint64(b[8:], h)
		return netip.AddrFrom16(b)
	}
	n := uint64(1)<<(32-p.Bits()) - 3
	base := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) + 2 + uint32(h%n)
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// outletRanges returns the virtual source ranges asked for by req (the
// defaults when empty), checked.
func outletRanges(p4, p6 string) (netip.Prefix, netip.Prefix, error) {
	r4, r6 := OutletPrefix, OutletPrefix6
	if p4 != "" {
		p, err := netip.ParsePrefix(p4)
		if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
			return r4, r6, badRequest(fmt.Errorf("--netstack-prefix %q: want an IPv4 range from /8 to /30, e.g. %s", p4, OutletPrefix))
		}
		r4 = p.Masked()
	}
	if p6 != "" {
		p, err := netip.ParsePrefix(p6)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() < 16 || p.Bits() > 64 {
			return r4, r6, badRequest(fmt.Errorf("--netstack-prefix6 %q: want an IPv6 range from /16 to /64, e.g. %s", p6, OutletPrefix6))
		}
		r6 = p.Masked()
	}
	if tun.DefaultPrefix.Overlaps(r4) || tun.DefaultPrefix6.Overlaps(r6) {
		return r4, r6, badRequest(fmt.Errorf("outlet netstack ranges %s, %s overlap the client side's %s, %s", r4, r6, tun.DefaultPrefix, tun.DefaultPrefix6))
	}
	return r4, r6, nil
}

// routeOverlap returns a route of the host (other than a default route)
// that overlaps one of the prefixes, described for an error, or "".
func routeOverlap(ps ...netip.Prefix) (string, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue // a default route overlaps everything and says nothing
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok || ones == 0 {
			continue
		}
		rp := netip.PrefixFrom(a.Unmap(), ones)
		if rp.Addr().IsLinkLocalUnicast() || rp.Addr().IsMulticast() || rp.Addr().IsLoopback() {
			continue
		}
		for _, p := range ps {
			if p.Overlaps(rp) {
				dev := ""
				if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
					dev = " dev " + l.Attrs().Name
				}
				return fmt.Sprintf("%s%s", rp, dev), nil
			}
		}
	}
	return "", nil
}

// outletDialer returns the dialer of the outlet netstack mode: connections
// from a virtual source address per client identity, through a TUN and a
// netstack of this node's own, created on first use.
func (d *Daemon) outletDialer(p4, p6 string) (func(ctx context.Context, peer, target string) (net.Conn, error), error) {
	r4, r6, err := outletRanges(p4, p6)
	if err != nil {
		return nil, err
	}
	o, err := d.outletNetIn(r4, r6)
	if err != nil {
		return nil, err
	}
	if (p4 != "" && o.range4 != r4) || (p6 != "" && o.range6 != r6) {
		return nil, conflict(fmt.Errorf("the node's outlet netstack already uses %s, %s: a node has one set of virtual source ranges", o.range4, o.range6))
	}
	return d.dialOutlet, nil
}

// outletNet returns the outlet interface, creating it with the default
// ranges if needed.
func (d *Daemon) outletNet() (*outletNet, error) { return d.outletNetIn(OutletPrefix, OutletPrefix6) }

// outletNetIn returns the outlet interface, creating it with the ranges
// r4 and r6 if needed. A failed creation is not remembered: the next
// netstack outlet tries again.
func (d *Daemon) outletNetIn(r4, r6 netip.Prefix) (*outletNet, error) {
	t := d.tun
	t.outMu.Lock()
	defer t.outMu.Unlock()
	t.mu.Lock()
	o, closed := t.out, t.closed
	t.mu.Unlock()
	if closed {
		return nil, errors.New("node is shutting down")
	}
	if o != nil {
		return o, nil
	}

	o = &outletNet{name: outletIfName, peers: map[netip.Addr]string{}, range4: r4, range6: r6,
		addr: netip.PrefixFrom(r4.Addr().Next(), r4.Bits())}
	addrs := []netip.Prefix{o.addr}
	check := []netip.Prefix{r4}
	if ok, why := tun.IPv6(); ok {
		o.addr6 = netip.PrefixFrom(r6.Addr().Next(), r6.Bits())
		addrs = append(addrs, o.addr6)
		check = append(check, r6)
	} else {
		o.leftOut = "IPv6 left out: " + why
	}
	if ifc, err := prefixInUse(check...); err != nil {
		return nil, err
	} else if ifc != "" {
		return nil, conflict(fmt.Errorf("the outlet netstack range %s is in use on interface %s (another node's netstack outlet?)", r4, ifc))
	}
	if r, err := routeOverlap(check...); err != nil {
		return nil, err
	} else if r != "" {
		return nil, conflict(fmt.Errorf("the outlet netstack ranges %s overlap the host's route %s: replies to the virtual sources would not come back; choose others with --netstack-prefix/--netstack-prefix6", joinPrefixes(check), r))
	}
	dev, err := tun.Create(o.name, tun.DefaultMTU)
	if err != nil {
		if strings.Contains(err.Error(), "CAP_NET_ADMIN") {
			err = fmt.Errorf("node %s (pid %d) lacks CAP_NET_ADMIN to create interface %s for --netstack: start the node as root, or create the outlet without --netstack", d.cfg.Name, d.state.PID, o.name)
		}
		return nil, err
	}
	fail := func(err error) (*outletNet, error) {
		dev.Close()
		tun.Delete(o.name)
		return nil, err
	}
	if err := tun.Configure(o.name, addrs, nil); err != nil {
		return fail(err)
	}
	// Targets on 127.0.0.0/8: the kernel takes packets to and from
	// loopback addresses on this interface (the replies leave from
	// 127.x.y.z towards the virtual source).
	if err := setSysctl("net/ipv4/conf/"+o.name+"/route_localnet", "1"); err != nil {
		return fail(err)
	}
	st, err := netstack.New(dev, netstack.Config{Logger: d.log.With("tun", o.name), MTU: tun.DefaultMTU, AllowLoopback: true})
	if err != nil {
		return fail(err)
	}
	o.st = st
	t.mu.Lock()
	if t.closed { // the node stopped meanwhile
		t.mu.Unlock()
		st.Close()
		tun.Delete(o.name)
		return nil, errors.New("node is shutting down")
	}
	t.out = o
	t.mu.Unlock()
	d.log.Info("outlet netstack created", "tun", o.name, "address", o.addr.String(), "address6", o.addr6.String())
	if o.leftOut != "" {
		d.log.Warn("outlet netstack "+o.leftOut+": IPv6 targets cannot be reached from virtual sources", "tun", o.name)
	}
	return o, nil
}

// dialOutlet is the portal's dial hook: it connects to target from the
// virtual source address of peer.
func (d *Daemon) dialOutlet(ctx context.Context, peer, target string) (net.Conn, error) {
	t := d.tun
	t.mu.Lock()
	o := t.out
	t.mu.Unlock()
	if o == nil {
		return nil, errors.New("outlet netstack: the interface is gone (node stopping)")
	}
	dst, err := resolveTarget(ctx, target)
	if err != nil {
		return nil, err
	}
	src, err := o.source(d, peer, dst)
	if err != nil {
		return nil, err
	}
	return o.st.DialTCP(ctx, netip.AddrPortFrom(src, 0), dst)
}

// source is the virtual source address for peer towards dst.
func (o *outletNet) source(d *Daemon, peer string, dst netip.AddrPort) (netip.Addr, error) {
	if dst.Addr().Is6() && !o.addr6.IsValid() {
		return netip.Addr{}, fmt.Errorf("outlet netstack: cannot reach the IPv6 target %s: %s", dst, o.leftOut)
	}
	r := o.range4
	if dst.Addr().Is6() {
		r = o.range6
	}
	src := virtualSource(peer, r)
	o.note(d, peer, src)
	return src, nil
}

// note logs the virtual address of a client the first time it is seen, and
// warns when two identifiers share one.
func (o *outletNet) note(d *Daemon, peer string, src netip.Addr) {
	o.mu.Lock()
	prev, seen := o.peers[src]
	if !seen && len(o.peers) < maxOutletPeers {
		o.peers[src] = peer
	}
	o.mu.Unlock()
	switch {
	case !seen:
		d.log.Info("outlet netstack client", "peer", peer, "src", src.String())
	case prev != peer:
		d.log.Warn("outlet netstack: two clients share a virtual source address", "peer", peer, "other", prev, "src", src.String())
	}
}

// resolveTarget turns "host:port" into an address to dial, preferring
// IPv4 for names.
func resolveTarget(ctx context.Context, target string) (netip.AddrPort, error) {
	host, p, err := net.SplitHostPort(target)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("outlet netstack: target %q: %w", target, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("outlet netstack: target %q: bad port", target)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		as, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return netip.AddrPort{}, fmt.Errorf("outlet netstack: resolving %s: %w", host, lerr)
		}
		a = as[0]
		for _, x := range as {
			if x.Unmap().Is4() {
				a = x
				break
			}
		}
	}
	a = a.Unmap()
	if a.Is6() && a.IsLoopback() {
		// Linux never routes ::1 to or from an interface other than lo.
		return netip.AddrPort{}, fmt.Errorf("outlet netstack: %s cannot be reached from an interface: use 127.0.0.1 or an address of the host", a)
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// prefixInUse returns the interface holding an address in one of the
// prefixes, or "".
func prefixInUse(ps ...netip.Prefix) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			for _, p := range ps {
				if p.Contains(ip.Unmap()) {
					return ifc.Name, nil
				}
			}
		}
	}
	return "", nil
}

// setSysctl writes a value under /proc/sys (of the node's network
// namespace).
func setSysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
		return fmt.Errorf("setting %s: %w", strings.ReplaceAll(key, "/", "."), err)
	}
	return nil
}

// closeOutletNet closes the outlet stack (ending the connections it made)
// and removes the interface. It waits for a creation in progress.
func (d *Daemon) closeOutletNet() {
	t := d.tun
	t.outMu.Lock()
	defer t.outMu.Unlock()
	t.mu.Lock()
	o := t.out
	t.out = nil
	t.mu.Unlock()
	if o == nil {
		return
	}
	o.st.Close()
	if err := tun.Delete(o.name); err != nil {
		d.log.Error("removing the outlet interface", "tun", o.name, "err", err)
	}
	d.log.Info("outlet netstack deleted", "tun", o.name)
}

// outletServices describes the outlet interface for `node show`. t.mu held.
func (t *tunState) outletServicesLocked() []string {
	if t.out == nil {
		return nil
	}
	s := t.out.st.Stats()
	ranges := t.out.range4.String() + ", " + t.out.range6.String()
	if !t.out.addr6.IsValid() {
		ranges = t.out.range4.String() + "; " + t.out.leftOut
	}
	return []string{fmt.Sprintf("outlet netstack %s (%s; %d connections open)", t.out.name, ranges, s.FlowsOpen)}
}
