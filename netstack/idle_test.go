package netstack_test

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/netstack"
)

// TestIdleMemory opens many idle connections through the stack and
// reports the heap they hold in this process (the stack's endpoints and
// conns; the application's sockets are the kernel's). NETSTACK_IDLE sets
// the count (default 2000; the figure is for 10,000).
func TestIdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("NETSTACK_IDLE")); err == nil {
		n = v
	}
	var mu sync.Mutex
	var held []net.Conn
	block := os.Getenv("NETSTACK_IDLE_BLOCK") != ""
	stop := make(chan struct{})
	e := newEnvNamed(t, "udpns", "udpt0", netstack.Config{Handler: func(r *netstack.Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
		// As the daemon's handler: a reader echoes (as a flow would
		// carry the bytes), and the handler waits for its flow.
		go func() {
			b := make([]byte, 1)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
				c.Write(b)
			}
		}()
		if block {
			<-stop
		}
	}})
	t.Cleanup(func() { close(stop) })
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	// One exchange first, so that lazily made state exists before the
	// baseline.
	before := heap()
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	e.ns.do(t, func() error {
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", netip.AddrPortFrom(virt4, uint16(1000+i%50000)).String())
			if err != nil {
				return err
			}
			// A flow that carried something, then went idle.
			c.Write([]byte("x"))
			b := make([]byte, 1)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(b); err != nil {
				return err
			}
			clients = append(clients, c)
		}
		return nil
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(held)
		mu.Unlock()
		if k == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the last data land in buffers
	after := heap()
	per := float64(after-before) / float64(n)
	t.Logf("%d idle connections: %.1f KiB each in the stack (heap + stacks)", n, per/1024)
}
