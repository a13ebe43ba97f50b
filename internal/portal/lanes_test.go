package portal_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/router"
)

// TestFlowsSpreadOverLanes: the bulk flows of one inlet, over one channel,
// move to lanes of their own on the connections through the relay (every
// lane of both bundles carries a share), and each flow's bytes arrive whole
// and in order across the move.
func TestFlowsSpreadOverLanes(t *testing.T) {
	const flows, bulk = 8, 4 << 20
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	s := serve(t, func(c *net.TCPConn) {
		for sent := 0; sent < bulk; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	w := newWorld(t, s.addr())
	var wg sync.WaitGroup
	errs := make(chan string, flows)
	for range flows {
		c, err := net.Dial("tcp", w.inlet.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || len(got) != bulk || !bytes.Equal(got[:len(chunk)], chunk) || !bytes.Equal(got[bulk-len(chunk):], chunk) {
				errs <- "a flow's bytes did not arrive whole"
				return
			}
			for off := 0; off < bulk; off += len(chunk) {
				if !bytes.Equal(got[off:off+len(chunk)], chunk) {
					errs <- "a flow's bytes arrived out of order"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if got := w.sp.LaneMoves.Load(); got != flows {
		t.Errorf("%d of %d bulk flows moved to a lane of their own at the sender", got, flows)
	}
	if got := w.cp.LaneMoves.Load(); got != 0 {
		t.Errorf("%d flows moved at the receiver, which sent only credits", got)
	}
	links := w.relayN.Links()
	if len(links) != 2 {
		t.Fatalf("relay holds %d links, want 2", len(links))
	}
	for _, l := range links {
		bs := l.LaneBytes()
		if len(bs) != router.DefaultLanes {
			t.Fatalf("link %s has %d lanes, want %d", l.ID, len(bs), router.DefaultLanes)
		}
		for i, b := range bs {
			if b < bulk { // each lane carries about two flows' worth
				t.Errorf("link %s lane %d carried %d bytes: flows not spread (%v)", l.ID, i, b, bs)
			}
		}
	}
}

// TestSmallFlowsStayOnLaneZero: flows of small messages share lane 0 while
// a bulk flow beside them moves, once, to a lane of its own: on each relay
// link, one lane of 1..3 carries the bulk flow's bytes after the move, lane
// 0 its first BulkAfter and the small messages, and the others next to
// nothing. The bulk stream arrives whole across the move.
func TestSmallFlowsStayOnLaneZero(t *testing.T) {
	const bulk, small, rounds = 8 << 20, 4, 200
	data := make([]byte, bulk)
	rand.Read(data)
	s := serve(t, func(c *net.TCPConn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		if b[0] == 'b' {
			c.Write(data)
			return
		}
		c.Write(b[:])
		io.Copy(c, c)
	})
	w := newWorld(t, s.addr())
	bc := dialInlet(t, w)
	bc.Write([]byte("b"))
	got := make(chan []byte, 1)
	go func() {
		bc.SetReadDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(bc)
		got <- b
	}()
	var wg sync.WaitGroup
	errs := make(chan error, small)
	for range small {
		c := dialInlet(t, w)
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(60 * time.Second))
			msg := bytes.Repeat([]byte("e"), 64)
			buf := make([]byte, 64)
			for range rounds {
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal("a small flow: ", err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the bulk flow's %d bytes arrived as %d, not the same", bulk, len(b))
	}
	if m := w.sp.LaneMoves.Load() + w.cp.LaneMoves.Load(); m != 1 {
		t.Fatalf("%d flows moved lanes, want 1 (the bulk one)", m)
	}
	for _, l := range w.relayN.Links() {
		bs := l.LaneBytes()
		if len(bs) != router.DefaultLanes {
			t.Fatalf("link %s has %d lanes, want %d", l.ID, len(bs), router.DefaultLanes)
		}
		var busy []int
		for i, b := range bs[1:] {
			switch {
			case b >= bulk-2*portal.BulkAfter:
				busy = append(busy, i+1)
			case b > 64<<10:
				t.Errorf("link %s lane %d carried %d bytes, neither the bulk flow nor nothing (%v)", l.ID, i+1, b, bs)
			}
		}
		if len(busy) != 1 {
			t.Errorf("link %s: lanes %v carried the bulk flow after its move, want one (%v)", l.ID, busy, bs)
		}
		minZero := uint64(portal.BulkAfter + small*rounds*64*2)
		if bs[0] < minZero || bs[0] > 2*minZero {
			t.Errorf("link %s lane 0 carried %d bytes, want the bulk flow's first %d and the small flows' (%v)", l.ID, bs[0], portal.BulkAfter, bs)
		}
	}
}
