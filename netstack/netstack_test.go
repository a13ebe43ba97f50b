package netstack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/ockam-go/ockam/netstack"
)

const (
	portEcho     = 7
	portSink     = 9  // server hashes what it receives and sends the digest
	portSource   = 19 // server sends its first 8 bytes' length of data, then digest
	portHTTP     = 80
	portDiscard  = 10 // server discards, then replies one byte at EOF
	portZero     = 11 // server sends the requested number of zero bytes
	portRefused  = 1
	portUndecide = 2
)

// servers starts the loopback servers the proxy Handler dials, in the root
// namespace, and returns their addresses by virtual port.
func servers(t testing.TB) map[uint16]string {
	t.Helper()
	m := map[uint16]string{}
	listen := func(port uint16, serve func(c *net.TCPConn)) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		t.Cleanup(func() { ln.Close(); <-done })
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					serve(c.(*net.TCPConn))
				}()
			}
		}()
		m[port] = ln.Addr().String()
	}
	listen(portEcho, func(c *net.TCPConn) {
		netstack.Copy(c, c)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	listen(portSink, func(c *net.TCPConn) {
		h := sha256.New()
		netstack.Copy(h, c)
		c.Write(h.Sum(nil))
	})
	listen(portSource, func(c *net.TCPConn) {
		var n int64
		if _, err := fmt.Fscanf(c, "%d\n", &n); err != nil {
			return
		}
		h := sha256.New()
		netstack.Copy(io.MultiWriter(c, h), io.LimitReader(newRand(1), n))
		c.Write(h.Sum(nil))
	})
	listen(portDiscard, func(c *net.TCPConn) {
		netstack.Copy(io.Discard, c)
		c.Write([]byte{1})
	})
	listen(portZero, func(c *net.TCPConn) {
		var n int64
		if _, err := fmt.Fscanf(c, "%d\n", &n); err != nil {
			return
		}
		buf := make([]byte, netstack.CopyBufferSize)
		for n > 0 {
			w, err := c.Write(buf[:min(n, int64(len(buf)))])
			if err != nil {
				return
			}
			n -= int64(w)
		}
	})
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.Host)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	m[portHTTP] = ln.Addr().String()
	return m
}

type randReader struct{ r *rand.ChaCha8 }

func newRand(seed byte) io.Reader { return randReader{rand.NewChaCha8([32]byte{seed})} }

func (r randReader) Read(b []byte) (int, error) { return r.r.Read(b) }

// proxy is a dial-then-accept Handler: it dials the server for the
// destination port and copies both ways, propagating half-close.
func proxy(targets map[uint16]string) func(*netstack.Request) {
	return func(r *netstack.Request) {
		switch r.Dst.Port() {
		case portRefused:
			r.Refuse()
			return
		case portUndecide:
			return
		}
		target, ok := targets[r.Dst.Port()]
		if !ok {
			r.Refuse()
			return
		}
		up, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			r.Refuse()
			return
		}
		defer up.Close()
		down, err := r.Accept()
		if err != nil {
			return
		}
		defer down.Close()
		done := make(chan struct{})
		go func() {
			netstack.Copy(up, down)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		netstack.Copy(down, up)
		down.(interface{ CloseWrite() error }).CloseWrite()
		<-done
	}
}

func TestCapture(t *testing.T) {
	targets := servers(t)
	e := newEnv(t, netstack.Config{Handler: proxy(targets), DNSAddr: dnsAddr})

	for _, dst := range []netip.Addr{virt4, virt6} {
		t.Run("echo/"+dst.String(), func(t *testing.T) {
			c, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(dst, portEcho).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := []byte("hello through the tunnel")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			// Half-close: the echo server sees EOF, echoes, closes.
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Errorf("echo = %q, want %q", got, msg)
			}
		})
	}

	t.Run("curl", func(t *testing.T) {
		out, err := e.ns.exec("curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s:%d/", virt4, portHTTP)).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		if want := "hello from " + virt4.String(); string(out) != want {
			t.Errorf("curl = %q, want %q", out, want)
		}
	})

	for _, port := range []uint16{portRefused, portUndecide} {
		t.Run("refuse/"+strconv.Itoa(int(port)), func(t *testing.T) {
			start := time.Now()
			_, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt4, port).String())
			d := time.Since(start)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial error = %v, want connection refused", err)
			}
			if d > 100*time.Millisecond {
				t.Errorf("refused after %v, want < 100ms", d)
			}
			t.Logf("refused in %v", d)
		})
	}

	t.Run("integrity", func(t *testing.T) {
		size := int64(256 << 20)
		if raceEnabled || testing.Short() {
			size = 32 << 20
		}
		// Upload: app -> netstack -> server.
		c, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt4, portSink).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		h := sha256.New()
		start := time.Now()
		if _, err := netstack.Copy(io.MultiWriter(c, h), io.LimitReader(newRand(2), size)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if want := h.Sum(nil); !bytes.Equal(got, want) {
			t.Fatalf("upload digest = %x, want %x", got, want)
		}
		t.Logf("upload %d MiB in %v", size>>20, time.Since(start))

		// Download: server -> netstack -> app.
		c2, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt6, portSource).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(5 * time.Minute))
		fmt.Fprintf(c2, "%d\n", size)
		start = time.Now()
		h2 := sha256.New()
		if _, err := netstack.Copy(h2, io.LimitReader(c2, size)); err != nil {
			t.Fatal(err)
		}
		digest, err := io.ReadAll(c2)
		if err != nil {
			t.Fatal(err)
		}
		if want := h2.Sum(nil); !bytes.Equal(digest, want) {
			t.Fatalf("download digest = %x, want %x", digest, want)
		}
		t.Logf("download %d MiB in %v", size>>20, time.Since(start))
	})

	t.Run("dns", func(t *testing.T) {
		e.st.SetNames(map[string]netip.Addr{"api.ockam": virt4, "API6.ockam.": virt6})
		tests := []struct {
			name  string
			typ   dnsmessage.Type
			rcode dnsmessage.RCode
			want  netip.Addr
		}{
			{"api.ockam.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, virt4},
			{"API.Ockam.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, virt4},
			{"api6.ockam.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, virt6},
			{"api.ockam.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, netip.Addr{}},
			{"nope.ockam.", dnsmessage.TypeA, dnsmessage.RCodeNameError, netip.Addr{}},
		}
		c, err := e.ns.dial(t, "udp", netip.AddrPortFrom(dnsAddr, 53).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i, tt := range tests {
			q := dnsmessage.Message{
				Header:    dnsmessage.Header{ID: uint16(i + 100), RecursionDesired: true},
				Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(tt.name), Type: tt.typ, Class: dnsmessage.ClassINET}},
			}
			b, _ := q.Pack()
			start := time.Now()
			var resp dnsmessage.Message
			for attempt := 0; ; attempt++ {
				c.Write(b)
				c.SetReadDeadline(time.Now().Add(time.Second))
				buf := make([]byte, 1500)
				n, err := c.Read(buf)
				if err != nil {
					if attempt < 3 {
						continue
					}
					t.Fatalf("%s %v: %v", tt.name, tt.typ, err)
				}
				if err := resp.Unpack(buf[:n]); err != nil {
					t.Fatal(err)
				}
				break
			}
			if resp.ID != q.ID || resp.RCode != tt.rcode {
				t.Errorf("%s %v: id %d rcode %v, want id %d rcode %v", tt.name, tt.typ, resp.ID, resp.RCode, q.ID, tt.rcode)
			}
			var got netip.Addr
			for _, a := range resp.Answers {
				switch r := a.Body.(type) {
				case *dnsmessage.AResource:
					got = netip.AddrFrom4(r.A)
				case *dnsmessage.AAAAResource:
					got = netip.AddrFrom16(r.AAAA)
				}
			}
			if got != tt.want {
				t.Errorf("%s %v = %v, want %v", tt.name, tt.typ, got, tt.want)
			}
			t.Logf("%s %v: %v in %v", tt.name, tt.typ, resp.RCode, time.Since(start))
		}
	})

	t.Run("ping", func(t *testing.T) {
		for _, tc := range []struct {
			network, listen string
			dst             netip.Addr
			typ, reply      icmp.Type
			proto           int
		}{
			{"ip4:icmp", "0.0.0.0", netip.MustParseAddr("100.64.3.7"), ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply, 1},
			{"ip6:ipv6-icmp", "::", netip.MustParseAddr("fd7a:6f63:6b6d::77"), ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58},
		} {
			var pc *icmp.PacketConn
			e.ns.do(t, func() (err error) {
				pc, err = icmp.ListenPacket(tc.network, tc.listen)
				return err
			})
			defer pc.Close()
			if tc.proto == 58 {
				// Receive only echo replies.
				var f ipv6.ICMPFilter
				f.SetAll(true)
				f.Accept(ipv6.ICMPTypeEchoReply)
				pc.IPv6PacketConn().SetICMPFilter(&f)
			}
			msg := icmp.Message{Type: tc.typ, Body: &icmp.Echo{ID: 0x4242, Seq: 1, Data: []byte("ockam ping")}}
			b, _ := msg.Marshal(nil)
			start := time.Now()
			if _, err := pc.WriteTo(b, &net.IPAddr{IP: tc.dst.AsSlice()}); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				buf := make([]byte, 1500)
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("ping %s: %v", tc.dst, err)
				}
				m, err := icmp.ParseMessage(tc.proto, buf[:n])
				if err != nil || m.Type != tc.reply {
					continue
				}
				echo, ok := m.Body.(*icmp.Echo)
				if !ok || !bytes.Equal(echo.Data, []byte("ockam ping")) {
					continue
				}
				if got := from.(*net.IPAddr).IP.String(); got != tc.dst.String() {
					t.Errorf("reply from %s, want %s", got, tc.dst)
				}
				t.Logf("ping %s: reply in %v", tc.dst, time.Since(start))
				break
			}
		}
	})

	if t.Failed() {
		return
	}
	s := e.st.Stats()
	t.Logf("stats: %+v", s)
	if s.SYNsRefused < 2 || s.DNSQueries < 5 || s.EchoReplies < 2 || s.FlowsTotal < 4 {
		t.Errorf("stats = %+v: counters too low", s)
	}
}

// TestLifecycle checks that Close joins every goroutine, with flows open,
// and that conns fail after it.
func TestLifecycle(t *testing.T) {
	needRoot(t)
	// Registered first, so it runs after every other cleanup.
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	targets := servers(t)
	e := newEnv(t, netstack.Config{Handler: proxy(targets), DNSAddr: dnsAddr})
	c, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt4, portEcho).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if got := e.st.Stats().FlowsOpen; got != 1 {
		t.Errorf("FlowsOpen = %d, want 1", got)
	}
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := e.st.Stats().FlowsOpen; got != 0 {
		t.Errorf("FlowsOpen after Close = %d, want 0", got)
	}
	_, err = e.st.DialTCP(context.Background(), netip.MustParseAddrPort("100.64.9.9:0"), netip.MustParseAddrPort("100.64.0.1:80"))
	if err == nil {
		t.Error("DialTCP after Close succeeded")
	}
}

// TestOutlet dials from virtual source addresses and checks the server in
// the namespace sees them.
func TestOutlet(t *testing.T) {
	e := newEnv(t, netstack.Config{})
	for _, tc := range []struct{ listen, src, dst string }{
		{"100.64.0.1:0", "100.64.7.7", "100.64.0.1"},
		{"[fd7a:6f63:6b6d::1]:0", "fd7a:6f63:6b6d::77", "fd7a:6f63:6b6d::1"},
	} {
		var ln net.Listener
		e.ns.do(t, func() (err error) {
			ln, err = net.Listen("tcp", tc.listen)
			return err
		})
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		got := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			got <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			io.Copy(c, c)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		src := netip.AddrPortFrom(netip.MustParseAddr(tc.src), 0)
		dst := netip.AddrPortFrom(netip.MustParseAddr(tc.dst), uint16(port))
		c, err := e.st.DialTCP(ctx, src, dst)
		if err != nil {
			t.Fatal(err)
		}
		if g := <-got; g != tc.src {
			t.Errorf("server saw source %s, want %s", g, tc.src)
		}
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
			t.Errorf("echo = %q, %v", b, err)
		}
		c.Close()

		// A closed port is refused.
		_, err = e.st.DialTCP(ctx, src, netip.AddrPortFrom(dst.Addr(), 1))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial closed port: %v, want connection refused", err)
		}
	}
}

// TestDelete removes the interface under a running stack.
func TestDelete(t *testing.T) {
	e := newEnv(t, netstack.Config{})
	e.ns.do(t, func() error {
		if err := tunDelete(e.name); err != nil {
			return err
		}
		if _, err := net.InterfaceByName(e.name); err == nil {
			return fmt.Errorf("interface %s still exists", e.name)
		}
		out, err := e.ns.exec("ip", "route", "show", "table", "all").CombinedOutput()
		if err != nil {
			return err
		}
		if strings.Contains(string(out), "100.64.0.0/10") || strings.Contains(string(out), e.name) {
			return fmt.Errorf("routes left: %s", out)
		}
		return nil
	})
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
}
