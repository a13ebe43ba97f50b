package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/routing"
)

// silentPeer is a TCP listener whose one connection never reads.
func silentPeer(t *testing.T) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte{ProtocolVersion})
			held <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-held:
			c.Close()
		default:
		}
	})
	return ln.Addr().String()
}

func msgOf(n int) *routing.Message {
	return &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: bytes.Repeat([]byte("x"), n)}
}

// TestTrySendDropsAndShares: towards a peer that never reads, messages
// passed on from other connections never wait; beyond MaxQueueBytes they
// are dropped, and a second source still gets its share of the queue after
// a first one filled what it could.
func TestTrySendDropsAndShares(t *testing.T) {
	const limit = 1 << 20
	tr := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Limits: Limits{MaxQueueBytes: limit}, Lanes: 1})
	defer tr.Close()
	c, err := tr.Dial(context.Background(), silentPeer(t))
	if err != nil {
		t.Fatal(err)
	}
	fill := func(id string) (sent int) {
		src := &Conn{id: id} // a reader with nothing more buffered
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			err := c.TrySend(msgOf(16<<10), src)
			if errors.Is(err, ErrQueueFull) {
				return sent
			}
			if err != nil {
				t.Fatal(err)
			}
			sent++
		}
		t.Fatalf("TrySend from %s never dropped: nothing bounds the queue", id)
		return 0
	}
	a := fill("flooder")
	if q := c.Queued(); q > limit {
		t.Fatalf("%d bytes queued, over the %d-byte limit", q, limit)
	}
	b := fill("honest")
	// What the writer has taken is not the queue's to give back; of the
	// rest, the second source holds as much as the flooder (within a frame).
	c.qmu.Lock()
	flooder, honest := c.bySrc["flooder"], c.bySrc["honest"]
	c.qmu.Unlock()
	if honest < flooder-(17<<10) {
		t.Fatalf("after a flooder sent %d messages, a second source queued %d (%d bytes) against the flooder's %d bytes", a, b, honest, flooder)
	}
	if q := c.Queued(); q > limit {
		t.Fatalf("%d bytes queued, over the %d-byte limit", q, limit)
	}
	if c.Dropped.Load() < 2 {
		t.Fatalf("Dropped = %d, want the flooder's evicted frames and both refusals", c.Dropped.Load())
	}
	select {
	case <-c.Done():
		t.Fatal("dropping for a slow peer closed its connection")
	default:
	}
}

// TestConnectionLimitPerIP: accepted connections beyond MaxConnsPerIP are
// closed before the version byte.
func TestConnectionLimitPerIP(t *testing.T) {
	srv := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Limits: Limits{MaxConnsPerIP: 3}})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var got []bool
	for range 5 {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var v [1]byte
		_, err = io.ReadFull(c, v[:])
		got = append(got, err == nil)
	}
	want := []bool{true, true, true, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("admitted = %v, want %v", got, want)
		}
	}
}

// TestReadBufferBudget: a frame larger than what is left of the budget
// closes the connection that needs it; the budget is given back when
// connections close.
func TestReadBufferBudget(t *testing.T) {
	srv := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Limits: Limits{ReadBufferBytes: 300 << 10}})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A connection holding a partial 250 KiB frame (a complete one could
	// shrink its buffer back before the second connection asks) takes
	// most of the 300 KiB budget.
	holder, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	holder.Write(append(Preamble(), 0, 3, 0xe8, 0)) // a 250 KiB frame
	holder.Write(make([]byte, 200<<10))
	deadline := time.Now().Add(5 * time.Second)
	for srv.readBufs.Load() < 200<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("the holder's partial frame reserved %d bytes", srv.readBufs.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A raw connection starting a second big frame does not fit.
	raw, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write(append(Preamble(), 0, 3, 0, 0)) // a 192 KiB frame
	raw.Write(make([]byte, 8<<10))
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(raw); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection needing more than the read-buffer budget was kept")
		}
	}
	if used := srv.readBufs.Load(); used > 300<<10 {
		t.Fatalf("read buffers hold %d bytes, over the budget", used)
	}
}

// TestForwardedBurstsKeepOrder plays a relay: every message from one
// connection is passed on (TrySend, corked while more frames are buffered)
// to one of two others, whose peers read slowly at times so that writes are
// cut short. Every message arrives, once, in order.
func TestForwardedBurstsKeepOrder(t *testing.T) {
	const total = 20000
	type sink struct {
		tr   *Transport
		next uint32
		got  chan error
	}
	newSink := func() *sink {
		s := &sink{got: make(chan error, 1)}
		s.tr = New(Config{OnMessage: func(c *Conn, m *routing.Message) {
			seq := binary.BigEndian.Uint32(m.Payload)
			if seq != s.next {
				select {
				case s.got <- fmt.Errorf("got message %d, want %d", seq, s.next):
				default:
				}
			}
			s.next = seq + 2
			if seq%1000 < 2 {
				time.Sleep(20 * time.Millisecond) // let the relay's socket fill
			}
			if s.next >= total {
				select {
				case s.got <- nil:
				default:
				}
			}
		}})
		return s
	}
	var dst [2]*Conn
	relay := New(Config{OnMessage: func(c *Conn, m *routing.Message) {
		seq := binary.BigEndian.Uint32(m.Payload)
		if err := dst[seq%2].TrySend(m, c); err != nil {
			t.Errorf("TrySend %d: %v", seq, err)
		}
	}})
	defer relay.Close()
	addr, err := relay.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sinks := [2]*sink{newSink(), newSink()}
	sinks[1].next = 1
	for i, s := range sinks {
		defer s.tr.Close()
		sa, err := s.tr.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if dst[i], err = relay.Dial(context.Background(), sa.String()); err != nil {
			t.Fatal(err)
		}
	}
	src := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer src.Close()
	c, err := src.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 2000)
	for i := range total {
		binary.BigEndian.PutUint32(payload, uint32(i))
		if err := c.Send(&routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range sinks {
		select {
		case err := <-s.got:
			if err != nil {
				t.Fatalf("sink %d: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("sink %d got up to %d of %d", i, s.next, total)
		}
	}
	for i, d := range dst {
		if n := d.Dropped.Load(); n != 0 {
			t.Fatalf("destination %d dropped %d messages", i, n)
		}
	}
}

// TestCorkedFlushCutShort: frames corked behind a reader's buffer are
// written by one writev when it drains; when the socket takes only part of
// them, the rest (including the tail of a cut frame) goes out next, in
// order, and the queue's accounting stays exact.
func TestCorkedFlushCutShort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte{ProtocolVersion})
			accepted <- c
		}
	}()
	tr := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Lanes: 1})
	defer tr.Close()
	c, err := tr.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.nc.(*net.TCPConn).SetWriteBuffer(4096)
	peer := <-accepted
	defer peer.Close()
	var v [1 + helloLen]byte
	io.ReadFull(peer, v[:]) // our version byte and hello

	// 600 KB: more than the peer's receive buffer and our small send
	// buffer hold until it reads. (A tiny receive buffer on loopback's
	// 64 KiB MTU stalls TCP itself, so only ours is shrunk.)
	const frames = 200
	src := &Conn{id: "src", more: true}
	payload := make([]byte, 3000)
	for i := range frames {
		binary.BigEndian.PutUint32(payload, uint32(i))
		if err := c.TrySend(&routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: payload}, src); err != nil {
			t.Fatal(err)
		}
	}
	if len(src.corked) != 1 {
		t.Fatalf("corked on %d connections, want 1", len(src.corked))
	}
	src.uncork()
	c.qmu.Lock()
	var inQueue int64
	for _, f := range c.queue {
		inQueue += int64(len(*f.bp))
	}
	left, held := c.queued.Load(), c.held
	c.qmu.Unlock()
	if left != inQueue+held {
		t.Fatalf("queued %d bytes, but the queue holds %d and the writer %d", left, inQueue, held)
	}
	if left == 0 {
		t.Log("the socket took every frame at once: nothing was cut short")
	}
	// The peer reads everything: every frame, in order, whole.
	fr := frameReader{r: peer}
	var m routing.Message
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range frames {
		body, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if err := routing.DecodeMessage(&m, body); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(m.Payload); got != uint32(i) || len(m.Payload) != len(payload) {
			t.Fatalf("frame %d carries message %d of %d bytes", i, got, len(m.Payload))
		}
	}
}

// TestDirectWriteAfterWriterDeadline: the writer's deadline on a batch must
// not outlive it. A sender's direct (raw, non-waiting) write long after the
// writer last wrote used to fail with "i/o timeout" and close the
// connection (seen as channels going down every 30 s on the WAN bench).
func TestDirectWriteAfterWriterDeadline(t *testing.T) {
	got := make(chan string, 4)
	srv := New(Config{OnMessage: func(c *Conn, m *routing.Message) { got <- string(m.Payload) }})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 50 * time.Millisecond
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}, WriteTimeout: timeout, Lanes: 1})
	defer cli.Close()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	msg := func(s string) *routing.Message {
		return &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: []byte(s)}
	}
	// Hold the socket so that the first message is queued for the writer,
	// which sets its deadline when it writes it.
	c.wmu.Lock()
	if err := c.Send(msg("queued")); err != nil {
		t.Fatal(err)
	}
	c.wmu.Unlock()
	if m := <-got; m != "queued" {
		t.Fatalf("got %q", m)
	}
	time.Sleep(3 * timeout) // past the writer's deadline: the condition under test
	if err := c.Send(msg("direct")); err != nil {
		t.Fatalf("direct write after the writer's deadline: %v", err)
	}
	select {
	case m := <-got:
		if m != "direct" {
			t.Fatalf("got %q", m)
		}
	case <-c.Done():
		t.Fatalf("connection closed: %v", c.Err())
	case <-time.After(5 * time.Second):
		t.Fatal("direct message never arrived")
	}
}

// The send buffer is asked for only where it beats autotuning's ceiling.
func TestSendBufferFor(t *testing.T) {
	for _, c := range []struct{ wmemMax, tcpMax, want int }{
		{212992, 4194304, 0},        // Linux defaults: an ask would shrink it
		{4194304, 4194304, 4194304}, // this machine: 8 MiB beats 4 MiB
		{2097152, 4194304, 0},       // equal: nothing to win
		{1 << 30, 4194304, MaxSendBuffer},
		{0, 4194304, 0}, // unknown
		{4194304, 0, 0},
	} {
		if got := sendBufferFor(c.wmemMax, c.tcpMax); got != c.want {
			t.Errorf("sendBufferFor(%d, %d) = %d, want %d", c.wmemMax, c.tcpMax, got, c.want)
		}
	}
}
