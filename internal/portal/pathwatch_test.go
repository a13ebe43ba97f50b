package portal

import (
	"net"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
)

// TestPathsOneWatcherPerPath: flows on one path share a watcher; a flow that
// ends stops being watched, the watcher stays for the path's next flows
// until the portals close, and a path that fails resets the flows still on
// it and no others.
func TestPathsOneWatcherPerPath(t *testing.T) {
	n := router.New(router.Config{})
	defer n.Close()
	p, err := New(n, Config{Allowed: func(string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	endA, endB := make(chan struct{}), make(chan struct{})
	flow := func(end chan struct{}) *Flow {
		f, err := newFlow(p)
		if err != nil {
			t.Fatal(err)
		}
		f.pathEnd = end
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		f.run(pipeConn{a})
		return f
	}
	watched := func(end chan struct{}) int {
		p.paths.mu.Lock()
		defer p.paths.mu.Unlock()
		if pf := p.paths.m[end]; pf != nil {
			return len(pf.flows)
		}
		return -1
	}
	a1, a2, b1 := flow(endA), flow(endA), flow(endB)
	if watched(endA) != 2 || watched(endB) != 1 {
		t.Fatalf("watched: A %d, B %d; want 2 and 1", watched(endA), watched(endB))
	}
	// b1 ends: path B's watcher stays, watching nothing, for B's next flow.
	b1.reset(errTest, false)
	waitDone(t, b1)
	if watched(endB) != 0 {
		t.Fatalf("path B watched for %d flows after its only flow ended, want 0", watched(endB))
	}
	b2 := flow(endB)
	if watched(endB) != 1 {
		t.Fatalf("path B watched for %d flows with one, want 1", watched(endB))
	}
	b2.reset(errTest, false)
	waitDone(t, b2)
	// Path A fails: both of its flows end.
	close(endA)
	waitDone(t, a1)
	waitDone(t, a2)
	if watched(endA) != -1 {
		t.Fatal("path A still watched after it failed")
	}
	a1.mu.Lock()
	reason := a1.resetErr
	a1.mu.Unlock()
	if reason == nil || reason.Error() != "portal: the path to the peer failed" {
		t.Fatalf("a1 ended with %v", reason)
	}
	// A flow that starts on a path that has already failed ends at once.
	a3 := flow(endA)
	waitDone(t, a3)
	// Closing the portals stops the watchers of paths without flows.
	p.Close()
	if watched(endB) != -1 {
		t.Fatalf("path B still watched for %d flows after Close", watched(endB))
	}
}

var errTest = &net.OpError{Op: "test"}

// pipeConn is a net.Pipe end with a CloseWrite that closes it.
type pipeConn struct{ net.Conn }

func (c pipeConn) CloseWrite() error { return c.Conn.Close() }

func waitDone(t *testing.T, f *Flow) {
	t.Helper()
	select {
	case <-f.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("flow %s did not end", f.addr)
	}
}
