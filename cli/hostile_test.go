package cli_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
	e.must("node", "create", "a")
	if got := e.must("message", "send", "x", "--from", "/node/a", "--to", "/node/relay/service/echo"); got != "x" {
		t.Fatalf("echo after the flood: %q", got)
	}
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
