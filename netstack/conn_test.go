package netstack_test

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/nettest"

	"github.com/ockam-go/ockam/netstack"
)

// TestConn runs the captured conn (the stack's side) against the
// application's kernel socket through x/net/nettest.
func TestConn(t *testing.T) {
	accepted := make(chan net.Conn, 1)
	e := newEnv(t, netstack.Config{Handler: func(r *netstack.Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		accepted <- c
	}})
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		app, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt4, 5555).String())
		if err != nil {
			return nil, nil, nil, err
		}
		c := <-accepted
		return c, app, func() { c.Close(); app.Close() }, nil
	})
}
