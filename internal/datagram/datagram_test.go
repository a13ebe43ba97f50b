package datagram_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/internal/datagram"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world: a client node with a secure channel to a server node, whose
// outlet's UDP service sends to a UDP echo server on 127.0.0.1.
type world struct {
	client, server *router.Node
	route          routing.Route // to the outlet "outlet" through the channel
	outlet         *datagram.Outlet
	echo           *net.UDPConn
}

func newWorld(t *testing.T, cfg datagram.OutletConfig) *world {
	t.Helper()
	w := &world{}
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	w.echo = echo
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { echo.Close(); <-done })

	trust := func(identity.Identifier) error { return nil }
	cid, _ := identity.Generate(nil)
	sid, _ := identity.Generate(nil)
	w.client, w.server = router.New(router.Config{}), router.New(router.Config{})
	t.Cleanup(func() { w.client.Close(); w.server.Close() })
	sa, err := w.server.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cm, _ := secure.NewManager(w.client, secure.Config{Identity: cid, Trust: trust})
	sm, _ := secure.NewManager(w.server, secure.Config{Identity: sid, Trust: trust})
	t.Cleanup(func() { cm.Close(); sm.Close() })
	if _, err := sm.Listen("api", nil, false); err != nil {
		t.Fatal(err)
	}
	cfg.Address = "outlet" + datagram.ServiceSuffix
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 && cfg.Ports == nil {
		cfg.Port = uint16(echo.LocalAddr().(*net.UDPAddr).Port)
	}
	if cfg.Allowed == nil {
		cfg.Allowed = func(string) error { return nil }
	}
	w.outlet, err = datagram.NewOutlet(w.server, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.outlet.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := cm.Create(ctx, routing.Route{routing.TCPAddr(sa.String()), routing.LocalAddr("api")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.route, err = datagram.ServiceRoute(append(ch.Route(), routing.LocalAddr("outlet")))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// serve runs an association for the app end of a socket pair and returns
// the app's end and Serve's result.
func (w *world) serve(t *testing.T, cfg datagram.Config, port uint16, st *datagram.Stats) (net.Conn, <-chan error) {
	t.Helper()
	app, local := udpPair(t)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		errc <- datagram.Serve(ctx, w.client, w.route, port, local, cfg, st)
	}()
	t.Cleanup(func() { cancel(); <-done; app.Close() })
	return app, errc
}

// udpPair returns two connected UDP sockets on loopback.
func udpPair(t *testing.T) (a, b *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err = net.DialUDP("udp", nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	a, err = net.DialUDP("udp", a.LocalAddr().(*net.UDPAddr), b.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestEcho(t *testing.T) {
	w := newWorld(t, datagram.OutletConfig{})
	var st datagram.Stats
	app, errc := w.serve(t, datagram.Config{}, 0, &st)
	buf := make([]byte, 70000)
	for _, n := range []int{0, 1, 1400, 9000, datagram.MaxDatagram} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		app.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := app.Write(msg); err != nil {
			t.Fatal(err)
		}
		m, err := app.Read(buf)
		if err != nil || !bytes.Equal(buf[:m], msg) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", n, m, err)
		}
	}
	// Too big to carry: dropped and counted, the association goes on.
	app.Write(make([]byte, datagram.MaxDatagram+1))
	app.Write([]byte("after"))
	if m, err := app.Read(buf); err != nil || string(buf[:m]) != "after" {
		t.Fatalf("after a too-big datagram: %q, %v", buf[:m], err)
	}
	if st.Dropped.Load() != 1 {
		t.Errorf("Dropped = %d, want 1", st.Dropped.Load())
	}
	if w.outlet.Stats.Open.Load() != 1 || w.outlet.Stats.Total.Load() != 1 {
		t.Errorf("outlet associations open %d, total %d; want 1, 1", w.outlet.Stats.Open.Load(), w.outlet.Stats.Total.Load())
	}
	w.outlet.Close()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "outlet deleted") {
			t.Errorf("Serve after the outlet closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not end when the outlet closed")
	}
}

func TestIdle(t *testing.T) {
	w := newWorld(t, datagram.OutletConfig{Idle: time.Hour})
	app, errc := w.serve(t, datagram.Config{Idle: 200 * time.Millisecond}, 0, nil)
	app.Write([]byte("x"))
	select {
	case err := <-errc:
		if !errors.Is(err, datagram.ErrIdle) {
			t.Errorf("Serve: %v, want ErrIdle", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no idle timeout")
	}
	// The client told the outlet, which frees the association.
	deadline := time.Now().Add(5 * time.Second)
	for w.outlet.Stats.Open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the outlet kept the association after the client's close")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  datagram.OutletConfig
		port uint16
		want string
	}{
		{"port", datagram.OutletConfig{Ports: []uint16{53}}, 54, "udp port 54 is not allowed"},
		{"no port", datagram.OutletConfig{Ports: []uint16{53}}, 0, "needs a destination port"},
		{"identity", datagram.OutletConfig{Allowed: func(string) error { return errors.New("not trusted") }}, 0, "not allowed"},
		{"allow list", datagram.OutletConfig{Allow: []string{"Inobody"}}, 0, "not allowed at this outlet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, tc.cfg)
			app, errc := w.serve(t, datagram.Config{}, tc.port, nil)
			app.Write([]byte("x"))
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Serve: %v, want %q", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no refusal")
			}
			if !strings.Contains(w.outlet.LastError(), tc.want) {
				t.Errorf("LastError %q", w.outlet.LastError())
			}
		})
	}
}

// TestMany: 10,000 datagrams through one association, none corrupted,
// loss reported (loopback: none expected beyond a small share).
func TestMany(t *testing.T) {
	w := newWorld(t, datagram.OutletConfig{})
	var st datagram.Stats
	app, _ := w.serve(t, datagram.Config{}, 0, &st)
	const total = 10000
	got := make(chan int, 1)
	var recv atomic.Int64
	go func() {
		seen := map[string]bool{}
		buf := make([]byte, 2000)
		for {
			app.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := app.Read(buf)
			if err != nil {
				got <- len(seen)
				return
			}
			var i int
			if _, err := fmt.Sscanf(string(buf[:n]), "datagram %d ", &i); err != nil || string(buf[:n]) != payload(i) {
				t.Errorf("corrupted datagram %q", buf[:n])
			}
			seen[string(buf[:n])] = true
			recv.Add(1)
		}
	}()
	// At most 32 datagrams in flight: a sender paced by the echoes, so
	// that loss means a fault, not a full socket buffer.
	for i := 0; i < total; i++ {
		deadline := time.Now().Add(100 * time.Millisecond)
		for int64(i)-recv.Load() >= 32 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Microsecond)
		}
		app.Write([]byte(payload(i)))
	}
	n := <-got
	t.Logf("%d of %d datagrams echoed (loss %.2f%%), client dropped %d, outlet dropped %d", n, total, 100*float64(total-n)/total, st.Dropped.Load(), w.outlet.Stats.Dropped.Load())
	if n < total*9/10 {
		t.Errorf("only %d of %d datagrams came back", n, total)
	}
}

func payload(i int) string {
	return fmt.Sprintf("datagram %d %s", i, strings.Repeat(string(rune('a'+i%26)), 100+i%1000))
}
