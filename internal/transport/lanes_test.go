package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/internal/routing"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (t *Transport) socketCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sockets
}

func (t *Transport) greeting() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.hellos)
}

// onlyConn returns the transport's one connection (bundle head).
func onlyConn(t *testing.T, tr *Transport) *Conn {
	t.Helper()
	var c *Conn
	waitFor(t, "one connection", func() bool {
		cs := tr.Conns()
		if len(cs) == 1 {
			c = cs[0]
		}
		return len(cs) == 1
	})
	return c
}

// dialLanes dials srv at addr from cli and waits until both sides see a
// bundle of n lanes; it returns the dialler's head.
func dialLanes(t *testing.T, cli, srv *Transport, addr net.Addr, n int) *Conn {
	t.Helper()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lanes at the dialler", func() bool { return len(c.Lanes()) == n })
	sc := onlyConn(t, srv)
	waitFor(t, "the lanes at the acceptor", func() bool { return len(sc.Lanes()) == n })
	return c
}

// TestBundleSpreadsAndKeepsOrder: a dialled peer gets a bundle of 4 lanes,
// the accepting side sees one connection of 4 lanes, a message goes on the
// lane its hint names (modulo 4), arrives with that lane, and the messages
// of one hint stay in order.
func TestBundleSpreadsAndKeepsOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	const hints, per = 8, 500
	type rec struct {
		lane uint8
		hint byte
		seq  uint32
	}
	got := make(chan rec, hints*per)
	srv := New(Config{OnMessage: func(c *Conn, m *routing.Message) {
		got <- rec{m.Lane, m.Payload[0], binary.BigEndian.Uint32(m.Payload[1:])}
	}})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Lanes: 4})
	defer cli.Close()
	c := dialLanes(t, cli, srv, addr, 4)
	if n := srv.socketCount(); n != 4 {
		t.Fatalf("acceptor counts %d sockets, want 4", n)
	}
	for i, l := range c.Lanes() {
		if l.LaneIndex() != i || c.Lane(uint8(i)) != l || c.Lane(uint8(i+4)) != l {
			t.Fatalf("lane %d: index %d, Lane(%d) = %p, want %p", i, l.LaneIndex(), i, c.Lane(uint8(i)), l)
		}
	}

	var wg sync.WaitGroup
	for h := range hints {
		wg.Go(func() {
			for s := range per {
				p := binary.BigEndian.AppendUint32([]byte{byte(h)}, uint32(s))
				p = append(p, bytes.Repeat([]byte{'x'}, 1000*(s%5))...)
				m := &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: p}
				if err := c.Lane(uint8(h)).Send(m); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := make([]uint32, hints)
	perLane := make([]int, 4)
	for range hints * per {
		var r rec
		select {
		case r = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("messages lost")
		}
		if want := r.hint % 4; r.lane != want {
			t.Fatalf("hint %d arrived on lane %d, want %d", r.hint, r.lane, want)
		}
		if r.seq != next[r.hint] {
			t.Fatalf("hint %d: got seq %d, want %d (out of order)", r.hint, r.seq, next[r.hint])
		}
		next[r.hint]++
		perLane[r.lane]++
	}
	for i, n := range perLane {
		if n != 2*per {
			t.Errorf("lane %d carried %d messages, want %d", i, n, 2*per)
		}
	}
}

// TestLaneEndClosesBundle: one lane ending ends the bundle on both sides,
// each side's OnClose runs once, and the next Dial opens a new bundle.
func TestLaneEndClosesBundle(t *testing.T) {
	defer goleak.VerifyNone(t)
	var srvClosed, cliClosed atomic.Int32
	srv := New(Config{OnMessage: func(*Conn, *routing.Message) {}, OnClose: func(*Conn, error) { srvClosed.Add(1) }})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}, OnClose: func(*Conn, error) { cliClosed.Add(1) }, Lanes: 4})
	defer cli.Close()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "4 lanes", func() bool { return len(c.Lanes()) == 4 })
	sc := onlyConn(t, srv)
	waitFor(t, "4 lanes at the acceptor", func() bool { return len(sc.Lanes()) == 4 })

	c.Lane(2).Close()
	for _, d := range []<-chan struct{}{c.Done(), sc.Done()} {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			t.Fatal("bundle not closed after one lane ended")
		}
	}
	waitFor(t, "every socket closed", func() bool { return srv.socketCount() == 0 && cli.socketCount() == 0 })
	if srvClosed.Load() != 1 || cliClosed.Load() != 1 {
		t.Fatalf("OnClose ran %d times at the acceptor, %d at the dialler; want once each", srvClosed.Load(), cliClosed.Load())
	}
	if cli.Outbound(addr.String()) != nil || len(srv.Conns()) != 0 {
		t.Fatal("a closed bundle is still addressable")
	}
	c2, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c {
		t.Fatal("Dial returned the closed bundle")
	}
	waitFor(t, "the new bundle's 4 lanes", func() bool { return len(c2.Lanes()) == 4 })
	if err := c2.Lane(3).Send(&routing.Message{Onward: routing.Route{routing.LocalAddr("x")}}); err != nil {
		t.Fatal(err)
	}
}

// rawLane connects from local (nil: any) and writes version, hello.
func rawLane(t *testing.T, addr string, local net.IP, h hello) net.Conn {
	t.Helper()
	d := net.Dialer{}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(h.append([]byte{ProtocolVersion})); err != nil {
		t.Fatal(err)
	}
	return nc
}

// refused reports whether the acceptor closed nc after its version byte.
func refused(t *testing.T, nc net.Conn) bool {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var v [1]byte
	if _, err := io.ReadFull(nc, v[:]); err != nil {
		return true
	}
	_, err := nc.Read(v[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("neither refused nor closed")
	}
	return err != nil
}

// TestLaneJoinRules: a lane joins only a bundle of its size, from the same
// address, into a free slot; anything else is refused and leaves the bundle
// as it was.
func TestLaneJoinRules(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer srv.Close()
	addr, err := srv.Listen("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	a := addr.String()
	_, port, _ := net.SplitHostPort(a)
	a = "127.0.0.1:" + port
	h := hello{lane: 0, lanes: 2}
	h.bundle[0] = 1
	rawLane(t, a, nil, h)
	head := onlyConn(t, srv)

	dup := rawLane(t, a, nil, h)
	if !refused(t, dup) {
		t.Error("a second lane 0 of the bundle was taken")
	}
	size := rawLane(t, a, nil, hello{bundle: h.bundle, lane: 1, lanes: 3})
	if !refused(t, size) {
		t.Error("a lane of another bundle size was taken")
	}
	other := rawLane(t, a, net.ParseIP("127.0.0.2"), hello{bundle: h.bundle, lane: 1, lanes: 2})
	if !refused(t, other) {
		t.Error("a lane from another address was taken")
	}
	if n := len(head.Lanes()); n != 1 {
		t.Fatalf("bundle has %d lanes after refused joins, want 1", n)
	}
	waitFor(t, "refused sockets released", func() bool { return srv.socketCount() == 1 })
	rawLane(t, a, nil, hello{bundle: h.bundle, lane: 1, lanes: 2})
	waitFor(t, "lane 1 joined", func() bool { return len(head.Lanes()) == 2 })
	if n := len(srv.Conns()); n != 1 {
		t.Fatalf("%d connections, want the one bundle", n)
	}
}

// TestLanesOverPerIPLimit: lanes beyond the acceptor's per-address limit are
// refused; the bundle lives on with the lanes it has, and a message for a
// missing lane goes on the head.
func TestLanesOverPerIPLimit(t *testing.T) {
	defer goleak.VerifyNone(t)
	got := make(chan uint8, 1)
	srv := New(Config{OnMessage: func(c *Conn, m *routing.Message) { got <- m.Lane }, Limits: Limits{MaxConnsPerIP: 3}})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Lanes: 4})
	defer cli.Close()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lanes that fit", func() bool { return len(c.Lanes()) == 3 && cli.greeting() == 0 && cli.socketCount() == 3 })
	if srv.socketCount() != 3 {
		t.Fatalf("acceptor holds %d sockets, want 3", srv.socketCount())
	}
	var missing uint8
	for i := range uint8(4) {
		if c.Lane(i) == c && i != 0 {
			missing = i
		}
	}
	if missing == 0 {
		t.Fatal("no lane missing")
	}
	if err := c.Lane(missing).Send(&routing.Message{Onward: routing.Route{routing.LocalAddr("x")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l != 0 {
			t.Fatalf("message for missing lane %d arrived on lane %d, want the head's 0", missing, l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message for a missing lane lost")
	}
	select {
	case <-c.Done():
		t.Fatalf("bundle closed: %v", c.Err())
	default:
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []hello{{lane: 0, lanes: 1}, {bundle: [16]byte{1, 2, 3}, lane: 3, lanes: 4}, {lane: MaxLanes - 1, lanes: MaxLanes}} {
		b := h.append(nil)
		if len(b) != helloLen {
			t.Fatalf("%+v: %d bytes, want %d", h, len(b), helloLen)
		}
		got, err := parseHello(b)
		if err != nil || got != h {
			t.Fatalf("parseHello(%x) = %+v, %v; want %+v", b, got, err, h)
		}
		for i := range b {
			if _, err := parseHello(b[:i]); err == nil {
				t.Fatalf("a %d-byte prefix parsed", i)
			}
		}
	}
	for _, bad := range []hello{{lane: 0, lanes: 0}, {lane: 1, lanes: 1}, {lane: 0, lanes: MaxLanes + 1}} {
		if _, err := parseHello(bad.append(nil)); err == nil {
			t.Errorf("%+v parsed", bad)
		}
	}
}

func FuzzParseHello(f *testing.F) {
	f.Add(hello{lanes: 4, lane: 2}.append(nil))
	f.Add(make([]byte, helloLen))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHello(b)
		if err != nil {
			return
		}
		if h.lanes == 0 || h.lanes > MaxLanes || h.lane >= h.lanes {
			t.Fatalf("parsed an invalid hello %+v", h)
		}
		if got := h.append(nil); !bytes.Equal(got, b) {
			t.Fatalf("round trip: %x, want %x", got, b)
		}
	})
}

// TestCloseDeliversWhatWasQueued: a transport closed while its writers
// still hold queued frames on a 4-lane bundle, behind a peer that is not
// reading yet, delivers every message. Its writers empty the queues before
// the sockets close, and the peer keeps reading the lanes that still carry
// data after the first lane's EOF (lane 0 carries one message, so its EOF
// comes first).
func TestCloseDeliversWhatWasQueued(t *testing.T) {
	defer goleak.VerifyNone(t)
	var got atomic.Int64
	gate := make(chan struct{})
	closed := make(chan error, 1)
	srv := New(Config{
		OnMessage: func(c *Conn, m *routing.Message) { <-gate; got.Add(1) },
		OnClose:   func(c *Conn, err error) { closed <- err },
	})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Lanes: 4})
	c := dialLanes(t, cli, srv, addr, 4)
	m := &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: bytes.Repeat([]byte{'x'}, 1000)}
	if err := c.Lane(0).Send(m); err != nil {
		t.Fatal(err)
	}
	sent, queued := int64(1), int64(0)
	for _, l := range c.Lanes()[1:] {
		// The socket buffers fill first, then the writer's queue: stop
		// at half of SendQueueBytes, below where Send would wait.
		for i := 0; l.Queued() < SendQueueBytes/2; i++ {
			if i > 1e6 {
				t.Fatal("the queue never filled")
			}
			if err := l.Send(m); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		queued += l.Queued()
	}
	done := make(chan struct{})
	go func() { cli.Close(); close(done) }()
	waitFor(t, "Close to start", func() bool { cli.mu.Lock(); defer cli.mu.Unlock(); return cli.closed })
	close(gate)
	<-done
	select {
	case err := <-closed:
		t.Logf("%d messages, %d bytes queued at Close; the acceptor's bundle closed: %v", sent, queued, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the acceptor's bundle did not close")
	}
	if n := got.Load(); n != sent {
		t.Fatalf("the acceptor got %d messages of %d sent before Close", n, sent)
	}
}
