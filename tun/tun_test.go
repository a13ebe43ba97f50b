package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// inNS runs f in a fresh network namespace (named with the PID, removed
// afterwards) on a locked thread.
func inNS(t *testing.T, f func()) { inNSNamed(t, fmt.Sprintf("ocktun-%d", os.Getpid()), f) }

func inNSNamed(t *testing.T, name string, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root and ip netns: not running as root")
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("needs root and ip netns: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			t.Error(err)
			return
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

func TestCreateConfigureDelete(t *testing.T) {
	inNS(t, func() {
		dev, err := Create("ocktest0", 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer dev.Close()
		if mtu, _ := dev.MTU(); mtu != DefaultMTU {
			t.Errorf("MTU = %d, want %d", mtu, DefaultMTU)
		}
		if _, err := Create("ocktest0", 0); err == nil || !strings.Contains(err.Error(), "already in use") {
			t.Errorf("second Create: %v, want name already in use", err)
		}
		addrs := []netip.Prefix{netip.MustParsePrefix("100.64.0.1/10"), netip.MustParsePrefix("fd7a:6f63:6b6d::1/48")}
		routes := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("fd00:1::/64")}
		if err := Configure("ocktest0", addrs, routes); err != nil {
			t.Error(err)
			return
		}
		// Idempotent.
		if err := Configure("ocktest0", addrs, routes); err != nil {
			t.Errorf("second Configure: %v", err)
		}
		out, _ := exec.Command("ip", "route", "show", "table", "all").CombinedOutput()
		for _, want := range []string{"100.64.0.0/10", "198.18.0.0/15", "fd00:1::/64", "fd7a:6f63:6b6d::/48"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("route %s missing:\n%s", want, out)
			}
		}
		ifi, err := net.InterfaceByName("ocktest0")
		if err != nil || ifi.Flags&net.FlagUp == 0 {
			t.Errorf("interface not up: %v %v", ifi, err)
		}
		if err := Delete("ocktest0"); err != nil {
			t.Error(err)
		}
		if _, err := net.InterfaceByName("ocktest0"); err == nil {
			t.Error("interface still exists after Delete")
		}
		out, _ = exec.Command("ip", "route", "show", "table", "all").CombinedOutput()
		if strings.Contains(string(out), "ocktest0") || strings.Contains(string(out), "198.18.0.0/15") {
			t.Errorf("routes left after Delete:\n%s", out)
		}
		if err := Delete("ocktest0"); err != nil {
			t.Errorf("Delete of missing interface: %v", err)
		}
	})
}

// TestIPv6Disabled: on a host with IPv6 disabled, IPv6 says why and
// Configure refuses IPv6 prefixes with ErrNoIPv6 instead of the kernel's
// "permission denied", while IPv4 works.
func TestIPv6Disabled(t *testing.T) {
	inNSNamed(t, fmt.Sprintf("udptun-%d", os.Getpid()), func() {
		if ok, why := IPv6(); !ok {
			t.Errorf("fresh namespace: IPv6() = false, %q", why)
		}
		for _, k := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0); err != nil {
				t.Error(err)
				return
			}
		}
		ok, why := IPv6()
		if ok || !strings.Contains(why, "disable_ipv6=1") {
			t.Errorf("IPv6() = %v, %q; want false, disable_ipv6=1", ok, why)
		}
		dev, err := Create("udptest0", 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer dev.Close()
		v4 := netip.MustParsePrefix("100.64.0.1/10")
		err = Configure("udptest0", []netip.Prefix{v4, netip.MustParsePrefix("fd7a:6f63:6b6d::1/48")}, nil)
		if !errors.Is(err, ErrNoIPv6) || !strings.Contains(err.Error(), "disable_ipv6=1") {
			t.Errorf("Configure with IPv6: %v, want ErrNoIPv6 saying why", err)
		}
		if err := Configure("udptest0", []netip.Prefix{v4}, nil); err != nil {
			t.Errorf("Configure IPv4 only: %v", err)
		}
	})
}

func TestCreateErrors(t *testing.T) {
	if _, err := Create(strings.Repeat("x", 16), 0); err == nil {
		t.Error("Create with 16-byte name succeeded")
	}
	if os.Geteuid() != 0 {
		_, err := Create("ockam9", 0)
		if err == nil || !strings.Contains(err.Error(), "needs CAP_NET_ADMIN") {
			t.Errorf("Create without root: %v", err)
		}
	}
}

// TestNoGVisor checks the import rule: only package netstack links gVisor.
func TestNoGVisor(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v: %s", err, out)
	}
	if strings.Contains(string(out), "gvisor.dev/") {
		t.Error("package tun depends on gVisor")
	}
}
