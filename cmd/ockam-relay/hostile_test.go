package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/transport"
	"github.com/ockam-go/ockam/relay"
)

// relayProc is a running ockam-relay binary.
type relayProc struct {
	addr string
	cmd  *exec.Cmd
	logs *syncBuffer
	// nodes are the in-process nodes connected to it (registrant, sender).
	nodes []*router.Node
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var buildOnce struct {
	sync.Once
	bin string
	err error
}

// relayBinary builds the relay once per test run.
func relayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ockam-relay-test")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin = filepath.Join(dir, "ockam-relay")
		if out, err := exec.Command("go", "build", "-o", buildOnce.bin, ".").CombinedOutput(); err != nil {
			buildOnce.err = errors.New(string(out))
		}
	})
	if buildOnce.err != nil {
		t.Fatalf("build: %v", buildOnce.err)
	}
	return buildOnce.bin
}

// startRelay runs the relay binary with args on a free loopback port and
// waits until it accepts connections.
func startRelay(t *testing.T, args ...string) *relayProc {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := &relayProc{addr: addr, logs: &syncBuffer{}}
	p.cmd = exec.Command(relayBinary(t), append([]string{"--listen", addr}, args...)...)
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
		if t.Failed() {
			t.Logf("relay log:\n%s", p.logs.String())
		}
	})
	poll(t, "the relay to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// registrant is a node registered at the relay as "b", with its echo.
func registrant(t *testing.T, p *relayProc) {
	t.Helper()
	b := router.New(router.Config{})
	t.Cleanup(func() { b.Close() })
	p.nodes = append(p.nodes, b)
	id, _ := identity.Generate(nil)
	reg, err := relay.Register(b, routing.Route{routing.TCPAddr(p.addr)}, "b", id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// sender returns a node and a function that pings b's echo through the
// relay, returning how long the reply took.
func sender(t *testing.T, p *relayProc) func() (time.Duration, error) {
	t.Helper()
	a := router.New(router.Config{})
	t.Cleanup(func() { a.Close() })
	p.nodes = append(p.nodes, a)
	echo, _ := routing.ParseRoute("/tcp/"+p.addr+"/service/forward_to_b/service/echo", nil)
	ping := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := a.Request(ctx, echo, []byte("ping"))
		return time.Since(start), err
	}
	if _, err := ping(); err != nil {
		t.Fatal(err)
	}
	return ping
}

// rawConn is a hand-driven transport connection to the relay.
func rawConn(t *testing.T, addr string, rcvbuf int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if rcvbuf > 0 {
			rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		}
		return nil
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(transport.Preamble()); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

func frame(t *testing.T, m *routing.Message) []byte {
	t.Helper()
	b, err := routing.AppendMessage(make([]byte, 4), m)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// TestRelayNeverReadingClient: a client with a 4 KiB receive buffer sends
// echo requests of 200 KiB to a registered node through the relay and
// never reads the replies. The relay must keep forwarding for everyone
// else (each ping through the same registrant stays fast), and drop what
// would be queued for the client beyond --max-queue-mib, saying so.
func TestRelayNeverReadingClient(t *testing.T) {
	p := startRelay(t, "--max-queue-mib", "4")
	registrant(t, p)
	ping := sender(t, p)

	evil := rawConn(t, p.addr, 4096)
	req := frame(t, &routing.Message{
		Onward:  routing.Route{routing.LocalAddr("forward_to_b"), routing.LocalAddr(router.EchoAddress)},
		Return:  routing.Route{routing.LocalAddr("evil")},
		Payload: bytes.Repeat([]byte("x"), 200<<10),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		evil.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for range 60 {
			if _, err := evil.Write(req); err != nil {
				return // closed by the relay
			}
		}
	}()
	var worst time.Duration
	for i := 0; i < 40; i++ {
		d, err := ping()
		if err != nil {
			t.Fatalf("ping %d while a client does not read: %v", i, err)
		}
		worst = max(worst, d)
	}
	t.Logf("slowest of 40 pings while a client does not read: %v", worst)
	if worst > 2*time.Second {
		t.Errorf("slowest ping %v: the registrant's traffic waited for the client that does not read", worst)
	}
	poll(t, "the relay to say it drops for the client that does not read", func() bool {
		return strings.Contains(p.logs.String(), "does not read fast enough")
	})
	<-done
}

// TestRelayConnectionLimits: beyond --max-conns-per-ip, the relay closes
// new connections from that address at once and logs it; connections it
// already holds keep working.
func TestRelayConnectionLimits(t *testing.T) {
	const limit = 40
	p := startRelay(t, "--max-conns-per-ip", "40")
	registrant(t, p) // holds one bundle of lanes from 127.0.0.1
	ping := sender(t, p)
	// Each bundle counts its lanes. The last of them join in the
	// background: wait for them, seen through this process's side.
	poll(t, "the registrant's and sender's lanes", func() bool {
		conns := 0
		for _, l := range p.nodes {
			for _, k := range l.Links() {
				conns += k.Lanes()
			}
		}
		return conns == 2*router.DefaultLanes
	})
	admitted, refused := 0, 0
	for range 60 {
		c := rawConn(t, p.addr, 0)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var v [1]byte
		if _, err := io.ReadFull(c, v[:]); err == nil {
			admitted++
		} else {
			refused++
		}
	}
	if want := limit - 2*router.DefaultLanes; admitted != want {
		t.Errorf("%d connections admitted beyond the registrant and sender, want %d (refused %d)", admitted, want, refused)
	}
	if _, err := ping(); err != nil {
		t.Fatalf("forwarding at the connection limit: %v", err)
	}
	poll(t, "a log line for the refused connections", func() bool {
		return strings.Contains(p.logs.String(), "refused connection")
	})
}

// TestRelayPartialFrames: connections that each start a 256 KiB frame and
// never finish it hold at most --read-buffer-mib between them; the relay
// closes those beyond it and keeps forwarding.
func TestRelayPartialFrames(t *testing.T) {
	const conns = 400
	p := startRelay(t, "--read-buffer-mib", "8")
	registrant(t, p)
	ping := sender(t, p)
	base := rssKiB(t, p.cmd.Process.Pid)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 256<<10-16)
	part := append(hdr[:], bytes.Repeat([]byte{0}, 200<<10)...)
	for range conns {
		c := rawConn(t, p.addr, 0)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write(part)
	}
	poll(t, "the relay to shed connections beyond its read-buffer budget", func() bool {
		return strings.Contains(p.logs.String(), "read-buffer memory")
	})
	if _, err := ping(); err != nil {
		t.Fatalf("forwarding with %d partial frames held: %v", conns, err)
	}
	grown := rssKiB(t, p.cmd.Process.Pid) - base
	t.Logf("relay RSS grew %d KiB for %d connections holding partial 256 KiB frames (%d KiB if all were kept)", grown, conns, conns*256)
	if grown > 48<<10 {
		t.Errorf("relay RSS grew %d KiB: partial frames not bounded by --read-buffer-mib 8", grown)
	}
}

// TestRelayRefusesOnwardTCP: a message whose onward route names a TCP
// address after the relay (an attempt to make the relay connect into its
// own network) reaches no socket; the relay logs the refusal with its
// sender.
func TestRelayRefusesOnwardTCP(t *testing.T) {
	p := startRelay(t)
	registrant(t, p)
	ping := sender(t, p)
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	evil := router.New(router.Config{})
	defer evil.Close()
	for _, r := range []string{
		"/tcp/" + p.addr + "/tcp/" + sink.Addr().String() + "/service/x",
		"/tcp/" + p.addr + "/service/echo/tcp/" + sink.Addr().String() + "/service/x",
	} {
		rt, _ := routing.ParseRoute(r, nil)
		if err := evil.Send(context.Background(), &routing.Message{Onward: rt, Return: routing.Route{routing.LocalAddr("x")}, Payload: []byte("PING\r\nSET pwned 1\r\nQUIT\r\n")}); err != nil {
			t.Fatal(err)
		}
	}
	// Echo through the same relay: once it answers, the relay has handled
	// the messages before it (an old relay dialled on its reader, so the
	// connection would be in the sink's backlog by now).
	if _, err := ping(); err != nil {
		t.Fatal(err)
	}
	poll(t, "the refusal in the relay's log", func() bool { return strings.Contains(p.logs.String(), "refused message") })
	sink.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := sink.Accept(); err == nil {
		c.Close()
		t.Fatal("the relay connected to an address named in a remote sender's route")
	}
}
