package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/node"
)

// Ports of the servers that answer with the address they see.
const (
	portWho  = 5005 // on 127.0.0.1
	portWho6 = 5006 // on the server's IPv6 address
)

// TestOutletNetstack: in outlet netstack mode, the server sees the
// client's virtual source address, one per client identity, stable across
// connections and client restarts.
//
//	client ns: client_a, client_b (own identities), each with a tcp-inlet
//	relay ns:  relay
//	server ns: server_sidecar with `tcp-outlet create --netstack` (TUN ockamo0),
//	           HTTP servers answering with r.RemoteAddr on 127.0.0.1 and on an IPv6 address
func TestOutletNetstack(t *testing.T) {
	w := newWorld(t)
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	srv6 := fmt.Sprintf("fd00:%x::2", os.Getpid()%0xffff)
	if err := run("ip", "-n", w.server.name, "addr", "add", srv6+"/64", "dev", "s"+tag, "nodad"); err != nil {
		t.Fatal(err)
	}
	who := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, r.RemoteAddr) })
	for _, a := range []string{fmt.Sprintf("127.0.0.1:%d", portWho), fmt.Sprintf("[%s]:%d", srv6, portWho6)} {
		srv := &http.Server{Handler: who}
		go srv.Serve(w.server.listen(t, a))
		t.Cleanup(func() { srv.Close() })
	}

	w.ockam(w.relay.name, "", "node", "create", "relay", "--tcp-listener-address", "0.0.0.0:4000")
	w.waitNode("relay")
	w.ockam(w.server.name, "", "node", "create", "server_sidecar")
	w.waitNode("server_sidecar")
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/who",
		"--to", fmt.Sprintf("127.0.0.1:%d", portWho), "--netstack")
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/who6",
		"--to", fmt.Sprintf("[%s]:%d", srv6, portWho6), "--netstack")
	// The sha256 sink, through a netstack outlet and a plain one, to compare.
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/sink",
		"--to", fmt.Sprintf("127.0.0.1:%d", portSink), "--netstack")
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/sink_plain",
		"--to", fmt.Sprintf("127.0.0.1:%d", portSink))
	w.ockam("", "", "forwarder", "create", "server_sidecar", "--at", "/ip4/"+w.relayS+"/tcp/4000", "--to", "/node/server_sidecar")
	if err := run("ip", "-n", w.server.name, "link", "show", "ockamo0"); err != nil {
		t.Fatalf("no outlet interface in the server namespace: %v", err)
	}

	// Two client sidecars with their own identities, one inlet each (the
	// second client also gets one to the IPv6 target).
	inlet := map[string]string{"client_a": "127.0.0.1:16001", "client_b": "127.0.0.1:16002"}
	want := map[string]netip.Addr{}
	for _, name := range []string{"client_a", "client_b"} {
		w.ockam(w.client.name, "", "node", "create", name)
		w.waitNode(name)
		ch := w.ockam("", "", "secure-channel", "create", "--from", "/node/"+name,
			"--to", "/ip4/"+w.relayC+"/tcp/4000/service/forward_to_server_sidecar/service/api")
		w.ockam("", ch+"\n", "tcp-inlet", "create", "--at", "/node/"+name, "--from", inlet[name], "--to", "-/service/who")
		if name == "client_b" {
			for from, to := range map[string]string{"127.0.0.1:16003": "who6", "127.0.0.1:16004": "sink", "127.0.0.1:16005": "sink_plain"} {
				w.ockam("", ch+"\n", "tcp-inlet", "create", "--at", "/node/"+name, "--from", from, "--to", "-/service/"+to)
			}
		}
		id := w.ockam("", "", "identity", "show", name)
		want[name] = node.VirtualSource(id, false)
		t.Logf("%s: identifier %s, virtual source %s", name, id, want[name])
	}
	if want["client_a"] == want["client_b"] {
		t.Fatalf("both identities hash to %s; pick other node names", want["client_a"])
	}

	// seen fetches http://addr/ from the client namespace and returns the
	// remote address the server saw.
	seen := func(addr string) (netip.AddrPort, error) {
		out, err := w.curl("http://" + addr + "/")
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("curl %s: %v: %s", addr, err, out)
		}
		return netip.ParseAddrPort(out)
	}

	t.Run("per_identity", func(t *testing.T) {
		for _, name := range []string{"client_a", "client_b"} {
			var ports []uint16
			for range 2 { // the same client reconnecting: same address, another port
				got, err := seen(inlet[name])
				if err != nil {
					t.Fatal(err)
				}
				if got.Addr() != want[name] {
					t.Errorf("%s: the server saw %s, want %s (from the identifier)", name, got.Addr(), want[name])
				}
				ports = append(ports, got.Port())
			}
			t.Logf("%s: the server saw %s, ports %v", name, want[name], ports)
		}
	})

	t.Run("ipv6_target", func(t *testing.T) {
		id := w.ockam("", "", "identity", "show", "client_b")
		got, err := seen("127.0.0.1:16003")
		if err != nil {
			t.Fatal(err)
		}
		if w6 := node.VirtualSource(id, true); got.Addr() != w6 {
			t.Errorf("the IPv6 server saw %s, want %s", got.Addr(), w6)
		}
		t.Logf("client_b to [%s]: the server saw %s", srv6, got.Addr())
	})

	t.Run("sha256_256MiB", func(t *testing.T) {
		for _, tc := range []struct{ name, inlet string }{{"netstack outlet", "127.0.0.1:16004"}, {"plain outlet", "127.0.0.1:16005"}} {
			d, err := w.sink(tc.inlet, 256<<20)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			t.Logf("256 MiB through a %s in %v (%.2f Gbit/s), sha256 equal at both ends", tc.name, d.Round(time.Millisecond), float64(256<<20)*8/d.Seconds()/1e9)
		}
	})

	t.Run("client_restart", func(t *testing.T) {
		// A new node process, a new secure channel, the same identity.
		w.ockam(w.client.name, "", "node", "stop", "client_a")
		w.ockam(w.client.name, "", "node", "start", "client_a")
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, err := seen(inlet["client_a"])
			if err == nil {
				if got.Addr() != want["client_a"] {
					t.Errorf("after the restart the server saw %s, want %s", got.Addr(), want["client_a"])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client_a after restart: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("server_log", func(t *testing.T) {
		// The sidecar logs each client's address with its identifier once,
		// so an operator can tell who 198.18.x.y is.
		logged := map[string]string{} // src -> peer
		for _, line := range strings.Split(w.ockam("", "", "node", "logs", "server_sidecar"), "\n") {
			var e struct{ Msg, Peer, Src string }
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "outlet netstack client" {
				logged[e.Src] = e.Peer
			}
		}
		for _, name := range []string{"client_a", "client_b"} {
			if id := w.ockam("", "", "identity", "show", name); logged[want[name].String()] != id {
				t.Errorf("the server sidecar's log gives %s to %q, want %s (%s)", want[name], logged[want[name].String()], id, name)
			}
		}
	})

	t.Run("node_show", func(t *testing.T) {
		if out := w.ockam("", "", "node", "show", "server_sidecar"); !strings.Contains(out, "outlet netstack ockamo0") {
			t.Errorf("node show lacks the outlet interface:\n%s", out)
		}
	})

	t.Run("second_node_in_namespace", func(t *testing.T) {
		w.ockam(w.server.name, "", "node", "create", "server_two")
		w.waitNode("server_two")
		_, err := w.try("", "", "tcp-outlet", "create", "--at", "/node/server_two", "--from", "/service/who",
			"--to", fmt.Sprintf("127.0.0.1:%d", portWho), "--netstack")
		if err == nil || !strings.Contains(err.Error(), "in use on interface ockamo0") {
			t.Errorf("a second netstack outlet node in the namespace: %v; want the range-in-use error", err)
		}
		w.ockam("", "", "node", "delete", "server_two")
	})

	t.Run("node_stop_removes_interface", func(t *testing.T) {
		c, err := w.client.dial(inlet["client_b"], 5*time.Second) // a live flow while the node stops
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		w.ockam("", "", "node", "delete", "server_sidecar")
		if err := run("ip", "-n", w.server.name, "link", "show", "ockamo0"); err == nil {
			t.Error("ockamo0 still exists after the node stopped")
		}
		out, _ := exec.Command("ip", "-n", w.server.name, "route", "show", "table", "all").CombinedOutput()
		if bytes.Contains(out, []byte("198.18.")) || bytes.Contains(out, []byte("ockamo0")) {
			t.Errorf("routes left after the node stopped:\n%s", out)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("flow still open after the server sidecar stopped: %v", err)
		}
	})
}

// sink sends n bytes to the sha256 sink through addr (from the client
// namespace) and checks the sum it answers.
func (w *world) sink(addr string, n int) (time.Duration, error) {
	c, err := w.client.dial(addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	block := make([]byte, 1<<20)
	r := rand.New(rand.NewChaCha8([32]byte{2}))
	for i := range block {
		block[i] = byte(r.Uint32())
	}
	start := time.Now()
	h := sha256.New()
	for sent := 0; sent < n; sent += len(block) {
		block[0], block[1] = byte(sent>>20), byte(sent>>28)
		h.Write(block)
		if _, err := c.Write(block); err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", sent, err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the server's sum: %w", err)
	}
	if got, want := strings.TrimSpace(line), hex.EncodeToString(h.Sum(nil)); got != want {
		return 0, fmt.Errorf("server sha256 %s, client %s", got, want)
	}
	return time.Since(start), nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestOutletNetstackNeedsCapability: without CAP_NET_ADMIN, --netstack
// fails with one line naming it; the plain outlet works.
func TestOutletNetstackNeedsCapability(t *testing.T) {
	w := nodeWithoutNetAdmin(t)
	cmd := w.cmd("", "tcp-outlet", "create", "--at", "/node/nocap", "--from", "/service/ns", "--to", "127.0.0.1:5000", "--netstack")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	msg := strings.TrimSpace(stderr.String())
	if err == nil || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "CAP_NET_ADMIN") {
		t.Fatalf("tcp-outlet create --netstack without CAP_NET_ADMIN: err %v, stderr %q; want one line naming CAP_NET_ADMIN and a non-zero exit", err, msg)
	}
	t.Logf("%s", msg)
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/nocap", "--from", "/service/plain", "--to", "127.0.0.1:5000")
}
