package netstack_test

import (
	"errors"
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

// TestWaitReadable: WaitReadable returns when data arrives, on EOF, and
// with net.ErrClosed once the conn is closed.
func TestWaitReadable(t *testing.T) {
	conns := make(chan net.Conn, 2)
	e := newEnvNamed(t, "udpns", "udpt0", netstack.Config{Handler: func(r *netstack.Request) {
		if c, err := r.Accept(); err == nil {
			conns <- c
		}
	}})
	app, err := e.ns.dial(t, "tcp", netip.AddrPortFrom(virt4, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	c := (<-conns).(*netstack.Conn)
	done := make(chan error, 1)
	go func() { done <- c.WaitReadable() }()
	select {
	case err := <-done:
		t.Fatalf("WaitReadable returned %v with nothing to read", err)
	case <-time.After(50 * time.Millisecond):
	}
	app.Write([]byte("x"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReadable did not see the data")
	}
	b := make([]byte, 1)
	c.Read(b)

	// Deadlines: one that passes ends the wait (and a Read) with an error
	// matching os.ErrDeadlineExceeded; one set while waiting applies at
	// once; clearing it while waiting leaves the wait waiting.
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if err := c.WaitReadable(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitReadable past the deadline: %v", err)
	}
	if _, err := c.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v", err)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v is not a net.Error timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	go func() { done <- c.WaitReadable() }()
	time.Sleep(20 * time.Millisecond) // let it wait (the test holds either way)
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WaitReadable after a deadline set while waiting: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline set while waiting did not end the wait")
	}
	c.SetReadDeadline(time.Now().Add(time.Hour))
	go func() { done <- c.WaitReadable() }()
	c.SetReadDeadline(time.Time{})
	select {
	case err := <-done:
		t.Fatalf("WaitReadable returned %v with nothing to read and no deadline", err)
	case <-time.After(50 * time.Millisecond):
	}
	app.Write([]byte("y"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Read(b)

	app.(*net.TCPConn).CloseWrite()
	if err := c.WaitReadable(); err != nil {
		t.Fatalf("WaitReadable at EOF: %v", err)
	}
	go func() { done <- c.WaitReadable() }()
	c.Read(b) // EOF consumed; a further wait returns at once (HUP) or on close
	c.Close()
	if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WaitReadable after Close: %v", err)
	}
}
