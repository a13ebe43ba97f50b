package secure_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/channel"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
	"github.com/ockam-go/ockam/relay"
)

type side struct {
	n   *router.Node
	id  *identity.Secret
	mgr *secure.Manager
}

func newSide(t testing.TB, trust func(identity.Identifier) error, opts ...func(*secure.Config)) *side {
	t.Helper()
	id, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := router.New(router.Config{})
	s := &side{n: n, id: id}
	if trust == nil {
		trust = func(identity.Identifier) error { return fmt.Errorf("nobody is trusted") }
	}
	cfg := secure.Config{Identity: id, Trust: trust}
	for _, o := range opts {
		o(&cfg)
	}
	s.mgr, err = secure.NewManager(n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.mgr.Close(); n.Close() })
	return s
}

// recorder is a TCP proxy that keeps every byte it forwards.
type recorder struct {
	ln    net.Listener
	mu    sync.Mutex
	buf   bytes.Buffer
	conns []net.Conn
	wg    sync.WaitGroup
}

func newRecorder(t *testing.T, target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, u)
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); io.Copy(u, io.TeeReader(c, r)); u.Close() }()
			go func() { defer r.wg.Done(); io.Copy(c, io.TeeReader(u, r)); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}

// topology: a -> relay -> b, with b registered as "b" and listening at api.
type topology struct {
	a, b    *side
	relayN  *router.Node
	relayAt string
	reg     *relay.Registration
}

func newTopology(t testing.TB, bTrustsA bool, opts ...func(*secure.Config)) *topology {
	t.Helper()
	tp := &topology{}
	var aID, bID identity.Identifier
	tp.a = newSide(t, func(p identity.Identifier) error { return channel.TrustList(bID)(p) }, opts...)
	aID = tp.a.id.Identifier()
	tp.b = newSide(t, func(p identity.Identifier) error {
		if bTrustsA {
			return channel.TrustList(aID)(p)
		}
		return fmt.Errorf("%s is not trusted here", p.Short())
	}, opts...)
	bID = tp.b.id.Identifier()
	if _, err := tp.b.mgr.Listen(secure.DefaultListener, nil, false); err != nil {
		t.Fatal(err)
	}
	tp.relayN = router.New(router.Config{})
	t.Cleanup(func() { tp.relayN.Close() })
	addr, err := tp.relayN.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := relay.NewService(tp.relayN, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	tp.relayAt = addr.String()
	tp.reg, err = relay.Register(tp.b.n, routing.Route{routing.TCPAddr(tp.relayAt)}, "b", tp.b.id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.reg.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.reg.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return tp
}

func route(t testing.TB, s string) routing.Route {
	t.Helper()
	r, err := routing.ParseRoute(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMain checks, after every test and its cleanups, that no goroutine of
// a node, channel or transport is left behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestChannelThroughRelayHidesPlaintext(t *testing.T) {
	t.Parallel()
	tp := newTopology(t, true)
	rec := newRecorder(t, tp.relayAt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := tp.a.mgr.Create(ctx, route(t, "/tcp/"+rec.ln.Addr().String()+"/service/forward_to_b/service/api"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Peer() != tp.b.id.Identifier() {
		t.Fatalf("peer = %s, want b", ch.Peer())
	}
	secret := []byte("the quick brown plaintext that the relay must never see")
	reply, err := tp.a.n.Request(ctx, append(ch.Route(), routing.LocalAddr(router.EchoAddress)), secret)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reply.Payload, secret) {
		t.Fatalf("echo = %q", reply.Payload)
	}
	if reply.Peer != tp.b.id.Identifier().String() {
		t.Fatalf("reply Peer = %q, want b's identifier", reply.Peer)
	}
	seen := rec.bytes()
	if len(seen) < 2*len(secret) {
		t.Fatalf("recorder saw only %d bytes: traffic did not go through it", len(seen))
	}
	if bytes.Contains(seen, secret) || bytes.Contains(seen, secret[:16]) {
		t.Fatal("plaintext visible in the bytes the relay forwarded")
	}
	if got := ch.Stats(); got.Sent == 0 || got.Received == 0 {
		t.Fatalf("stats = %+v", got)
	}
	ch.Close()
	// The responder hears the authenticated close and removes its end.
	deadline := time.Now().Add(5 * time.Second)
	for len(tp.b.mgr.Channels()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("responder channel not closed after initiator closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUntrustedRefusedOnBothSides(t *testing.T) {
	t.Parallel()
	tp := newTopology(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tp.a.mgr.Create(ctx, route(t, "/tcp/"+tp.relayAt+"/service/forward_to_b/service/api"), nil)
	if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), tp.a.id.Identifier().Short()) {
		t.Fatalf("err = %v, want a refusal naming a's identifier", err)
	}
	if n := len(tp.b.mgr.Channels()); n != 0 {
		t.Fatalf("responder kept %d channels", n)
	}
	// And a's own policy refuses an identity it does not trust.
	other := newSide(t, func(identity.Identifier) error { return nil })
	if _, err := other.mgr.Listen("api", nil, true); err != nil {
		t.Fatal(err)
	}
	oaddr, _ := other.n.Listen("127.0.0.1:0")
	_, err = tp.a.mgr.Create(ctx, route(t, "/tcp/"+oaddr.String()+"/service/api"), nil)
	if err == nil || !strings.Contains(err.Error(), other.id.Identifier().Short()) {
		t.Fatalf("err = %v, want it to name the untrusted listener", err)
	}
}

func TestNoListenerTimesOutCleanly(t *testing.T) {
	t.Parallel()
	a := newSide(t, nil, func(c *secure.Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	sink := router.New(router.Config{})
	defer sink.Close()
	sink.Register("blackhole", router.Public, func(*routing.Message) error { return nil })
	addr, _ := sink.Listen("127.0.0.1:0")
	start := time.Now()
	_, err := a.mgr.Create(context.Background(), route(t, "/tcp/"+addr.String()+"/service/blackhole"), nil)
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	a.mgr.Close()
	a.n.Close()
}

// Regression: a message the peer cannot deliver past the channel (to an
// address that does not exist there, like a late credit for a finished
// flow) must not make the peer's node send an unknown-channel notice: the
// channel stays up.
func TestUndeliverableInnerMessageKeepsChannel(t *testing.T) {
	t.Parallel()
	a := newSide(t, func(identity.Identifier) error { return nil })
	bid, _ := identity.Generate(nil)
	bn := router.New(router.Config{})
	t.Cleanup(func() { bn.Close() })
	mgr, err := secure.NewManager(bn, secure.Config{Identity: bid, Trust: func(identity.Identifier) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Close)
	svc, err := relay.NewService(bn, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	mgr.Listen("api", nil, false)
	addr, _ := bn.Listen("127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ch, err := a.mgr.Create(ctx, route(t, "/tcp/"+addr.String()+"/service/api"), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := ch.Stats().Epoch
	for i := 0; i < 5; i++ {
		a.n.Send(ctx, &routing.Message{Onward: append(ch.Route(), routing.LocalAddr("no_such_flow")), Return: routing.Route{routing.LocalAddr("x")}, Payload: []byte("late credit")})
	}
	// The channel still carries messages, on the same session.
	reply, err := a.n.Request(ctx, append(ch.Route(), routing.LocalAddr(router.EchoAddress)), []byte("still up"))
	if err != nil || string(reply.Payload) != "still up" {
		t.Fatalf("echo after undeliverable messages: %v", err)
	}
	if got := ch.Stats(); got.Epoch != before || ch.State() != "up" {
		t.Fatalf("channel went down: state %s, epoch %d -> %d, last error %q", ch.State(), before, got.Epoch, got.LastError)
	}
}

// A responder that closes its end (its node stopping gracefully) does not end
// the initiator's channel: the initiator re-establishes at the same address
// once a listener answers again, and messages flow on a new session.
func TestPeerCloseHealsInitiator(t *testing.T) {
	t.Parallel()
	fast := func(c *secure.Config) { c.BackoffMin, c.BackoffMax = 20*time.Millisecond, 100*time.Millisecond }
	a := newSide(t, func(identity.Identifier) error { return nil }, fast)
	bn := router.New(router.Config{})
	t.Cleanup(func() { bn.Close() })
	bid, _ := identity.Generate(nil)
	newB := func() *secure.Manager {
		m, err := secure.NewManager(bn, secure.Config{Identity: bid, Trust: func(identity.Identifier) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Listen(secure.DefaultListener, nil, false); err != nil {
			t.Fatal(err)
		}
		return m
	}
	b := newB()
	addr, err := bn.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := a.mgr.Create(ctx, route(t, "/tcp/"+addr.String()+"/service/api"), nil)
	if err != nil {
		t.Fatal(err)
	}
	echo := append(ch.Route(), routing.LocalAddr(router.EchoAddress))
	if _, err := a.n.Request(ctx, echo, []byte("before")); err != nil {
		t.Fatal(err)
	}
	b.Close() // tells a: an authenticated close
	deadline := time.Now().Add(5 * time.Second)
	for ch.State() == "up" {
		if time.Now().After(deadline) {
			t.Fatal("initiator did not see the peer's close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := a.mgr.Channel(ch.Address()); got != ch {
		t.Fatalf("initiator dropped its channel on the peer's close (state %s)", ch.State())
	}
	b = newB()
	t.Cleanup(b.Close)
	if _, err := ch.WaitUp(ctx); err != nil {
		t.Fatalf("channel did not come back: %v", err)
	}
	if r, err := a.n.Request(ctx, echo, []byte("after")); err != nil || string(r.Payload) != "after" {
		t.Fatalf("echo after the peer came back: %v", err)
	}
	if e := ch.Stats().Epoch; e < 2 {
		t.Fatalf("epoch %d, want a new session", e)
	}
}

// TestConcurrentSendersSealInOrder: 32 goroutines sending through one
// channel at once: every message arrives, none behind a later nonce (each
// is sealed where its place in the connection's queue is decided), so the
// replay window is never what keeps them.
func TestConcurrentSendersSealInOrder(t *testing.T) {
	tp := newTopology(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := tp.a.mgr.Create(ctx, route(t, "/tcp/"+tp.relayAt+"/service/forward_to_b/service/api"), []identity.Identifier{tp.b.id.Identifier()})
	if err != nil {
		t.Fatal(err)
	}
	const senders, each = 32, 200
	got := make(chan struct{}, senders*each)
	if err := tp.a.n.Register("sink", router.Channel, func(*routing.Message) error {
		got <- struct{}{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for k := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := 64
			if k%8 == 0 {
				size = 16 << 10 // some large messages among the small
			}
			for range each {
				m := routing.Message{
					Onward:  routing.Route{routing.LocalAddr(ch.Address()), routing.LocalAddr(router.EchoAddress)},
					Return:  routing.Route{routing.LocalAddr("sink")},
					Payload: make([]byte, size),
				}
				if err := tp.a.n.Send(context.Background(), &m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	wait := time.After(30 * time.Second)
	for i := range senders * each {
		select {
		case <-got:
		case <-wait:
			t.Fatalf("%d of %d echoes came back", i, senders*each)
		}
	}
	for _, c := range tp.b.mgr.Channels() {
		if st := c.Stats(); st.Late != 0 || st.Rejected != 0 {
			t.Errorf("responder %s: %d messages late, %d rejected; want none", c.Address(), st.Late, st.Rejected)
		}
	}
}
