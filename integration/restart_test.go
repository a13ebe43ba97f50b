package integration

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/node"
)

// TestRestartRestoresEverything creates one resource of each kind on two
// nodes in their own namespaces, among them those that need root (the
// client's TUN with a mapping, the server's netstack outlet), and restarts
// each node gracefully (node stop) and by SIGKILL: after each `node start`
// everything is back and working, with no command re-run.
//
//	ctlc-N: client_sidecar: secure channel, listener, inlet (to the
//	        netstack outlet), TUN + mapping, SOCKS, relay registration
//	   | veth 10.M.77.2 -- 10.M.77.1
//	ctls-N: server_sidecar on 0.0.0.0:4000: plain outlet (echo), netstack
//	        outlet (who: answers the address it sees), hosts the relay name
func TestRestartRestoresEverything(t *testing.T) {
	needRoot(t)
	w := &world{t: t, bin: buildBinary(t)}
	home, err := os.MkdirTemp("/tmp", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	w.home = home
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	w.client = newNS(t, "ctlc-"+tag)
	w.server = newNS(t, "ctls-"+tag)
	net8 := 150 + os.Getpid()%100
	srvIP, cliIP := fmt.Sprintf("10.%d.77.1", net8), fmt.Sprintf("10.%d.77.2", net8)
	for _, c := range [][]string{
		{"link", "add", "ctlc" + tag, "netns", w.client.name, "type", "veth", "peer", "name", "ctls" + tag, "netns", w.server.name},
		{"-n", w.client.name, "addr", "add", cliIP + "/24", "dev", "ctlc" + tag},
		{"-n", w.server.name, "addr", "add", srvIP + "/24", "dev", "ctls" + tag},
		{"-n", w.client.name, "link", "set", "ctlc" + tag, "up"},
		{"-n", w.server.name, "link", "set", "ctls" + tag, "up"},
	} {
		if err := run("ip", c...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"client_sidecar", "server_sidecar"} {
				b, _ := os.ReadFile(home + "/nodes/" + n + "/node.log")
				t.Logf("log of %s:\n%s", n, b)
			}
		}
		if out, err := w.cmd("", "node", "delete", "--all").CombinedOutput(); err != nil {
			t.Errorf("node delete --all: %v: %s", err, out)
		}
	})
	echo := w.server.listen(t, fmt.Sprintf("127.0.0.1:%d", portEcho))
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	who := w.server.listen(t, fmt.Sprintf("127.0.0.1:%d", portWho))
	go func() {
		for {
			c, err := who.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()

	at := func(n string) string { return "/node/" + n }
	w.ockam(w.server.name, "", "node", "create", "server_sidecar", "--tcp-listener-address", "0.0.0.0:4000")
	w.waitNode("server_sidecar")
	w.ockam("", "", "tcp-outlet", "create", "--at", at("server_sidecar"), "--from", "/service/echoer", "--to", fmt.Sprintf("127.0.0.1:%d", portEcho))
	w.ockam("", "", "tcp-outlet", "create", "--at", at("server_sidecar"), "--from", "/service/who", "--to", fmt.Sprintf("127.0.0.1:%d", portWho), "--netstack")
	w.ockam(w.client.name, "", "node", "create", "client_sidecar", "--tcp-listener-address", "0.0.0.0:4001")
	w.waitNode("client_sidecar")
	ch := w.ockam("", "", "secure-channel", "create", "--from", at("client_sidecar"), "--to", "/ip4/"+srvIP+"/tcp/4000/service/api")
	w.ockam("", "", "secure-channel-listener", "create", "extra", "--at", at("client_sidecar"))
	w.ockam("", ch+"\n", "tcp-inlet", "create", "--at", at("client_sidecar"), "--from", "127.0.0.1:16101", "--to", "-/service/who")
	w.ockam("", "", "tun", "create", "--at", at("client_sidecar"))
	ip := w.ockam("", ch+"\n", "tun", "map", "--at", at("client_sidecar"), "--to", "-/service/echoer", "--name", "echo.ockam")
	w.ockam("", "", "socks", "create", "--at", at("client_sidecar"), "--from", "127.0.0.1:16102")
	w.ockam("", "", "forwarder", "create", "client_sidecar", "--at", "/ip4/"+srvIP+"/tcp/4000", "--to", at("client_sidecar"))
	clientID := w.ockam("", "", "identity", "show", "client_sidecar")
	wantSrc := node.VirtualSource(clientID, false)

	echoOn := func(c net.Conn, err error) error {
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
			return fmt.Errorf("echo %q: %v", b, err)
		}
		return nil
	}
	checks := []struct {
		what string
		f    func() error
	}{
		{"inlet through the channel to the netstack outlet", func() error {
			c, err := w.client.dial("127.0.0.1:16101", time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil {
				return err
			}
			got, err := netip.ParseAddrPort(string(b))
			if err != nil || got.Addr() != wantSrc {
				return fmt.Errorf("the server saw %q, want %s", b, wantSrc)
			}
			return nil
		}},
		{"TUN mapping " + ip, func() error { return echoOn(w.client.dial(net.JoinHostPort(ip, fmt.Sprint(portEcho)), time.Second)) }},
		{"SOCKS to echo.ockam", func() error {
			c, err := w.client.dial("127.0.0.1:16102", time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			host := "echo.ockam"
			req := binary.BigEndian.AppendUint16(append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...), portEcho)
			reply := make([]byte, 12)
			if _, err := c.Write(req); err == nil {
				_, err = io.ReadFull(c, reply)
			}
			if err != nil || reply[3] != 0 {
				c.Close()
				return fmt.Errorf("socks: reply %v, %v", reply, err)
			}
			return echoOn(c, nil)
		}},
		{"listener extra (the server opens a channel to it)", func() error {
			out, err := w.try("", "", "secure-channel", "create", "--from", at("server_sidecar"), "--to", "/ip4/"+cliIP+"/tcp/4001/service/extra", "--timeout", "2s")
			if err == nil {
				_, err = w.try("", "", "secure-channel", "delete", out, "--at", at("server_sidecar"))
			}
			return err
		}},
		{"relay name registered at the server", func() error {
			var info struct {
				Relays struct {
					Registered []struct {
						Name      string `json:"name"`
						Connected bool   `json:"connected"`
					} `json:"registered"`
				} `json:"relays"`
				RestoreErrors []string `json:"restore_errors"`
			}
			out, err := w.try("", "", "node", "show", "client_sidecar", "--output", "json")
			if err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				return err
			}
			if len(info.RestoreErrors) > 0 {
				return fmt.Errorf("restore errors: %q", info.RestoreErrors)
			}
			if len(info.Relays.Registered) != 1 || !info.Relays.Registered[0].Connected {
				return fmt.Errorf("relays %+v", info.Relays.Registered)
			}
			return nil
		}},
	}
	checkAll := func(when string) {
		t.Helper()
		start := time.Now()
		for _, c := range checks {
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := c.f()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s: %v", when, c.what, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		t.Logf("%s: everything works after %v", when, time.Since(start).Round(time.Millisecond))
	}
	checkAll("created")

	for _, tc := range []struct{ node, ns, how string }{
		{"client_sidecar", w.client.name, "stop"}, {"server_sidecar", w.server.name, "stop"},
		{"client_sidecar", w.client.name, "kill"}, {"server_sidecar", w.server.name, "kill"},
	} {
		var st struct {
			PID int `json:"pid"`
		}
		json.Unmarshal([]byte(w.ockam("", "", "node", "show", tc.node, "--output", "json")), &st)
		if tc.how == "kill" {
			syscall.Kill(st.PID, syscall.SIGKILL)
			for deadline := time.Now().Add(5 * time.Second); syscall.Kill(st.PID, 0) == nil; {
				if time.Now().After(deadline) {
					t.Fatalf("%s survived SIGKILL", tc.node)
				}
				time.Sleep(10 * time.Millisecond)
			}
		} else {
			w.ockam("", "", "node", "stop", tc.node)
		}
		// node start in the node's namespace: the node process is spawned
		// from it.
		w.ockam(tc.ns, "", "node", "start", tc.node)
		checkAll(tc.node + " " + tc.how + "/start")
	}
	if out := w.ockam("", "", "tun", "show", "--at", at("client_sidecar")); !strings.Contains(out, "echo.ockam") {
		t.Errorf("tun show after the restarts:\n%s", out)
	}
}
