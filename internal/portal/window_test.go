package portal_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/routing"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timeout after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Many fast flows, half of them with readers that stall: windows grow, the
// node-wide budget is never exceeded, every stalled flow holds at most its
// window, the fast flows finish intact, and the budget is whole again once
// the flows are gone.
func TestWindowBudgetHoldsWithManyFastFlows(t *testing.T) {
	const (
		flows   = 16
		bulk    = 24 << 20
		budget  = 4 << 20
		maxFlow = 2 << 20
	)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	s := serve(t, func(c *net.TCPConn) {
		for sent := 0; sent < bulk; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	cfg := portal.Config{WindowBudget: budget, MaxFlowWindow: maxFlow}
	w := newWorldConfig(t, s.addr(), cfg, cfg)

	var (
		wg       sync.WaitGroup
		errs     = make(chan error, flows)
		stalled  []net.Conn
		mu       sync.Mutex
		stopPoll = make(chan struct{})
		peakUsed int
		peakErr  string
	)
	// Sample the inlet's windows and queues while the flows run.
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			select {
			case <-stopPoll:
				return
			case <-time.After(2 * time.Millisecond):
			}
			used, limit := w.cp.WindowBudget()
			sum := 0
			for _, f := range w.inlet.Flows() {
				sum += f.Window - portal.Window
				if f.Window > maxFlow || f.Queued > f.Window {
					mu.Lock()
					peakErr = "a flow's window or queue is over the cap"
					mu.Unlock()
				}
			}
			mu.Lock()
			peakUsed = max(peakUsed, used)
			if used > limit || sum > limit {
				peakErr = "budget exceeded"
			}
			mu.Unlock()
		}
	}()
	for i := 0; i < flows; i++ {
		c, err := net.Dial("tcp", w.inlet.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 1 {
			stalled = append(stalled, c) // never read
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(90 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if err != nil || n != bulk {
				errs <- err
				if err == nil {
					errs <- io.ErrUnexpectedEOF
				}
			}
		}()
	}
	wg.Wait()
	close(stopPoll)
	<-pollDone
	close(errs)
	for err := range errs {
		t.Errorf("fast flow: %v", err)
	}
	mu.Lock()
	if peakErr != "" {
		t.Error(peakErr)
	}
	t.Logf("peak window growth in use at the inlet: %d of %d", peakUsed, budget)
	if peakUsed == 0 {
		t.Error("no window grew: autotuning did not run")
	}
	mu.Unlock()
	for _, c := range stalled {
		c.Close()
	}
	waitFor(t, 20*time.Second, "the budget returns to zero", func() bool {
		u1, _ := w.cp.WindowBudget()
		u2, _ := w.sp.WindowBudget()
		return u1 == 0 && u2 == 0
	})
}

// A flow whose window grew gives it back once the sender goes idle, and
// the flow still works afterwards.
func TestWindowShrinksWhenIdle(t *testing.T) {
	const bulk = 32 << 20
	chunk := make([]byte, 64<<10)
	s := serve(t, func(c *net.TCPConn) {
		var cmd [1]byte
		for {
			if _, err := io.ReadFull(c, cmd[:]); err != nil {
				return
			}
			for sent := 0; sent < bulk; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}
	})
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for round := 0; round < 2; round++ {
		c.Write([]byte("b"))
		if _, err := io.CopyN(io.Discard, c, bulk); err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			used, _ := w.cp.WindowBudget()
			t.Logf("window growth after a bulk transfer: %d", used)
			if used == 0 {
				t.Fatal("the window did not grow during a bulk transfer")
			}
		}
		waitFor(t, 10*portal.IdleRelease, "the idle flow's window shrinks back", func() bool {
			used, _ := w.cp.WindowBudget()
			fl := w.inlet.Flows()
			return used == 0 && len(fl) == 1 && fl[0].Window == portal.Window
		})
	}
}

// Early data: the first bytes travel with the open, so the server's answer
// is back before the flow even runs.
func TestEarlyDataAnswersBeforeRun(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) {
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		c.Write(bytes.ToUpper(b))
		io.Copy(c, c)
	})
	w := newWorld(t, s.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	route := append(w.ch.Route(), routing.LocalAddr("outlet"))
	f, err := w.cp.DialEarly(ctx, route, 0, []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	// The answer arrives with no Run: it can only be the early bytes'.
	waitFor(t, 10*time.Second, "the answer to the early bytes", func() bool {
		return f.Queued() == 4
	})
	f.Abort("test over")
	<-f.Done()

	// Through the inlet, with a client that writes at once.
	c := dialInlet(t, w)
	c.Write([]byte("abcd"))
	got := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ABCD" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// A refused open ends the application's connection with a reset, even when
// it had sent its first bytes as early data.
func TestEarlyDataRefusedResetsClient(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	w := newWorld(t, dead)
	c, err := net.Dial("tcp", w.inlet.Addr().String())
	if err == nil {
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("err = %v, want connection reset", err)
	}
	if !strings.Contains(w.inlet.LastError(), "connection refused") {
		t.Errorf("inlet last error = %q", w.inlet.LastError())
	}
}
