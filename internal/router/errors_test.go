package router_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// request sends to route from a and returns the error, failing the test if
// it took the whole timeout.
func request(t *testing.T, a *router.Node, route routing.Route) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.Request(ctx, route, []byte("x"))
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request to %s timed out after %v: no error reply", route, time.Since(start))
	}
	return err
}

// TestErrorReplyNamesTheHop: an address another node does not hold, and
// one it holds but does not let a remote sender reach, both come back at
// once as an error reply naming the address, in the same form.
func TestErrorReplyNamesTheHop(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	got(t, b, "outlet", router.Channel)
	got(t, b, "encryptor", router.Private)
	for _, addr := range []string{"nothing", "outlet", "encryptor"} {
		err := request(t, a, toB.Join(routing.Route{routing.LocalAddr(addr)}))
		var u *router.UnreachableError
		if !errors.As(err, &u) {
			t.Fatalf("request to %s: %v, want an UnreachableError", addr, err)
		}
		if u.Hop != routing.LocalAddr(addr) {
			t.Errorf("request to %s: error names %v", addr, u.Hop)
		}
	}
	// Through a worker that passes the message on (as the hop service
	// does), the error names the hop after it.
	if err := b.Register("hop", router.Public, func(m *routing.Message) error {
		m.Onward = m.Onward[1:]
		return b.Send(context.Background(), m)
	}); err != nil {
		t.Fatal(err)
	}
	err := request(t, a, toB.Join(routing.Route{routing.LocalAddr("hop"), routing.LocalAddr("nope")}))
	if u := (*router.UnreachableError)(nil); !errors.As(err, &u) || u.Hop.Value != "nope" {
		t.Fatalf("through hop: %v, want nope unreachable", err)
	}
	if n := b.ErrorReplies.Load(); n != 4 {
		t.Errorf("b sent %d error replies, want 4", n)
	}
}

// TestRefusedAndMissingAnswerAlike holds the bytes of the error replies
// for a missing and a refused address to each other.
func TestRefusedAndMissingAnswerAlike(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	got(t, b, "aaaa", router.Private)
	replies := make(chan []byte, 4)
	if err := a.Register("w", router.Public, func(m *routing.Message) error {
		out, _ := routing.AppendMessage(nil, &routing.Message{Kind: m.Kind, Onward: m.Onward, Return: m.Return})
		replies <- append(out, bytes.ReplaceAll(m.Payload, []byte("aaaa"), []byte("bbbb"))...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a.AcceptErrors("w")
	for _, addr := range []string{"aaaa", "bbbb"} {
		m := &routing.Message{Onward: toB.Join(routing.Route{routing.LocalAddr(addr)}), Return: routing.Route{routing.LocalAddr("w")}}
		if err := a.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]byte
	for len(got) < 2 {
		select {
		case r := <-replies:
			got = append(got, r)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d error replies, want 2", len(got))
		}
	}
	if !bytes.Equal(got[0], got[1]) {
		t.Fatalf("refused and missing answered differently:\n%x\n%x", got[0], got[1])
	}
}

// TestErrorRepliesAreNotAnswered: an error reply that cannot be delivered
// is dropped, with no error reply of its own (no loops between two nodes),
// and one for a worker that did not ask for them does not reach it.
func TestErrorRepliesAreNotAnswered(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	plain := got(t, b, "plain", router.Public)
	back := got(t, a, "back", router.Public)
	a.AcceptErrors("back")
	fence(t, a, toB) // connected: error replies do not dial
	for _, addr := range []string{"nothing", "plain"} {
		m := &routing.Message{
			Kind:    routing.KindError,
			Onward:  toB.Join(routing.Route{routing.LocalAddr(addr)}),
			Return:  routing.Route{routing.LocalAddr("back")},
			Payload: routing.AppendUnreachable(nil, routing.LocalAddr("x")),
		}
		if err := a.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	fence(t, a, toB)
	select {
	case m := <-plain:
		t.Fatalf("a worker that takes no error replies got one: %v", m)
	case m := <-back:
		t.Fatalf("an error reply was answered: %v", m)
	default:
	}
	if n := b.ErrorReplies.Load(); n != 0 {
		t.Fatalf("b sent %d error replies for error replies", n)
	}
}

// TestErrorRepliesAreRateLimited: a sender that keeps naming missing
// addresses gets at most MaxErrorReplies answers a second.
func TestErrorRepliesAreRateLimited(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	const sent = 200
	start := time.Now()
	for i := 0; i < sent; i++ {
		m := &routing.Message{Onward: toB.Join(routing.Route{routing.LocalAddr("nothing")}), Return: routing.Route{routing.LocalAddr("nobody")}}
		if err := a.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	fence(t, a, toB)
	secs := int(time.Since(start)/time.Second) + 1
	replied, limited := b.ErrorReplies.Load(), b.ErrorRepliesLimited.Load()
	if replied+limited != sent {
		t.Fatalf("replied %d + limited %d, want %d in all", replied, limited, sent)
	}
	if max := uint64((secs + 1) * router.MaxErrorReplies); replied > max {
		t.Fatalf("replied %d times in %d s, want at most %d", replied, secs, max)
	}
	if limited == 0 {
		t.Fatal("nothing limited")
	}
}

// TestErrorReplyNeverDials: an error reply whose next hop is a TCP address
// without a connection is dropped; the node does not connect there.
func TestErrorReplyNeverDials(t *testing.T) {
	n := router.New(router.Config{})
	defer n.Close()
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	m := &routing.Message{
		Kind:    routing.KindError,
		Onward:  routing.Route{routing.TCPAddr(sink.Addr().String()), routing.LocalAddr("x")},
		Payload: routing.AppendUnreachable(nil, routing.LocalAddr("y")),
	}
	if err := n.Send(context.Background(), m); err == nil {
		t.Fatal("an error reply with no connection for its next hop was sent")
	}
	// Send dials on the caller's goroutine: had it connected, the link
	// would be open now.
	if links := n.Links(); len(links) != 0 {
		t.Fatalf("the node connected for an error reply: %v", links[0].Remote)
	}
}
