package netstack_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/ockam-go/ockam/netstack"
	"github.com/ockam-go/ockam/tun"
)

// Test topology: a network namespace per test holds the TUN interface and
// the "host applications" (clients, curl, ping); the stack runs in the test
// process, and its Handler dials servers on 127.0.0.1 in the root
// namespace. Only sockets and the TUN are created inside the namespace,
// from a goroutine locked to a thread switched into it.

var nsSeq atomic.Int64

var (
	tunAddr4 = netip.MustParsePrefix("100.64.0.1/10")
	tunAddr6 = netip.MustParsePrefix("fd7a:6f63:6b6d::1/48")
	dnsAddr  = netip.MustParseAddr("100.100.100.100")
	virt4    = netip.MustParseAddr("100.64.0.5")
	virt6    = netip.MustParseAddr("fd7a:6f63:6b6d::5")
)

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root and ip netns: not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs root and ip netns: ip(8) not found")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		tb.Skip("needs root and ip netns: no /dev/net/tun")
	}
}

type testNS struct {
	name string
	h    netns.NsHandle
}

// newNS creates a uniquely named namespace (with the PID in its name) and
// removes it when the test ends.
func newNS(tb testing.TB) *testNS { return newNSNamed(tb, "ockns") }

// newNSNamed is newNS with the name's prefix given.
func newNSNamed(tb testing.TB, prefix string) *testNS {
	tb.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Skipf("needs root and ip netns: ip netns add: %v: %s", err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("netns %s: %v", name, err)
	}
	tb.Cleanup(func() { h.Close() })
	ns := &testNS{name: name, h: h}
	ns.do(tb, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return ns
}

// do runs f on a thread switched into the namespace. Sockets and devices
// created by f stay in the namespace whichever thread uses them later.
func (ns *testNS) do(tb testing.TB, f func() error) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.h); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it exits with this goroutine.
			errc <- fmt.Errorf("restoring netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	if err := <-errc; err != nil {
		tb.Fatalf("in netns %s: %v", ns.name, err)
	}
}

func (ns *testNS) dial(tb testing.TB, network, addr string) (net.Conn, error) {
	tb.Helper()
	var c net.Conn
	var derr error
	ns.do(tb, func() error {
		c, derr = net.Dial(network, addr)
		return nil
	})
	return c, derr
}

func (ns *testNS) exec(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
}

type env struct {
	ns   *testNS
	st   *netstack.Stack
	name string
}

// newEnv creates a namespace with a TUN interface configured with the test
// prefixes and a stack on it. The stack is closed at cleanup (and may be
// closed earlier by the test).
func newEnv(tb testing.TB, cfg netstack.Config) *env { return newEnvNamed(tb, "ockns", "ockt0", cfg) }

// newEnvNamed is newEnv with the namespace's prefix and the TUN's name given.
func newEnvNamed(tb testing.TB, prefix, ifname string, cfg netstack.Config) *env {
	tb.Helper()
	needRoot(tb)
	ns := newNSNamed(tb, prefix)
	e := &env{ns: ns, name: ifname}
	var dev interface{ Close() error }
	ns.do(tb, func() error {
		mtu := tun.DefaultMTU
		if v, err := strconv.Atoi(os.Getenv("NETSTACK_TEST_MTU")); err == nil {
			mtu = v
		}
		d, err := tun.Create(e.name, mtu)
		if err != nil {
			return err
		}
		if err := tun.Configure(e.name, []netip.Prefix{tunAddr4, tunAddr6}, []netip.Prefix{netip.MustParsePrefix("100.100.100.100/32")}); err != nil {
			d.Close()
			return err
		}
		st, err := netstack.New(d, cfg)
		if err != nil {
			d.Close()
			return err
		}
		dev = d
		e.st = st
		return nil
	})
	_ = dev
	tb.Cleanup(func() {
		if err := e.st.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return e
}

var tunDelete = tun.Delete

// TestAnswerCarriesTheAck: 64-byte exchanges through the TUN write one
// packet per answer, not a pure ACK first and then the answer (acks.go);
// an answer slower than ackDelay would still have its ACK sent, so the
// bound leaves room for those.
func TestAnswerCarriesTheAck(t *testing.T) {
	targets := servers(t)
	e := newEnv(t, netstack.Config{Handler: proxy(targets)})
	c, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt4, portEcho).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg, got := make([]byte, 64), make([]byte, 64)
	exchange := func(n int) {
		for range n {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
		}
	}
	exchange(10)
	const n = 500
	s0 := e.st.Stats()
	exchange(n)
	s1 := e.st.Stats()
	out := float64(s1.PacketsOut-s0.PacketsOut) / n
	t.Logf("%.2f packets written to the TUN per exchange", out)
	if c := s1.AcksCarried - s0.AcksCarried; c < n/2 {
		t.Errorf("%d of %d ACKs carried by the answer, want most", c, n)
	}
	if out > 1.5 {
		t.Errorf("%.2f packets out per 64-byte exchange, want about 1: the pure ACK goes before the answer", out)
	}
}
