package router_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns a node b listening on loopback and a node a, and the route
// prefix from a to b.
func pair(t *testing.T, cfgB router.Config) (a, b *router.Node, toB routing.Route) {
	t.Helper()
	b = router.New(cfgB)
	t.Cleanup(func() { b.Close() })
	addr, err := b.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a = router.New(router.Config{})
	t.Cleanup(func() { a.Close() })
	return a, b, routing.Route{routing.TCPAddr(addr.String())}
}

// got registers a worker that records what reaches it.
func got(t *testing.T, n *router.Node, addr string, a router.Access) chan *routing.Message {
	t.Helper()
	ch := make(chan *routing.Message, 16)
	if err := n.Register(addr, a, func(m *routing.Message) error {
		ch <- &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: append([]byte(nil), m.Payload...), Peer: m.Peer, Via: m.Via}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ch
}

func waitRefused(t *testing.T, n *router.Node, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Refused.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("Refused = %d, want %d", n.Refused.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fence sends to b's echo from a and waits for the reply: b has handled
// what a sent before.
func fence(t *testing.T, a *router.Node, toB routing.Route) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Request(ctx, toB.Join(routing.Route{routing.LocalAddr(router.EchoAddress)}), []byte("fence")); err != nil {
		t.Fatal(err)
	}
}

// TestOverTCPOnlyPublicWorkers: a message from another node reaches public
// workers only, and never makes the node dial.
func TestOverTCPOnlyPublicWorkers(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	pub := got(t, b, "pub", router.Public)
	ch := got(t, b, "ch", router.Channel)
	priv := got(t, b, "priv", router.Private)
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx := context.Background()
	for _, to := range []routing.Route{
		{routing.LocalAddr("ch")},
		{routing.LocalAddr("priv")},
		{routing.TCPAddr(sink.Addr().String()), routing.LocalAddr("x")},
		{routing.LocalAddr("pub")},
	} {
		if err := a.Send(ctx, &routing.Message{Onward: toB.Join(to), Return: routing.Route{routing.LocalAddr("r")}, Payload: []byte("hi")}); err != nil {
			t.Fatal(err)
		}
	}
	m := <-pub
	if m.Via == "" {
		t.Fatal("a message from another node reached its worker without Via")
	}
	fence(t, a, toB)
	waitRefused(t, b, 3)
	select {
	case m := <-ch:
		t.Fatalf("channel worker got %q over plain TCP", m.Payload)
	case m := <-priv:
		t.Fatalf("private worker got %q over plain TCP", m.Payload)
	default:
	}
	sink.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := sink.Accept(); err == nil {
		c.Close()
		t.Fatal("b dialled an address named by a remote sender")
	}
}

// decryptor plays a secure channel's decryptor on b: what reaches it over
// TCP comes out as a message from peer, as a channel delivers it.
func decryptor(t *testing.T, b *router.Node, peer string) {
	t.Helper()
	err := b.Register("dec", router.Public, func(m *routing.Message) error {
		inner := &routing.Message{Onward: m.Onward[1:].Clone(), Return: routing.Route{routing.LocalAddr("enc")}, Payload: m.Payload, Peer: peer}
		return b.Send(context.Background(), inner)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestChannelPeers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
	}{{"may not route", false}, {"may route", true}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, toB := pair(t, router.Config{AllowRouting: func(p string) bool { return tc.allow && p == "Ipeer" }})
			decryptor(t, b, "Ipeer")
			ch := got(t, b, "ch", router.Channel)
			priv := got(t, b, "priv", router.Private)
			// A third node the peer would like b to reach.
			c := router.New(router.Config{})
			defer c.Close()
			onC := got(t, c, "onc", router.Public)
			cAddr, _ := c.Listen("127.0.0.1:0")
			ctx := context.Background()
			via := func(r ...routing.Address) routing.Route {
				return toB.Join(append(routing.Route{routing.LocalAddr("dec")}, r...))
			}
			for _, to := range []routing.Route{
				via(routing.LocalAddr("ch")),
				via(routing.LocalAddr("priv")),
				via(routing.TCPAddr(cAddr.String()), routing.LocalAddr("onc")),
			} {
				if err := a.Send(ctx, &routing.Message{Onward: to, Return: routing.Route{routing.LocalAddr("r")}, Payload: []byte("hi")}); err != nil {
					t.Fatal(err)
				}
			}
			if m := <-ch; m.Peer != "Ipeer" {
				t.Fatalf("channel worker got Peer %q", m.Peer)
			}
			fence(t, a, toB)
			if !tc.allow {
				waitRefused(t, b, 2)
				select {
				case <-priv:
					t.Fatal("private worker reached by a channel peer that may not route")
				case <-onC:
					t.Fatal("b dialled onward for a channel peer that may not route")
				default:
				}
				return
			}
			select {
			case <-priv:
			case <-time.After(5 * time.Second):
				t.Fatal("private worker not reached by a peer allowed to route")
			}
			select {
			case m := <-onC:
				if string(m.Payload) != "hi" {
					t.Fatalf("onward message %q", m.Payload)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("b did not route onward for a peer allowed to")
			}
			if n := b.Refused.Load(); n != 0 {
				t.Fatalf("Refused = %d for a peer allowed to route", n)
			}
		})
	}
}

func TestRegisterChecksAccess(t *testing.T) {
	n := router.New(router.Config{})
	defer n.Close()
	if err := n.Register("x", 0, func(*routing.Message) error { return nil }); err == nil {
		t.Fatal("Register with no access level succeeded")
	}
	if err := n.Register("x", router.Public, func(*routing.Message) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := n.Register("x", router.Public, func(*routing.Message) error { return nil }); !errors.Is(err, router.ErrAddressInUse) {
		t.Fatalf("second Register at x: %v", err)
	}
}

// TestSendAll: a batch to a TCP hop arrives in order and leaves the
// caller's messages as they were; a batch to a local worker is delivered
// message by message.
func TestSendAll(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	pub := got(t, b, "pub", router.Public)
	loc := got(t, a, "loc", router.Private)
	ctx := context.Background()
	fence(t, a, toB) // the connection exists: the batch goes to it
	for _, to := range []routing.Route{toB.Join(routing.Route{routing.LocalAddr("pub")}), {routing.LocalAddr("loc")}} {
		ms := make([]routing.Message, 5)
		for i := range ms {
			ms[i] = routing.Message{Onward: to, Return: routing.Route{routing.LocalAddr("r")}, Payload: []byte{byte(i)}}
		}
		if err := a.SendAll(ctx, ms, true); err != nil {
			t.Fatal(err)
		}
		for i := range ms {
			if ms[i].Onward.String() != to.String() {
				t.Fatalf("SendAll changed message %d's onward route to %s", i, ms[i].Onward)
			}
		}
		ch := pub
		if len(to) == 1 {
			ch = loc
		}
		for i := range ms {
			select {
			case m := <-ch:
				if m.Payload[0] != byte(i) {
					t.Fatalf("to %s: message %d arrived as %d", to, m.Payload[0], i)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("to %s: message %d lost", to, i)
			}
		}
	}
}
