// Package integration runs the ockam binary across network namespaces.
package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Topology (one shared OCKAM_HOME, so the nodes trust each other):
//
//	client ns: client_sidecar + TUN ockam0, curl, iperf3 -c
//	   | veth 10.N.0.2 -- 10.N.0.1
//	relay ns:  relay node listening on 0.0.0.0:4000 (no IP forwarding)
//	   | veth 10.N.1.1 -- 10.N.1.2
//	server ns: server_sidecar with the outlet; HTTP, sink, echo, iperf3 -s on 127.0.0.1
//
// The client has no route to the server: only the tunnel through the relay.

const (
	portHTTP   = 5000
	portIperf  = 5201
	portSink   = 7000 // reads everything, answers the sha256 of it
	portEcho   = 7001
	portWarm   = 7002 // served only while a subtest listens on it
	serverBody = "hello from the server\n"
)

type ns struct {
	name string
	h    netns.NsHandle
}

// do runs f on an OS thread switched into the namespace: sockets created by
// f stay there. Safe from any goroutine.
func (n *ns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restoring netns: %w", err) // the thread dies locked
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func (n *ns) dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

func (n *ns) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := n.do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

type world struct {
	t                     *testing.T
	bin, home             string
	client, relay, server *ns
	relayC, relayS        string // relay addresses on the client and server links
	channel               string // client_sidecar's secure channel to the server side
	ip                    string // the outlet's virtual address
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the TUN tests need root (network namespaces and /dev/net/tun); run `sudo make test`")
	}
	for _, tool := range []string{"ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: the TUN tests need %s", tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipping: no /dev/net/tun")
	}
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ockam")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ockam")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// sweepStale removes, once per test binary, the namespaces an earlier test
// binary left behind when it was killed (t.Cleanup does not run on
// SIGKILL): ok{c,r,s}-TAG where no live process has pid%100000 == TAG and
// no process is inside. Anything else is left alone.
var sweepStale = sync.OnceFunc(func() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	live := map[string]bool{}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			var pid int
			if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err == nil && pid > 0 {
				live[fmt.Sprint(pid%100000)] = true
			}
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || len(f[0]) < 5 || !strings.HasPrefix(f[0], "ok") || !strings.ContainsRune("crs", rune(f[0][2])) || f[0][3] != '-' {
			continue
		}
		tag := f[0][4:]
		if strings.Trim(tag, "0123456789") != "" || live[tag] {
			continue
		}
		if pids, err := exec.Command("ip", "netns", "pids", f[0]).Output(); err != nil || len(bytes.TrimSpace(pids)) > 0 {
			continue
		}
		run("ip", "netns", "del", f[0])
	}
})

func newNS(t *testing.T, name string) *ns {
	t.Helper()
	sweepStale()
	if err := run("ip", "netns", "add", name); err != nil {
		t.Skipf("skipping: cannot create network namespaces: %v", err)
	}
	t.Cleanup(func() {
		if err := run("ip", "netns", "del", name); err != nil {
			t.Error(err)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := run("ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return &ns{name: name, h: h}
}

// newWorld builds the namespaces and links, and starts the servers.
func newWorld(t *testing.T) *world {
	needRoot(t)
	w := &world{t: t, bin: buildBinary(t)}
	pid := os.Getpid()
	// A short home: the control sockets live under it (107-byte limit).
	home, err := os.MkdirTemp("/tmp", "okt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	w.home = home

	tag := fmt.Sprintf("%d", pid%100000)
	w.client = newNS(t, "okc-"+tag)
	w.relay = newNS(t, "okr-"+tag)
	w.server = newNS(t, "oks-"+tag)
	net8 := 100 + pid%100
	w.relayC = fmt.Sprintf("10.%d.0.1", net8)
	w.relayS = fmt.Sprintf("10.%d.1.1", net8)
	for _, c := range [][]string{
		{"link", "add", "c" + tag, "netns", w.client.name, "type", "veth", "peer", "name", "rc" + tag, "netns", w.relay.name},
		{"link", "add", "s" + tag, "netns", w.server.name, "type", "veth", "peer", "name", "rs" + tag, "netns", w.relay.name},
		{"-n", w.client.name, "addr", "add", fmt.Sprintf("10.%d.0.2/24", net8), "dev", "c" + tag},
		{"-n", w.relay.name, "addr", "add", w.relayC + "/24", "dev", "rc" + tag},
		{"-n", w.relay.name, "addr", "add", w.relayS + "/24", "dev", "rs" + tag},
		{"-n", w.server.name, "addr", "add", fmt.Sprintf("10.%d.1.2/24", net8), "dev", "s" + tag},
		{"-n", w.client.name, "link", "set", "c" + tag, "up"},
		{"-n", w.relay.name, "link", "set", "rc" + tag, "up"},
		{"-n", w.relay.name, "link", "set", "rs" + tag, "up"},
		{"-n", w.server.name, "link", "set", "s" + tag, "up"},
	} {
		if err := run("ip", c...); err != nil {
			t.Fatal(err)
		}
	}
	// The client's resolver: the TUN's DNS address (bind-mounted by ip netns exec).
	etc := "/etc/netns/" + w.client.name
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(etc+"/resolv.conf", []byte("nameserver 100.100.100.100\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Nodes go before the namespaces (cleanups run last-in first-out).
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(home, "nodes", "*", "node.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				for _, line := range strings.Split(string(b), "\n") {
					if strings.Contains(line, `"WARN"`) || strings.Contains(line, `"ERROR"`) || strings.Contains(line, "flow reset") {
						t.Logf("%s: %s", filepath.Base(filepath.Dir(l)), line)
					}
				}
			}
		}
		if out, err := w.cmd("", "node", "delete", "--all").CombinedOutput(); err != nil {
			t.Errorf("node delete --all: %v: %s", err, out)
		}
	})

	// No route from the client to the server: the server link is unreachable.
	if c, err := w.client.dial(fmt.Sprintf("10.%d.1.2:%d", net8, portHTTP), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("the client reaches the server without the tunnel")
	}
	w.startServers()
	return w
}

func (w *world) startServers() {
	t := w.t
	ln := w.server.listen(t, fmt.Sprintf("127.0.0.1:%d", portHTTP))
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, serverBody)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	serve := func(ln net.Listener, f func(net.Conn)) {
		var wg sync.WaitGroup
		t.Cleanup(func() { ln.Close(); wg.Wait() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() { defer wg.Done(); defer c.Close(); f(c) }()
			}
		}()
	}
	serve(w.server.listen(t, fmt.Sprintf("127.0.0.1:%d", portSink)), func(c net.Conn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			io.WriteString(c, hex.EncodeToString(h.Sum(nil))+"\n")
		}
	})
	serve(w.server.listen(t, fmt.Sprintf("127.0.0.1:%d", portEcho)), func(c net.Conn) {
		// Not io.Copy(c, c): TCP to TCP splices through a pipe pair held
		// for the connection's life, two more descriptors per echo
		// connection (TestTunIdleFlows ran out of them at 5,000 flows).
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4<<10))
	})
}

// cmd returns the ockam command, inside namespace n when n is not "".
func (w *world) cmd(n string, args ...string) *exec.Cmd {
	var c *exec.Cmd
	if n == "" {
		c = exec.Command(w.bin, args...)
	} else {
		c = exec.Command("ip", append([]string{"netns", "exec", n, w.bin}, args...)...)
	}
	c.Env = append(os.Environ(), "OCKAM_HOME="+w.home)
	return c
}

// waitNode polls until the node's state file is written: `node create`
// returns once the control socket answers, which can be a moment before.
func (w *world) waitNode(name string) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.try("", "", "node", "show", name)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("node %s: %v", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ockam runs the command and returns its standard output, trimmed.
func (w *world) ockam(n string, stdin string, args ...string) string {
	w.t.Helper()
	out, err := w.try(n, stdin, args...)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) try(n string, stdin string, args ...string) (string, error) {
	c := w.cmd(n, args...)
	c.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("ockam %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// up starts the three nodes, the outlet, the forwarder, the channel, the
// interface and the mapping.
func (w *world) up() {
	w.ockam(w.relay.name, "", "node", "create", "relay", "--tcp-listener-address", "0.0.0.0:4000")
	w.waitNode("relay")
	w.ockam(w.server.name, "", "node", "create", "server_sidecar")
	w.waitNode("server_sidecar")
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/outlet",
		"--to", "127.0.0.1", "--ports", fmt.Sprintf("%d,%d,%d,%d,%d", portHTTP, portIperf, portSink, portEcho, portWarm))
	w.ockam("", "", "forwarder", "create", "server_sidecar", "--at", "/ip4/"+w.relayS+"/tcp/4000", "--to", "/node/server_sidecar")
	w.ockam(w.client.name, "", "node", "create", "client_sidecar")
	w.waitNode("client_sidecar")
	w.ockam("", "", "tun", "create", "--at", "/node/client_sidecar")
	w.channel = w.ockam("", "", "secure-channel", "create", "--from", "/node/client_sidecar",
		"--to", "/ip4/"+w.relayC+"/tcp/4000/service/forward_to_server_sidecar/service/api")
	// As in `secure-channel create ... | ockam tun map --to -/service/outlet`.
	w.ip = w.ockam("", w.channel+"\n", "tun", "map", "--at", "/node/client_sidecar", "--to", "-/service/outlet", "--name", "api.ockam")
	w.t.Logf("channel %s, outlet mapped at %s (api.ockam)", w.channel, w.ip)
}

func (w *world) curl(args ...string) (string, error) {
	c := exec.Command("ip", append([]string{"netns", "exec", w.client.name, "curl", "--silent", "--show-error", "--max-time", "10"}, args...)...)
	out, err := c.CombinedOutput()
	return string(out), err
}

func TestTun(t *testing.T) {
	w := newWorld(t)
	w.up()
	addr := func(port int) string { return fmt.Sprintf("%s:%d", w.ip, port) }

	t.Run("curl", func(t *testing.T) {
		for _, url := range []string{"http://" + addr(portHTTP) + "/", fmt.Sprintf("http://api.ockam:%d/", portHTTP)} {
			out, err := w.curl(url)
			if err != nil || out != serverBody {
				t.Errorf("curl %s = %q, %v; want %q", url, out, err, serverBody)
			}
		}
	})

	t.Run("ipv6", func(t *testing.T) {
		var m struct {
			Mappings []struct{ IP6 string } `json:"mappings"`
		}
		if err := json.Unmarshal([]byte(w.ockam("", "", "tun", "show", "--at", "/node/client_sidecar", "--output", "json")), &m); err != nil || len(m.Mappings) != 1 {
			t.Fatalf("tun show: %v %+v", err, m)
		}
		url := fmt.Sprintf("http://[%s]:%d/", m.Mappings[0].IP6, portHTTP)
		if out, err := w.curl(url); err != nil || out != serverBody {
			t.Errorf("curl %s = %q, %v", url, out, err)
		}
	})

	t.Run("ping", func(t *testing.T) {
		if out, err := exec.Command("ip", "netns", "exec", w.client.name, "ping", "-c", "1", "-W", "2", w.ip).CombinedOutput(); err != nil {
			t.Errorf("ping %s: %v: %s", w.ip, err, out)
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, a := range []string{"100.64.0.99:80", addr(22)} { // unmapped; mapped, port not allowed
			start := time.Now()
			c, err := w.client.dial(a, 5*time.Second)
			d := time.Since(start)
			if err == nil {
				c.Close()
				t.Errorf("dial %s succeeded", a)
				continue
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s: %v, want connection refused", a, err)
			}
			if a == "100.64.0.99:80" && d > 100*time.Millisecond {
				t.Errorf("unmapped %s refused after %v, want < 100ms", a, d)
			}
			t.Logf("dial %s: refused in %v", a, d.Round(10*time.Microsecond))
		}
		if out, err := w.curl("http://unknown.ockam/"); err == nil || !strings.Contains(out, "resolve") {
			t.Errorf("curl unknown.ockam = %q, %v; want a resolve failure", out, err)
		}
	})

	// A flow that fails ends the application's connection with a reset,
	// never a FIN (a cut-short download must not read as complete); and a
	// target the outlet accepted lately is accepted at once (early data),
	// so when it goes away the next connection is reset after connect, and
	// the one after that, cold again, is refused at the SYN.
	t.Run("resets", func(t *testing.T) {
		ln := w.server.listen(t, fmt.Sprintf("127.0.0.1:%d", portWarm))
		const head = 1000
		served := make(chan struct{})
		go func() {
			defer close(served)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// Reset only once the flow has carried a byte (a reset
				// during the outlet's connect would be a refusal) and the
				// client has said it has head bytes (a reset discards what
				// the receiving socket has not read yet).
				if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
					c.Write(make([]byte, head))
					io.ReadFull(c, make([]byte, 1))
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close() // reset after head bytes
			}
		}()
		readAll := func() (int, error) {
			c, err := w.client.dial(addr(portWarm), 5*time.Second)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte("x"))
			n, err := io.ReadFull(c, make([]byte, head))
			if err != nil {
				return n, err
			}
			c.Write([]byte("y"))
			m, err := io.Copy(io.Discard, c)
			return n + int(m), err
		}
		// Cold: dial-then-accept; the server's reset comes through as one.
		if n, err := readAll(); n != head || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read %d bytes, then %v; want %d bytes and connection reset", n, err, head)
		}
		ln.Close()
		<-served
		// Warm: the connect succeeds at once; the outlet's refusal resets it.
		n, err := readAll()
		if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("warm target gone: read %d bytes, %v; want connect then connection reset", n, err)
		}
		// Cold again: refused at the SYN.
		if _, err := readAll(); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("after the reset: %v, want connection refused", err)
		}
	})

	t.Run("socks", func(t *testing.T) {
		// Plain loopback listener in the client namespace; no root needed for this part.
		from := w.ockam(w.client.name, w.channel+"\n", "socks", "create", "--at", "/node/client_sidecar", "--from", "127.0.0.1:1080", "--to", "-/service/outlet")
		if from != "127.0.0.1:1080" {
			t.Fatalf("socks create printed %q", from)
		}
		for _, args := range [][]string{
			{"--socks5", "127.0.0.1:1080", fmt.Sprintf("http://10.1.2.3:%d/", portHTTP)},
			{"--socks5-hostname", "127.0.0.1:1080", fmt.Sprintf("http://anything.example:%d/", portHTTP)},
			{"--socks5", "127.0.0.1:1080", fmt.Sprintf("http://[::1]:%d/", portHTTP)},
		} {
			if out, err := w.curl(args...); err != nil || out != serverBody {
				t.Errorf("curl %v = %q, %v", args, out, err)
			}
		}
		// A port the outlet does not allow: SOCKS reply 0x02 (not allowed by ruleset).
		out, err := w.curl("--socks5", "127.0.0.1:1080", "http://10.1.2.3:22/")
		if err == nil || !strings.Contains(out, "(2)") && !strings.Contains(strings.ToLower(out), "not allowed") {
			t.Errorf("curl through socks to port 22 = %q, %v; want the not-allowed reply", out, err)
		}
		// Without --to, hosts resolve through the mappings.
		w.ockam("", "", "socks", "create", "--at", "/node/client_sidecar", "--from", "127.0.0.1:1081")
		if out, err := w.curl("--socks5-hostname", "127.0.0.1:1081", fmt.Sprintf("http://api.ockam:%d/", portHTTP)); err != nil || out != serverBody {
			t.Errorf("curl via mapped name = %q, %v", out, err)
		}
		if out, err := w.curl("--socks5-hostname", "127.0.0.1:1081", "http://nope.ockam/"); err == nil {
			t.Errorf("unmapped name through socks = %q, want an error", out)
		}
		w.ockam("", "", "socks", "delete", "127.0.0.1:1080", "--at", "/node/client_sidecar")
		w.ockam("", "", "socks", "delete", "127.0.0.1:1081", "--at", "/node/client_sidecar")
	})

	t.Run("short_connections", func(t *testing.T) {
		echo := func(i int) error {
			c, err := w.client.dial(addr(portEcho), 10*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			msg := fmt.Sprintf("ping %d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				return err
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				return err
			}
			if string(got) != msg {
				return fmt.Errorf("echo %q, want %q", got, msg)
			}
			return nil
		}
		start := time.Now()
		for i := range 1000 {
			if err := echo(i); err != nil {
				t.Fatalf("connection %d in a row: %v", i, err)
			}
		}
		t.Logf("1000 connections in a row: %v (%v each)", time.Since(start).Round(time.Millisecond), (time.Since(start) / 1000).Round(time.Microsecond))

		start = time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Go(func() {
				if err := echo(i); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		n := 0
		for err := range errs {
			if n++; n <= 5 {
				t.Error(err)
			}
		}
		if n > 0 {
			t.Errorf("%d of 200 concurrent connections failed", n)
		}
		t.Logf("200 connections at once: %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("sha256_1GiB", func(t *testing.T) {
		const total = 1 << 30
		block := make([]byte, 1<<20)
		r := rand.New(rand.NewChaCha8([32]byte{1}))
		for i := range block {
			block[i] = byte(r.Uint32())
		}
		c, err := w.client.dial(addr(portSink), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(90 * time.Second))
		start := time.Now()
		h := sha256.New()
		for sent := 0; sent < total; sent += len(block) {
			block[0], block[1] = byte(sent>>20), byte(sent>>28) // no two blocks alike
			h.Write(block)
			if _, err := c.Write(block); err != nil {
				t.Fatalf("after %d bytes: %v", sent, err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("reading the server's sum: %v", err)
		}
		d := time.Since(start)
		want := hex.EncodeToString(h.Sum(nil))
		if strings.TrimSpace(line) != want {
			t.Fatalf("server sha256 %s, client %s", strings.TrimSpace(line), want)
		}
		t.Logf("1 GiB through the TUN in %v (%.2f Gbit/s), sha256 equal at both ends", d.Round(time.Millisecond), float64(total)*8/d.Seconds()/1e9)
		if d > 60*time.Second {
			t.Errorf("1 GiB took %v, want under 60s", d)
		}
	})

	t.Run("iperf3", func(t *testing.T) {
		if _, err := exec.LookPath("iperf3"); err != nil {
			t.Skip("skipping: iperf3 not installed (apt-get install -y iperf3)")
		}
		srv := exec.Command("ip", "netns", "exec", w.server.name, "iperf3", "-s", "-B", "127.0.0.1", "-p", fmt.Sprint(portIperf))
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
		// Readiness from the socket table, not by connecting: iperf3 takes
		// any connection for a test's control connection and stays busy.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := exec.Command("ip", "netns", "exec", w.server.name, "ss", "-Hltn", fmt.Sprintf("sport = :%d", portIperf)).Output()
			if strings.Contains(string(out), "LISTEN") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("iperf3 server not listening")
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The same single flow through a per-port inlet, for comparison.
		w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/iperf", "--to", fmt.Sprintf("127.0.0.1:%d", portIperf))
		w.ockam("", w.channel+"\n", "tcp-inlet", "create", "--at", "/node/client_sidecar", "--from", "127.0.0.1:15201", "--to", "-/service/iperf")

		for _, tc := range []struct {
			name, host, port string
			streams          int
		}{
			{"tun, 1 flow", w.ip, fmt.Sprint(portIperf), 1},
			{"tun, 8 flows", w.ip, fmt.Sprint(portIperf), 8},
			{"inlet, 1 flow", "127.0.0.1", "15201", 1},
		} {
			out, err := exec.Command("ip", "netns", "exec", w.client.name, "iperf3", "-c", tc.host, "-p", tc.port,
				"-t", "3", "-P", fmt.Sprint(tc.streams), "-J").Output()
			if err != nil {
				t.Errorf("iperf3 %s: %v: %s", tc.name, err, out)
				continue
			}
			// iperf3 may print a warning line before its JSON.
			if i := bytes.IndexByte(out, '{'); i > 0 {
				out = out[i:]
			}
			var res struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal(out, &res); err != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
				t.Errorf("iperf3 %s: %v %s", tc.name, err, res.Error)
				continue
			}
			t.Logf("iperf3 %s: %.2f Gbit/s", tc.name, res.End.SumReceived.BitsPerSecond/1e9)
		}
	})

	t.Run("show", func(t *testing.T) {
		out := w.ockam("", "", "tun", "show", "--at", "/node/client_sidecar")
		for _, want := range []string{"ockam0", w.ip, "api.ockam", "/service/outlet"} {
			if !strings.Contains(out, want) {
				t.Errorf("tun show lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("flows_listed_while_open", func(t *testing.T) {
		c, err := w.client.dial(addr(portEcho), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "12345")
		io.ReadFull(c, make([]byte, 5))
		var info struct {
			Flows []struct {
				BytesIn  uint64 `json:"bytes_in"`
				BytesOut uint64 `json:"bytes_out"`
				Target   string `json:"target"`
			} `json:"flows"`
		}
		json.Unmarshal([]byte(w.ockam("", "", "tun", "show", "--at", "/node/client_sidecar", "--output", "json")), &info)
		if len(info.Flows) != 1 || info.Flows[0].BytesIn != 5 || info.Flows[0].BytesOut != 5 || info.Flows[0].Target != addr(portEcho) {
			t.Errorf("flows = %+v, want one with 5 bytes each way to %s", info.Flows, addr(portEcho))
		}
	})

	t.Run("delete", func(t *testing.T) {
		w.ockam("", "", "tun", "delete", "--at", "/node/client_sidecar")
		if err := run("ip", "-n", w.client.name, "link", "show", "ockam0"); err == nil {
			t.Error("ockam0 still exists after tun delete")
		}
		for _, fam := range []string{"-4", "-6"} {
			out, _ := exec.Command("ip", "-n", w.client.name, fam, "route", "show", "table", "all").CombinedOutput()
			if bytes.Contains(out, []byte("100.64.")) || bytes.Contains(out, []byte("fd7a:6f63:6b6d")) || bytes.Contains(out, []byte("ockam0")) {
				t.Errorf("routes left after tun delete:\n%s", out)
			}
		}
		if _, err := w.try("", "", "tun", "delete", "--at", "/node/client_sidecar"); err == nil {
			t.Error("second tun delete succeeded")
		}
	})

	t.Run("node_stop_removes_interface", func(t *testing.T) {
		w.ockam("", "", "tun", "create", "--at", "/node/client_sidecar", "--name", "ockam1")
		if out, err := w.curl(fmt.Sprintf("http://api.ockam:%d/", portHTTP)); err != nil || out != serverBody {
			t.Errorf("curl after re-create = %q, %v", out, err)
		}
		c, err := w.client.dial(addr(portEcho), 5*time.Second) // a live flow while the node stops
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		w.ockam("", "", "node", "delete", "client_sidecar")
		if err := run("ip", "-n", w.client.name, "link", "show", "ockam1"); err == nil {
			t.Error("ockam1 still exists after the node stopped")
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("flow still open after the node stopped: %v", err)
		}
	})
}

// TestTunNeedsCapability: a node without CAP_NET_ADMIN says so in one line.
func TestTunNeedsCapability(t *testing.T) {
	w := nodeWithoutNetAdmin(t)
	cmd := w.cmd("", "tun", "create", "--at", "/node/nocap", "--name", fmt.Sprintf("okn%d", os.Getpid()%100000))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	msg := strings.TrimSpace(stderr.String())
	if err == nil || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "CAP_NET_ADMIN") {
		t.Fatalf("tun create without CAP_NET_ADMIN: err %v, stderr %q; want one line naming CAP_NET_ADMIN and a non-zero exit", err, msg)
	}
	t.Logf("%s", msg)
}

// nodeWithoutNetAdmin starts node "nocap" in a fresh OCKAM_HOME with
// CAP_NET_ADMIN dropped (setpriv), for the tests of the one-line refusal.
func nodeWithoutNetAdmin(t *testing.T) *world {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("skipping: needs setpriv to drop CAP_NET_ADMIN")
	}
	w := &world{t: t, bin: buildBinary(t)}
	home, err := os.MkdirTemp("/tmp", "okt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	w.home = home
	t.Cleanup(func() { w.cmd("", "node", "delete", "--all").Run() })
	c := exec.Command("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", w.bin, "node", "create", "nocap")
	c.Env = append(os.Environ(), "OCKAM_HOME="+home)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("node create without CAP_NET_ADMIN: %v: %s", err, out)
	}
	w.waitNode("nocap")
	return w
}
