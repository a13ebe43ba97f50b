package netstack_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/netstack"
)

// udpEchoServer echoes datagrams on 127.0.0.1 (root namespace).
func udpEchoServer(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c
}

// udpProxy is a UDPHandler that relays each association to target with a
// kernel socket, until the association or the test ends.
type udpProxy struct {
	target *net.UDPAddr
	mu     sync.Mutex
	seen   []netip.AddrPort // Dst of each accepted request
	wg     sync.WaitGroup
}

func (p *udpProxy) handle(r *netstack.UDPRequest) {
	if r.Dst.Port() == portRefused {
		return // not accepted: dropped
	}
	c, err := r.Accept()
	if err != nil {
		return
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, r.Dst)
	p.mu.Unlock()
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer up.Close()
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			up.Write(buf[:n])
		}
	}()
	go func() {
		defer p.wg.Done()
		defer c.Close()
		buf := make([]byte, 65536)
		for {
			up.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			c.Write(buf[:n])
		}
	}()
}

func TestUDP(t *testing.T) {
	needRoot(t)
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	srv := udpEchoServer(t)
	p := &udpProxy{target: srv.LocalAddr().(*net.UDPAddr)}
	t.Cleanup(p.wg.Wait)
	e := newEnvNamed(t, "udpns", "udpt0", netstack.Config{Handler: func(r *netstack.Request) { r.Refuse() }, UDPHandler: p.handle, DNSAddr: dnsAddr})

	for _, dst := range []netip.Addr{virt4, virt6} {
		t.Run("echo/"+dst.String(), func(t *testing.T) {
			c, err := e.ns.dial(t, "udp", netip.AddrPortFrom(dst, portEcho).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Sizes up to what the MTU carries unfragmented, and one
			// association for all of them.
			for _, n := range []int{0, 1, 512, 1472, 9000, 60000} {
				msg := bytes.Repeat([]byte{byte(n)}, n)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("write %d: %v", n, err)
				}
				buf := make([]byte, 65536)
				m, err := c.Read(buf)
				if err != nil {
					t.Fatalf("read %d: %v", n, err)
				}
				if !bytes.Equal(buf[:m], msg) {
					t.Fatalf("echo of %d bytes: got %d bytes", n, m)
				}
			}
		})
	}
	p.mu.Lock()
	if len(p.seen) != 2 {
		t.Errorf("associations %v, want one per tuple (2)", p.seen)
	}
	p.mu.Unlock()

	t.Run("not accepted", func(t *testing.T) {
		c, err := e.ns.dial(t, "udp", netip.AddrPortFrom(virt4, portRefused).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		before := e.st.Stats().UDPDropped
		c.Write([]byte("x"))
		deadline := time.Now().Add(5 * time.Second)
		for e.st.Stats().UDPDropped == before {
			if time.Now().After(deadline) {
				t.Fatal("the datagram was not counted as dropped")
			}
			time.Sleep(time.Millisecond)
		}
	})
	if s := e.st.Stats(); s.UDPTotal != 2 || s.UDPIn == 0 || s.UDPOut == 0 {
		t.Errorf("stats %+v", s)
	}
	e.st.Close()
	if s := e.st.Stats(); s.UDPOpen != 0 {
		t.Errorf("UDPOpen after Close = %d", s.UDPOpen)
	}
}

// TestEchoDecided: with Config.Echo, ping is answered only when Echo says so.
func TestEchoDecided(t *testing.T) {
	var mu sync.Mutex
	up := map[netip.Addr]bool{virt4: true}
	e := newEnvNamed(t, "udpns", "udpt0", netstack.Config{Echo: func(dst netip.Addr, answer func(bool)) {
		mu.Lock()
		ok := up[dst]
		mu.Unlock()
		go answer(ok) // later, from another goroutine, as a probe would
	}})
	ping := func(dst netip.Addr) error {
		if _, err := exec.LookPath("ping"); err != nil {
			t.Skip("no ping")
		}
		out, err := e.ns.exec("ping", "-c", "1", "-W", "1", dst.String()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := ping(virt4); err != nil {
		t.Errorf("ping %s (up): %v", virt4, err)
	}
	if err := ping(netip.MustParseAddr("100.64.0.9")); err == nil {
		t.Error("ping of an address whose path is down was answered")
	}
	if s := e.st.Stats(); s.EchoReplies != 1 || s.EchoDropped != 1 {
		t.Errorf("EchoReplies %d, EchoDropped %d; want 1, 1", s.EchoReplies, s.EchoDropped)
	}
}

// TestDialUDP sends from a virtual source to a server in the namespace,
// which sees that source and answers it.
func TestDialUDP(t *testing.T) {
	e := newEnvNamed(t, "udpns", "udpt0", netstack.Config{})
	var ln *net.UDPConn
	e.ns.do(t, func() (err error) {
		ln, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(100, 64, 0, 1)})
		return err
	})
	defer ln.Close()
	src := netip.MustParseAddrPort("100.64.7.7:0")
	c, err := e.st.DialUDP(src, ln.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := ln.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "ping" || from.Addr() != src.Addr() {
		t.Fatalf("server got %q from %v, %v; want ping from %s", buf[:n], from, err, src.Addr())
	}
	ln.WriteToUDPAddrPort([]byte("pong"), from)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	n, err = c.Read(buf)
	if err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
}
