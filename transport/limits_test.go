package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ockam-go/ockam/routing"
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
	tr := New(Config{OnMessage: func(*Conn, *routing.Message) {}, Limits: Limits{MaxQueueBytes: limit}})
	defer tr.Close()
	c, err := tr.Dial(context.Background(), silentPeer(t))
	if err != nil {
		t.Fatal(err)
	}
	fill := func(src string) (sent int) {
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
		t.Fatalf("TrySend from %s never dropped: nothing bounds the queue", src)
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
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer cli.Close()
	c1, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	// 200 KiB fits the 300 KiB budget.
	if err := c1.Send(msgOf(200 << 10)); err != nil {
		t.Fatal(err)
	}
	// A raw connection starting a second big frame does not fit.
	raw, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte{ProtocolVersion, 0, 3, 0, 0}) // a 192 KiB frame
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
