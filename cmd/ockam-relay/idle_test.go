package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/transport"
	"github.com/ockam-go/ockam/relay"
)

// TestIdleConnectionsAndGarbage runs the relay binary, opens 10,000 idle
// connections to it (each past the version byte) plus connections that send
// garbage, and checks that its memory stays bounded and that it keeps
// forwarding for a registered node meanwhile.
func TestIdleConnectionsAndGarbage(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 connections")
	}
	const conns = 10000
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if need := uint64(conns + 1000); lim.Max < need && os.Geteuid() == 0 {
		raised := syscall.Rlimit{Cur: need, Max: need}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	if lim.Max < conns+1000 {
		t.Skipf("needs %d file descriptors, the hard limit is %d", conns+1000, lim.Max)
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)

	p := startRelay(t, "--log-level", "warn", "--max-conns-per-ip", "20000", "--max-conns", "20000")
	addr, cmd := p.addr, p.cmd
	// A registrant and a sender, to check forwarding under load.
	b := router.New(router.Config{})
	defer b.Close()
	id, _ := identity.Generate(nil)
	reg, _ := relay.Register(b, routing.Route{routing.TCPAddr(addr)}, "b", id, nil)
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	a := router.New(router.Config{})
	defer a.Close()
	echo, _ := routing.ParseRoute("/tcp/"+addr+"/service/forward_to_b/service/echo", nil)
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := a.Request(ctx, echo, []byte("ping"))
		return err
	}
	base := rssKiB(t, cmd.Process.Pid)

	idle := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Write(transport.Preamble())
		idle = append(idle, c)
	}
	// Garbage: wrong version, oversize frame, bad message.
	for _, g := range [][]byte{{9}, append(transport.Preamble(), 0xff, 0xff, 0xff, 0xff), append(transport.Preamble(), 0, 0, 0, 3, 40, 1, 2)} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(g)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadByte(); err == nil {
			// The version byte comes first; then the relay must close.
			_, err = c.Read(make([]byte, 64))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("relay kept a connection that sent %x", g)
			}
		}
		c.Close()
	}
	if err := ping(); err != nil {
		t.Fatalf("forwarding with %d idle connections: %v", conns, err)
	}
	// Let the relay settle, then measure.
	var rss int
	for i := 0; i < 20; i++ {
		rss = rssKiB(t, cmd.Process.Pid)
		time.Sleep(50 * time.Millisecond)
	}
	per := float64(rss-base) / conns
	t.Logf("relay RSS %d KiB before, %d KiB with %d idle connections: %.1f KiB each", base, rss, conns, per)
	if per > 64 {
		t.Errorf("%.1f KiB per idle connection: memory not bounded", per)
	}
}

func rssKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}
