package socks

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestUDPAssociate(t *testing.T) {
	ended := make(chan Addr, 4)
	srv := &Server{
		Dial: func(context.Context, Addr) (Flow, error) { return nil, &Error{Reply: NotAllowed, Err: io.EOF} },
		UDP: func(ctx context.Context, dst Addr, c net.Conn) error {
			defer func() { ended <- dst }()
			buf := make([]byte, 65536)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return nil
				}
				c.Write(append([]byte("echo "), buf[:n]...))
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(AppendGreeting(nil, MethodNoAuth))
	io.ReadFull(c, make([]byte, 2))
	c.Write(AppendRequest(nil, Request{Cmd: CmdAssociate, Dst: Addr{IP: netip.IPv4Unspecified()}}))
	b := make([]byte, 10)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	rep, bnd, _, err := ParseReply(b)
	if err != nil || rep != Succeeded || bnd.Port == 0 {
		t.Fatalf("associate reply %v %v %v", rep, bnd, err)
	}
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bnd.IP, bnd.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(5 * time.Second))
	for _, dst := range []Addr{{IP: netip.MustParseAddr("100.64.0.2"), Port: 53}, {Name: "api.ockam", Port: 8125}} {
		for _, msg := range []string{"one", "two"} {
			u.Write(AppendUDP(nil, dst, []byte(msg)))
			buf := make([]byte, 1500)
			n, err := u.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			src, data, err := ParseUDP(buf[:n])
			if err != nil || src != dst || !bytes.Equal(data, []byte("echo "+msg)) {
				t.Errorf("reply from %v: %q, %v; want %v %q", src, data, err, dst, "echo "+msg)
			}
		}
	}
	// Closing the control connection ends the association and its
	// destinations.
	c.Close()
	for i := 0; i < 2; i++ {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a destination outlived the control connection")
		}
	}
}

// TestUDPAssociateServerStops: stopping the server ends an association
// whose control connection stays open.
func TestUDPAssociateServerStops(t *testing.T) {
	srv := &Server{
		Dial: func(context.Context, Addr) (Flow, error) { return nil, io.EOF },
		UDP:  func(ctx context.Context, dst Addr, c net.Conn) error { <-ctx.Done(); return nil },
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(AppendGreeting(nil, MethodNoAuth))
	io.ReadFull(c, make([]byte, 2))
	c.Write(AppendRequest(nil, Request{Cmd: CmdAssociate, Dst: Addr{IP: netip.IPv4Unspecified()}}))
	io.ReadFull(c, make([]byte, 10))
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return with an association open")
	}
}
