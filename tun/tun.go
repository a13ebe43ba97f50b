// Package tun creates and configures the client's virtual interface.
//
// The interface is a Linux TUN device opened through wireguard-go's tun
// package, which enables IFF_VNET_HDR and TCP segmentation offloads so that
// the kernel hands over (and accepts) 64 KiB TCP super-packets. Addresses
// and routes are set with netlink. This package does not import gVisor: the
// userspace stack behind the device lives in package netstack.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

const (
	// DefaultName is the interface name used when none is configured.
	DefaultName = "ockam0"

	// DefaultMTU is the interface MTU. The TUN hop is local only (app ↔
	// kernel ↔ our stack), so no packet of this size ever crosses a wire and
	// path MTU is not a concern. With the virtio header and TSO/GSO the MTU
	// barely matters (64 KiB segments both ways), but when offloads are
	// unavailable a large MTU is the cheapest win: the field notes measured
	// 6.7–7.2 Gbit/s at MTU 65000 against 1.6–2.0 Gbit/s at 1500 for one
	// flow. 65000 leaves room under the 65535-byte IPv4 limit and under
	// wireguard-go's 65535-byte read buffer.
	DefaultMTU = 65000
)

var (
	// DefaultPrefix is the IPv4 range routed into the interface: the CGNAT
	// shared range, unlikely to collide with LAN addressing.
	DefaultPrefix = netip.MustParsePrefix("100.64.0.0/10")

	// DefaultPrefix6 is the IPv6 range routed into the interface: a ULA /48
	// whose global ID spells "ockm" (fd7a:6f63:6b6d::/48).
	DefaultPrefix6 = netip.MustParsePrefix("fd7a:6f63:6b6d::/48")
)

// Create creates the TUN interface name with the given MTU. The interface is
// left down and unaddressed; see Configure. The caller owns the returned
// device and must Close it (netstack.Stack.Close does so for a device handed
// to netstack.New).
func Create(name string, mtu int) (wgtun.Device, error) {
	if name == "" {
		name = DefaultName
	}
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: interface name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	if mtu <= 0 {
		mtu = DefaultMTU
	}
	if ok, err := hasNetAdmin(); err != nil {
		return nil, fmt.Errorf("tun: reading capabilities: %w", err)
	} else if !ok {
		return nil, fmt.Errorf("tun: creating interface %s needs CAP_NET_ADMIN (run as root)", name)
	}
	if _, err := net.InterfaceByName(name); err == nil {
		return nil, fmt.Errorf("tun: creating interface %s: name already in use", name)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("tun: creating interface %s: name already in use", name)
		}
		return nil, fmt.Errorf("tun: creating interface %s: %w", name, err)
	}
	return dev, nil
}

// hasNetAdmin reports whether the effective capability set of the calling
// thread holds CAP_NET_ADMIN.
func hasNetAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	const c = unix.CAP_NET_ADMIN
	return data[c/32].Effective&(1<<(c%32)) != 0, nil
}

// IPv6 reports whether the network namespace of the caller can carry IPv6
// on a new interface, and if not, why, in words a user can act on. IPv6 is
// off when the kernel has no IPv6 (no /proc/sys/net/ipv6) or when
// net.ipv6.conf.all.disable_ipv6 or net.ipv6.conf.default.disable_ipv6 is
// set (the default of many containers and hardened hosts): a new interface
// then refuses IPv6 addresses with "permission denied". IPv4 cannot be
// turned off on Linux, so an IPv6-only host still gets an IPv4 interface
// address: only IPv6 is ever left out.
func IPv6() (ok bool, why string) {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return false, "the kernel has no IPv6 (no /proc/sys/net/ipv6)"
	}
	for _, k := range []string{"all", "default"} {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + k + "/disable_ipv6")
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return false, "IPv6 is disabled on this host (net.ipv6.conf." + k + ".disable_ipv6=1)"
		}
	}
	return true, ""
}

// interfaceIPv6 reports whether IPv6 is enabled on the interface name.
func interfaceIPv6(name string) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

// ErrNoIPv6 is wrapped by Configure's error when an IPv6 address or route
// was asked for on an interface where IPv6 is disabled. Callers that can do
// without IPv6 check IPv6 first and leave IPv6 prefixes out.
var ErrNoIPv6 = errors.New("tun: IPv6 is disabled")

// Configure brings the interface up and adds addrs (interface addresses,
// with the prefix length of the on-link range) and routes (extra prefixes
// routed into the interface). Both may mix IPv4 and IPv6. Addresses and
// routes that already exist are not an error.
func Configure(name string, addrs []netip.Prefix, routes []netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tun: configuring %s: %w", name, err)
	}
	var v6 bool
	for _, p := range append(append([]netip.Prefix(nil), addrs...), routes...) {
		v6 = v6 || p.Addr().Is6()
	}
	if v6 && !interfaceIPv6(name) {
		_, why := IPv6()
		if why == "" {
			why = "net.ipv6.conf." + name + ".disable_ipv6=1"
		}
		return fmt.Errorf("%w on %s: %s", ErrNoIPv6, name, why)
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// No duplicate address detection on a point-to-point TUN:
			// the address is usable at once.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, a); err != nil {
			return fmt.Errorf("tun: adding address %s to %s: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tun: setting %s up: %w", name, err)
	}
	for _, p := range routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p.Masked()), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("tun: adding route %s via %s: %w", p, name, err)
		}
	}
	return nil
}

// Delete removes the interface and with it its addresses and routes. It
// does not close a device still open on it; the kernel removes a
// non-persistent TUN on its own when its last file descriptor closes, so
// Delete of an interface already gone returns nil.
func Delete(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("tun: deleting %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("tun: deleting %s: %w", name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}
