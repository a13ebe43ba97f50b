package cli_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-go/ockam/channel"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/transport"
)

// blackhole returns the address of a loopback listener that never
// completes a handshake: its backlog of one is full, so the kernel drops
// further SYNs and a dial to it hangs until it times out (what a
// firewalled host in the server's network does).
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the backlog (one, plus the kernel's slack) with connections
	// nobody accepts.
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

// TestNoRouteIntoTheServersNetwork plays the hostile-party review's
// server-side request forgery: an untrusted node in another $OCKAM_HOME
// names a TCP address after the server sidecar (and after the relay) in a
// message's route, aimed at a line-based service on the server's host and at
// a black-holed address. No socket is reached, the refusals are logged
// with their sender, and the relay path stays fast meanwhile (a dial on a
// connection's reader used to stall it for 10 s).
func TestNoRouteIntoTheServersNetwork(t *testing.T) {
	e := newEnv(t)
	inlet := seed(t, e, tcpServer(t, func(c net.Conn) {}))
	_ = inlet
	relay := e.show("relay").TCPAddress
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	hole := blackhole(t)

	evil := newEnv(t)
	evil.must("node", "create", "evil")
	viaServer := "/ip4/" + strings.Replace(relay, ":", "/tcp/", 1) + "/service/forward_to_server_sidecar"
	viaRelay := "/ip4/" + strings.Replace(relay, ":", "/tcp/", 1)
	lines := "PING\r\nSET pwned 1\r\nQUIT\r\n"
	for _, to := range []string{
		viaServer + "/ip4/" + strings.Replace(sink.Addr().String(), ":", "/tcp/", 1) + "/service/x",
		viaRelay + "/ip4/" + strings.Replace(sink.Addr().String(), ":", "/tcp/", 1) + "/service/x",
		viaServer + "/ip4/" + strings.Replace(hole, ":", "/tcp/", 1) + "/service/x",
	} {
		if r := evil.run("message", "send", lines, "--from", "/node/evil", "--to", to, "--timeout", "300ms"); r.code == 0 {
			t.Fatalf("message to %s got a reply: %q", to, r.stdout)
		}
	}
	// Echo through the same path: the server sidecar handles messages from
	// its relay connection in order, so once this answers the forged ones
	// were handled (a dial to the black hole would hold it up for 10 s).
	start := time.Now()
	if got := evil.must("message", "send", "fence", "--from", "/node/evil", "--to", viaServer+"/service/echo", "--timeout", "5s"); got != "fence" {
		t.Fatalf("echo through the relay: %q", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("echo through the relay took %v after forged routes: the reader was held up", d)
	}
	sink.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := sink.Accept(); err == nil {
		c.Close()
		t.Fatal("a node connected to a TCP address named in a remote sender's route")
	}
	for _, n := range []string{"server_sidecar", "relay"} {
		eventually(t, 5*time.Second, n+" logs the refusal", func() error {
			b, _ := os.ReadFile(filepath.Join(e.home, "nodes", n, "node.log"))
			if !strings.Contains(string(b), `"msg":"refused message"`) || !strings.Contains(string(b), "remote senders may not open connections") {
				return errString(n + " logged no refusal")
			}
			return nil
		})
	}
}

// TestLogsStayBounded: 3,000 connections sending garbage to a node add a
// few lines to its log, not one each; and the log is rotated at its cap.
func TestLogsStayBounded(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create", "relay", "--log-max-mib", "1")
	addr := e.show("relay").TCPAddress
	logPath := filepath.Join(e.home, "nodes", "relay", "node.log")
	before := fileSize(logPath)
	for i := range 3000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Write([]byte{9, 9, 9, 9, 9})
		c.Close()
	}
	// A message through the node after the flood: its log has caught up.
	// The flood came from this node's address too, so until the relay has
	// closed enough of it a new connection from here can meet the
	// per-address limit (512) and be refused: try until one is answered.
	e.must("node", "create", "a")
	eventually(t, 30*time.Second, "echo after the flood", func() error {
		r := e.run("message", "send", "x", "--from", "/node/a", "--to", "/node/relay/service/echo", "--timeout", "2s")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "x" {
			return errString("exit " + r.stderr + r.stdout)
		}
		return nil
	})
	grown := fileSize(logPath) - before
	t.Logf("3000 garbage connections added %d bytes to node.log", grown)
	if grown > 32<<10 {
		t.Errorf("3000 garbage connections added %d bytes to node.log: not rate-limited", grown)
	}

	// At debug level every connection is logged: the log rotates at its
	// 1 MiB cap and keeps one old file.
	t.Setenv("OCKAM_LOG", "debug")
	e.must("node", "create", "chatty", "--log-max-mib", "1")
	chatty := e.show("chatty").TCPAddress
	dir := filepath.Join(e.home, "nodes", "chatty")
	total := func() (n int64, files int) {
		ents, _ := os.ReadDir(dir)
		for _, d := range ents {
			if strings.HasPrefix(d.Name(), "node") {
				n += fileSize(filepath.Join(dir, d.Name()))
				files++
			}
		}
		return n, files
	}
	for i := 0; ; i++ {
		if _, files := total(); files >= 2 {
			t.Logf("node.log rotated after %d connections at debug level", i)
			break
		}
		if i == 40000 {
			t.Fatal("node.log never rotated at debug level after 40,000 connections")
		}
		c, err := net.Dial("tcp", chatty)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Write([]byte{9})
		c.Close()
	}
	if n, files := total(); fileSize(filepath.Join(dir, "node.log")) > 1<<20 || n > 2<<20+64<<10 || files > 2 {
		t.Errorf("after rotation: %d log files holding %d bytes, want at most 2 and 2 MiB", files, n)
	}
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

type errString string

func (e errString) Error() string { return string(e) }

// tcpRoute turns host:port into a route to that node.
func tcpRoute(addr string) string { return "/ip4/" + strings.Replace(addr, ":", "/tcp/", 1) }

// TestHandshakeFloodThroughRelay: while a flooder sends 100 first handshake
// messages a second through the relay to the server sidecar's listener
// (from fresh connections, never finishing one), `secure-channel create`
// from the client sidecar still takes under a second, and the server logs
// that it sheds handshakes.
func TestHandshakeFloodThroughRelay(t *testing.T) {
	e := newEnv(t)
	seed(t, e, tcpServer(t, func(c net.Conn) {}))
	relay := e.show("relay").TCPAddress
	id, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := channel.NewInitiator(&channel.Config{Identity: id, Trust: channel.TrustEveryone})
	if err != nil {
		t.Fatal(err)
	}
	msg1, err := hs.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := routing.ParseRoute(tcpRoute(relay)+"/service/forward_to_server_sidecar/service/api", nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var fls []*router.Node
		defer func() {
			for _, fl := range fls {
				fl.Close()
			}
		}()
		var fl *router.Node
		for i := 0; ; i++ {
			if i%8 == 0 { // a new connection, so a new source, every 8
				fl = router.New(router.Config{})
				fl.Register("x", router.Public, func(*routing.Message) error { answered.Add(1); return nil })
				fls = append(fls, fl)
			}
			fl.Send(context.Background(), &routing.Message{Onward: api, Return: routing.Route{routing.LocalAddr("x")}, Payload: msg1})
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	// Let the flood take every handshake slot of the server (256) and
	// more: answers beyond that mean the oldest gave way.
	eventually(t, 20*time.Second, "the flood to fill the server's handshake slots", func() error {
		if answered.Load() <= 300 {
			return errString("not yet")
		}
		return nil
	})
	eventually(t, 5*time.Second, "the server to log that it sheds handshakes", func() error {
		b, _ := os.ReadFile(filepath.Join(e.home, "nodes", "server_sidecar", "node.log"))
		if !strings.Contains(string(b), "shedding secure channel handshakes") {
			return errString("no shedding logged")
		}
		return nil
	})
	for i := range 3 {
		start := time.Now()
		e.must("secure-channel", "create", "--from", "/node/client_sidecar", "--to", "/node/relay/service/forward_to_server_sidecar/service/api")
		d := time.Since(start)
		t.Logf("secure-channel create %d under a 100/s handshake flood: %v", i, d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("secure-channel create took %v under a handshake flood, want under 1s", d)
		}
	}
}

// TestClientThatNeverReadsThroughRelayNode: through the seed's relay node,
// a client with a 4 KiB receive buffer sends 60 echo requests of 200 KiB
// to the server sidecar and never reads; curls through the inlet keep
// working meanwhile (75 s of outage before).
func TestClientThatNeverReadsThroughRelayNode(t *testing.T) {
	e := newEnv(t)
	inlet := seed(t, e, pythonServer(t, t.TempDir()))
	relay := e.show("relay").TCPAddress
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	c, err := d.Dial("tcp", relay)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body, err := routing.AppendMessage(make([]byte, 4), &routing.Message{
		Onward:  routing.Route{routing.LocalAddr("forward_to_server_sidecar"), routing.LocalAddr("echo")},
		Return:  routing.Route{routing.LocalAddr("evil")},
		Payload: bytes.Repeat([]byte("x"), 200<<10),
	})
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(body, uint32(len(body)-4))
	c.Write(transport.Preamble())
	go func() {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for range 60 {
			if _, err := c.Write(body); err != nil {
				return
			}
		}
	}()
	for i := range 13 {
		start := time.Now()
		if _, err := curl(t, "-sS", "--max-time", "5", "-o", "/dev/null", "http://"+inlet+"/"); err != nil {
			t.Fatalf("curl %d through the inlet while a client of the relay does not read: %v", i, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("curl %d took %v while a client of the relay does not read", i, d)
		}
	}
}
