package netstack_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ockam-go/ockam/netstack"
)

// TestOutletLoopback dials a server on 127.0.0.1 from a virtual source:
// the outlet netstack mode's usual target. It needs AllowLoopback in the
// stack and route_localnet on the interface.
func TestOutletLoopback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
		want  bool
	}{
		{"allowed", true, true},
		{"gvisor drops loopback", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, netstack.Config{AllowLoopback: tc.allow})
			if out, err := e.ns.exec("sysctl", "-qw", "net.ipv4.conf."+e.name+".route_localnet=1").CombinedOutput(); err != nil {
				t.Fatalf("sysctl: %v: %s", err, out)
			}
			var ln net.Listener
			e.ns.do(t, func() (err error) {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
				return err
			})
			defer ln.Close()
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				got <- c.RemoteAddr().(*net.TCPAddr).IP.String()
				io.Copy(c, c)
			}()
			timeout := 5 * time.Second
			if !tc.want {
				timeout = 300 * time.Millisecond // the SYN-ACK is dropped: wait for nothing long
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			src := netip.MustParseAddrPort("100.64.7.7:0")
			c, err := e.st.DialTCP(ctx, src, ln.Addr().(*net.TCPAddr).AddrPort())
			if !tc.want {
				if err == nil {
					c.Close()
					t.Fatal("DialTCP to 127.0.0.1 succeeded without AllowLoopback")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if g := <-got; g != src.Addr().String() {
				t.Errorf("server saw %s, want %s", g, src.Addr())
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "ping")
			b := make([]byte, 4)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
				t.Errorf("echo = %q, %v", b, err)
			}
		})
	}
}
