package portal_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
)

// TestFlowsSpreadOverLanes: the flows of one inlet, over one channel, take
// different lanes of the connections through the relay (every lane of both
// bundles carries a share), and each flow's bytes arrive whole and in order.
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
