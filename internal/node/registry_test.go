package node_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/home"
	"github.com/ockam-go/ockam/internal/node"
)

// world is one $OCKAM_HOME with in-process nodes driven through their
// control sockets by the typed client, as the command does.
type world struct {
	t     *testing.T
	h     home.Home
	nodes map[string]*node.Daemon
}

func newWorld(t *testing.T) *world {
	t.Helper()
	// Short: the control socket path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, h: home.Home{Dir: dir}, nodes: map[string]*node.Daemon{}}
	t.Cleanup(func() {
		for _, d := range w.nodes {
			d.Close()
		}
		os.RemoveAll(dir)
	})
	return w
}

// start starts (or, with restore, restarts) a node on listen.
func (w *world) start(name, listen string, restore bool) *api.Client {
	w.t.Helper()
	d, err := node.Start(node.Config{Home: w.h, Name: name, Listen: listen, Restore: restore})
	if err != nil {
		w.t.Fatalf("starting %s: %v", name, err)
	}
	w.nodes[name] = d
	return api.NewClient(name, w.h.SocketPath(name))
}

// stop closes a node gracefully; its configuration stays.
func (w *world) stop(name string) string {
	w.t.Helper()
	d := w.nodes[name]
	addr := d.Addr().String()
	d.Close()
	delete(w.nodes, name)
	return addr
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes a line on c and expects it back.
func roundTrip(c net.Conn, msg string) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("echo %q, want %q", b, msg)
	}
	return nil
}

func viaInlet(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return roundTrip(c, "through the inlet")
}

// viaSocks does a SOCKS5 CONNECT to host:port (a mapped name) through the
// listener at addr.
func viaSocks(addr, host string, port uint16) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}
	req = binary.BigEndian.AppendUint16(append(req, host...), port)
	if _, err := c.Write(req); err != nil {
		c.Close()
		return err
	}
	reply := make([]byte, 2+10)
	if _, err := io.ReadFull(c, reply); err != nil {
		c.Close()
		return err
	}
	if reply[3] != 0 {
		c.Close()
		return fmt.Errorf("socks reply %d", reply[3])
	}
	return roundTrip(c, "through socks")
}

// eventually polls f until it succeeds or d passes, and returns how long
// it took.
func eventually(t *testing.T, d time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartRestoresEveryResource creates one resource of each kind that
// needs no root (outlet, relay registration, channel through the relay,
// listener, inlet, mapping, SOCKS listener) across a server, a relay and a
// client node, restarts the client and then the server, and finds each
// resource back and working, with no command re-run. (The interface and
// the netstack outlet need root: integration/restart_test.go.)
func TestRestartRestoresEveryResource(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	target := echoServer(t)
	_, port, _ := net.SplitHostPort(target)
	var p uint16
	fmt.Sscan(port, &p)

	w.start("rly", "127.0.0.1:0", false)
	srv := w.start("srv", "127.0.0.1:0", false)
	cli := w.start("cli", "127.0.0.1:0", false)
	c := ctx(t)
	if _, err := srv.CreateOutlet(c, api.CreateOutlet{From: "/service/outlet", To: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreateRelay(c, api.CreateRelay{Name: "srv", At: "/node/rly"}); err != nil {
		t.Fatal(err)
	}
	ch, err := cli.CreateChannel(c, api.CreateChannel{To: "/node/rly/service/forward_to_srv/service/api"})
	if err != nil {
		t.Fatal(err)
	}
	toOutlet := ch.Address + "/service/outlet"
	in, err := cli.CreateInlet(c, api.CreateInlet{Name: "web", From: "127.0.0.1:0", To: toOutlet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.CreateListener(c, api.CreateListener{Address: "extra"}); err != nil {
		t.Fatal(err)
	}
	m, err := cli.CreateMapping(c, api.CreateMapping{To: "/service/outlet", Name: "echo"})
	if err == nil {
		// A mapping through the channel: delete the first and map again,
		// which also checks that delete forgets.
		cli.DeleteMapping(c, m.IP)
	}
	m, err = cli.CreateMapping(c, api.CreateMapping{To: toOutlet, Name: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := cli.CreateSocks(c, api.CreateSocks{From: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		took := eventually(t, 5*time.Second, when+": inlet", func() error { return viaInlet(in.From) })
		eventually(t, 5*time.Second, when+": socks to "+m.Name, func() error { return viaSocks(sk.From, m.Name, p) })
		ls, err := cli.Listeners(c)
		if err != nil || !strings.Contains(fmt.Sprint(ls), "/service/extra") {
			t.Fatalf("%s: listeners %+v, %v", when, ls, err)
		}
		// The listener works: the server opens a channel to it.
		eventually(t, 5*time.Second, when+": channel to the listener", func() error {
			sc, err := srv.CreateChannel(c, api.CreateChannel{To: "/node/cli/service/extra", Timeout: 2 * time.Second})
			if err == nil {
				err = srv.DeleteChannel(c, sc.Address)
			}
			return err
		})
		info, err := cli.Info(c)
		if err != nil || len(info.RestoreErrors) > 0 {
			t.Fatalf("%s: info %+v, %v", when, info.RestoreErrors, err)
		}
		t.Logf("%s: inlet works after %v", when, took.Round(time.Millisecond))
	}
	check("before restarts")

	for _, name := range []string{"cli", "srv"} {
		addr := w.stop(name)
		cl := w.start(name, addr, true)
		if name == "cli" {
			cli = cl
		} else {
			srv = cl
		}
		back := time.Now()
		check("after restarting " + name)
		if d := time.Since(back); d > 2*time.Second {
			t.Errorf("after restarting %s: new connections took %v, want within 2s", name, d)
		}
	}

	// What was recorded, by kind: one of each, nothing twice.
	conf, err := w.h.ReadConfig("cli")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, r := range conf.Resources {
		kinds[r.Kind]++
	}
	if fmt.Sprint(kinds) != "map[channel:1 inlet:1 listener:1 mapping:1 socks:1]" {
		t.Errorf("client recorded %v", kinds)
	}
	conf, _ = w.h.ReadConfig("srv")
	kinds = map[string]int{}
	for _, r := range conf.Resources {
		kinds[r.Kind]++
	}
	if fmt.Sprint(kinds) != "map[outlet:1 relay:1]" {
		t.Errorf("server recorded %v (the channels it opened were deleted)", kinds)
	}

	// Deleting forgets: nothing of the client is restored after this.
	for _, del := range []func() error{
		func() error { return cli.DeleteInlet(c, "web") },
		func() error { return cli.DeleteSocks(c, sk.From) },
		func() error { return cli.DeleteMapping(c, m.Name) },
		func() error { return cli.DeleteListener(c, "extra") },
		func() error { return cli.DeleteChannel(c, ch.Address) },
	} {
		if err := del(); err != nil {
			t.Fatal(err)
		}
	}
	conf, _ = w.h.ReadConfig("cli")
	if len(conf.Resources) != 0 {
		t.Errorf("after deleting everything the client still records %+v", conf.Resources)
	}
	if err := cli.DeleteInlet(c, "web"); !api.IsNotFound(err) {
		t.Errorf("deleting a deleted inlet: %v, want not found", err)
	}
}

// A resource that cannot come back (its port is taken) does not stop the
// node: it is reported and kept for the next start.
func TestRestoreFailureIsReportedAndKept(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start("n", "127.0.0.1:0", false)
	c := ctx(t)
	// A new inlet's route must end at an outlet (it is probed).
	if _, err := n.CreateOutlet(c, api.CreateOutlet{From: "/service/outlet", To: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	in, err := n.CreateInlet(c, api.CreateInlet{Name: "x", From: "127.0.0.1:0", To: "/service/outlet"})
	if err != nil {
		t.Fatal(err)
	}
	addr := w.stop("n")
	squat, err := net.Listen("tcp", in.From)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", in.From, err)
	}
	n = w.start("n", addr, true)
	info, err := n.Info(c)
	if err != nil || len(info.RestoreErrors) != 1 || !strings.Contains(info.RestoreErrors[0], "inlet x") {
		t.Fatalf("restore errors %q, %v", info.RestoreErrors, err)
	}
	squat.Close()
	conf, _ := w.h.ReadConfig("n")
	if len(conf.Resources) != 2 {
		t.Fatalf("the failed inlet was dropped from the configuration: %+v", conf.Resources)
	}
	addr = w.stop("n")
	n = w.start("n", addr, true)
	if _, err := n.Inlet(c, "x"); err != nil {
		t.Fatalf("the inlet did not come back once its port was free: %v", err)
	}
}

// Bad requests are one-line errors with a status, never a panic.
func TestControlErrors(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start("n", "127.0.0.1:0", false)
	c := ctx(t)
	for _, tc := range []struct {
		name string
		call func() error
		code int
	}{
		{"outlet without address", func() error {
			_, err := n.CreateOutlet(c, api.CreateOutlet{From: "/service/a/b", To: "x:1"})
			return err
		}, 400},
		{"no such inlet", func() error { _, err := n.Inlet(c, "nope"); return err }, 404},
		{"inlet name with a slash", func() error { _, err := n.Inlet(c, "a/b"); return err }, 404},
		{"empty name", func() error { return n.DeleteInlet(c, "") }, 0},
		{"bad route", func() error { _, err := n.Send(c, api.SendMessage{To: "/nope/x"}); return err }, 400},
		{"listener twice", func() error { _, err := n.CreateListener(c, api.CreateListener{Address: "api"}); return err }, 409},
	} {
		err := tc.call()
		var se *api.StatusError
		switch {
		case err == nil:
			t.Errorf("%s: no error", tc.name)
		case strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error of more than one line: %q", tc.name, err)
		case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code):
			t.Errorf("%s: %v, want status %d", tc.name, err, tc.code)
		}
	}
}
