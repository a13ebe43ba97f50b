package portal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
	"github.com/ockam-go/ockam/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world is client sidecar -> relay -> server sidecar, with a secure channel
// from client to server, an outlet on the server to target and an inlet on
// the client.
type world struct {
	client, server, relayN *router.Node
	cm, sm                 *secure.Manager
	cp, sp                 *portal.Portals
	ch                     *secure.Channel
	inlet                  *portal.Inlet
	relayAddr              string
	sid                    *identity.Secret
}

func trustAll(identity.Identifier) error { return nil }

func newWorld(t testing.TB, target string) *world {
	t.Helper()
	return newWorldConfig(t, target, portal.Config{}, portal.Config{})
}

// newWorldConfig is newWorld with the client's and the server's portal
// configurations (Path and Allowed are filled in).
func newWorldConfig(t testing.TB, target string, ccfg, scfg portal.Config) *world {
	t.Helper()
	w := &world{}
	log := testLogger(t)
	w.relayN = router.New(router.Config{Logger: log.With("node", "relay")})
	ra, err := w.relayN.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.relayAddr = ra.String()
	svc, _ := relay.NewService(w.relayN, relay.Config{})

	cid, _ := identity.Generate(nil)
	sid, _ := identity.Generate(nil)
	w.sid = sid
	clog, slg := log.With("node", "client"), log.With("node", "server")
	w.client, w.server = router.New(router.Config{Logger: clog}), router.New(router.Config{Logger: slg})
	w.cm, _ = secure.NewManager(w.client, secure.Config{Identity: cid, Trust: trustAll, Logger: clog})
	w.sm, _ = secure.NewManager(w.server, secure.Config{Identity: sid, Trust: trustAll, Logger: slg})
	if _, err := w.sm.Listen("api", nil, false); err != nil {
		t.Fatal(err)
	}
	if ccfg.Logger == nil {
		ccfg.Logger, scfg.Logger = clog, slg
	}
	ccfg.Path, ccfg.Allowed = w.cm, func(string) error { return nil }
	scfg.Path, scfg.Allowed = w.sm, func(string) error { return nil }
	w.cp, _ = portal.New(w.client, ccfg)
	w.sp, _ = portal.New(w.server, scfg)
	if _, err := w.sp.CreateOutlet(portal.OutletConfig{Address: "outlet", Target: target}); err != nil {
		t.Fatal(err)
	}
	reg, _ := relay.Register(w.server, routing.Route{routing.TCPAddr(w.relayAddr)}, "server", sid, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rt, _ := routing.ParseRoute("/tcp/"+w.relayAddr+"/service/forward_to_server/service/api", nil)
	w.ch, err = w.cm.Create(ctx, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.inlet, err = w.cp.CreateInlet("", "127.0.0.1:0", append(w.ch.Route(), routing.LocalAddr("outlet")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.cp.Close()
		w.sp.Close()
		reg.Close()
		w.cm.Close()
		w.sm.Close()
		svc.Close()
		w.client.Close()
		w.server.Close()
		w.relayN.Close()
	})
	return w
}

// testLogger keeps the nodes' debug logs of a test, up to maxTestLogs, and
// prints them if it fails (PORTAL_LOGS=1: always).
func testLogger(t testing.TB) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if t.Failed() || os.Getenv("PORTAL_LOGS") != "" {
			t.Logf("node logs:\n%s", buf.Bytes())
		}
	})
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

const maxTestLogs = 4 << 20

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < maxTestLogs {
		l.b.Write(b)
	}
	return len(b), nil
}

// server is a real TCP server run by the test.
type server struct {
	ln net.Listener
	wg sync.WaitGroup
}

func serve(t testing.TB, handle func(c *net.TCPConn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func dialInlet(t *testing.T, w *world) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", w.inlet.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// echo with half-close: read everything, then write it back, then close.
func echoAfterEOF(c *net.TCPConn) {
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	c.Write(b)
}

func TestHalfCloseEcho(t *testing.T) {
	s := serve(t, echoAfterEOF)
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	msg := []byte("request that ends with a half-close")
	c.Write(msg)
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

func TestIntegrityBothWays(t *testing.T) {
	const size = 32 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	var upSum [32]byte
	s := serve(t, func(c *net.TCPConn) {
		h := sha256.New()
		io.Copy(h, c)
		copy(upSum[:], h.Sum(nil))
		c.Write(payload)
	})
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	go func() { c.Write(payload); c.CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("download: %d bytes, sha256 differs=%v", n, !bytes.Equal(h.Sum(nil), want[:]))
	}
	if upSum != want {
		t.Fatal("upload sha256 differs")
	}
}

func TestManyConcurrentFlows(t *testing.T) {
	const flows, size = 50, 1 << 20
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	var wg sync.WaitGroup
	errs := make(chan error, flows)
	for i := 0; i < flows; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", w.inlet.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			data := make([]byte, size)
			rand.Read(data)
			go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				errs <- fmt.Errorf("flow got %d bytes, corrupted or short", len(got))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDialFailureResetsClient(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	w := newWorld(t, dead)
	start := time.Now()
	// The reset may come so fast that it beats the end of connect().
	c, err := net.Dial("tcp", w.inlet.Addr().String())
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("err = %v, want connection reset", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("reset took %v", d)
	}
	if !strings.Contains(w.inlet.LastError(), "connection refused") {
		t.Errorf("inlet last error = %q", w.inlet.LastError())
	}
}

func TestServerResetReachesClient(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 1))
		c.SetLinger(0)
		c.Close()
	})
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read err = %v, want reset", err)
	}
}

func TestOutletRefusesPlaintext(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) {})
	w := newWorld(t, s.addr())
	// A third node reaches the server's outlet over plain TCP: no channel.
	// The router does not let it reach the outlet at all (the outlet is
	// not a public worker): no reply, the refusal counted, no flow.
	sa, _ := w.server.Listen("127.0.0.1:0")
	intruder := router.New(router.Config{})
	defer intruder.Close()
	refused := w.server.Refused.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rt, _ := routing.ParseRoute("/tcp/"+sa.String()+"/service/outlet", nil)
	if m, err := intruder.Request(ctx, rt, portal.Append(nil, portal.Msg{Kind: portal.KindOpen, Window: 1024})); err == nil {
		pm, _ := portal.Decode(m.Payload)
		t.Fatalf("outlet answered a plaintext open over TCP: %v %q", pm.Kind, pm.Reason)
	}
	if got := w.server.Refused.Load(); got <= refused {
		t.Fatalf("server's refusals went from %d to %d, want the plaintext open counted", refused, got)
	}
	if n := len(w.sp.Outlets()[0].Flows()); n != 0 {
		t.Fatalf("%d flows opened", n)
	}
}

func TestOutletAllowList(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) {})
	w := newWorld(t, s.addr())
	if _, err := w.sp.CreateOutlet(portal.OutletConfig{Address: "strict", Target: s.addr(), Allow: []string{"Inobody"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := w.cp.Dial(ctx, append(w.ch.Route(), routing.LocalAddr("strict")), 0)
	if err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("err = %v", err)
	}
}

// A client that stops reading one flow must not slow another flow on the
// same channel, and what the stalled flow buffers stays within its window.
func TestStalledFlowDoesNotBlockOthers(t *testing.T) {
	const bulk = 64 << 20
	chunk := make([]byte, 256<<10)
	s := serve(t, func(c *net.TCPConn) {
		var cmd [1]byte
		if _, err := c.Read(cmd[:]); err != nil {
			return
		}
		switch cmd[0] {
		case 's': // stream forever until the client goes away
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		case 'b':
			for sent := 0; sent < bulk; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}
	})
	w := newWorld(t, s.addr())
	download := func() time.Duration {
		c := dialInlet(t, w)
		defer c.Close()
		c.Write([]byte("b"))
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != bulk {
			t.Fatalf("bulk: %d bytes, %v", n, err)
		}
		return time.Since(start)
	}
	alone := min(download(), download()) // a shared 2-core machine: best of two
	before := map[string]bool{}
	for _, f := range w.sp.Outlets()[0].Flows() {
		before[f.ID] = true
	}
	stalled := dialInlet(t, w)
	stalled.Write([]byte("s")) // and never read
	// Let the stalled flow fill its window and the sockets' buffers.
	// The stalled flow is the outlet's flow that was not there before.
	stalledFlow := func() (portal.FlowInfo, bool) {
		for _, f := range w.sp.Outlets()[0].Flows() {
			if !before[f.ID] {
				return f, true
			}
		}
		return portal.FlowInfo{}, false
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, ok := stalledFlow()
		if ok && f.BytesOut >= portal.Window {
			break
		}
		fl := w.sp.Outlets()[0].Flows()
		if time.Now().After(deadline) {
			t.Fatalf("stalled flow never filled its window: %+v", fl)
		}
		time.Sleep(5 * time.Millisecond)
	}
	together := min(download(), download())
	ratio := float64(alone) / float64(together)
	t.Logf("bulk alone %v, beside a stalled flow %v: %.0f%%", alone, together, 100*ratio)
	// Head-of-line blocking would stall the bulk flow outright; the bound
	// is loose because this runs in one process under -race on a shared
	// machine. The 80% figure is checked between real processes
	// (cli TestPortalStalledReader...).
	if ratio < 0.6 {
		t.Errorf("bulk transfer kept %.0f%% of its throughput beside a stalled flow, want >= 60%%", 100*ratio)
	}
	// The stalled flow is bounded: the outlet has sent at most its window
	// beyond what the client's socket buffers took.
	f, _ := stalledFlow()
	stalledOut := f.BytesOut
	var stalledIn uint64
	for _, f := range w.inlet.Flows() {
		if f.Client == stalled.LocalAddr().String() {
			stalledIn = f.BytesIn
		}
	}
	if stalledOut > stalledIn+portal.DefaultMaxFlowWindow {
		t.Errorf("outlet sent %d bytes, inlet wrote %d: more than a window in flight", stalledOut, stalledIn)
	}
	// What the outlet keeps for a resume is acknowledged as the inlet
	// receives it, written or not: about a credit step, not the window
	// the inlet holds.
	if f.Held > 1<<20+2*portal.MaxChunk {
		t.Errorf("outlet holds %d unacknowledged bytes of a stalled flow, want at most about 1 MiB", f.Held)
	}
	t.Logf("stalled flow: the outlet keeps %d unacknowledged bytes", f.Held)
}

func TestChannelLossEndsFlowsAndRecovers(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorldConfig(t, s.addr(), portal.Config{ResumeGrace: -1}, portal.Config{ResumeGrace: -1})
	c := dialInlet(t, w)
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	// Cut the path: close the client's connection to the relay.
	for _, l := range w.client.Links() {
		l.Close()
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("flow survived the loss of its channel")
	}
	t.Logf("flow ended %v after the path failed", time.Since(start).Round(time.Millisecond))
	// A new connection works again once the channel is re-established.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c2, err := net.Dial("tcp", w.inlet.Addr().String())
		if err == nil {
			c2.SetDeadline(time.Now().Add(3 * time.Second))
			c2.Write([]byte("pong"))
			_, err = io.ReadFull(c2, buf)
			c2.Close()
			if err == nil && string(buf) == "pong" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new flow 15s after the path failed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("new flows work %v after the path failed", time.Since(start).Round(time.Millisecond))
}

// TestOutletHoldsMoreFlowsThanPendingOpens keeps more idle flows open on
// one outlet than MaxPendingOpens: the bound is on connects in progress,
// not on the flows that live on.
func TestOutletHoldsMoreFlowsThanPendingOpens(t *testing.T) {
	if testing.Short() {
		t.Skip("opens over a thousand flows")
	}
	const flows = portal.MaxPendingOpens + 100
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	conns := make([]net.Conn, 0, flows)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 1)
	for i := 0; i < flows; i++ {
		c, err := net.Dial("tcp", w.inlet.Addr().String())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		// One round trip proves the flow opened.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("flow %d of %d: %v (outlet: %s)", i, flows, err, w.sp.Outlets()[0].LastError())
		}
	}
	if n := len(w.sp.Outlets()[0].Flows()); n != flows {
		t.Fatalf("outlet holds %d flows, want %d", n, flows)
	}
}

// BenchmarkFlowThroughput carries one flow's bytes inlet → secure channel →
// relay → outlet → a discarding server, all in one process on real TCP:
// framing, sealing, relay forwarding, flow credits and both sockets; with
// resumption (the default: the sender keeps what it sent until the peer's
// Credit acknowledges it) and without (--resume-grace 0), to measure what
// it costs: `go test -bench FlowThroughput -count 4 ./internal/portal`.
func BenchmarkFlowThroughput(b *testing.B) {
	b.Run("resume", func(b *testing.B) { benchFlowThroughput(b, 0) })
	b.Run("noresume", func(b *testing.B) { benchFlowThroughput(b, -1) })
}

func benchFlowThroughput(b *testing.B, grace time.Duration) {
	done := make(chan int64, 1)
	s := serve(b, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		done <- n
	})
	w := newWorldConfig(b, s.addr(), portal.Config{ResumeGrace: grace}, portal.Config{ResumeGrace: grace})
	c, err := net.Dial("tcp", w.inlet.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-done; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("server got %d bytes, want %d", n, int64(b.N)*int64(len(chunk)))
	}
	c.Close()
}

// cutPath closes the client's connections (to the relay): the channel's
// session ends and the initiator re-establishes it.
func cutPath(w *world) {
	for _, l := range w.client.Links() {
		l.Close()
	}
}

// TestFlowsResumeAfterPathLoss sends 64 MiB each way through an echo while
// the path is cut three times: every byte comes back, in order, and the
// application's connection sees no error.
func TestFlowsResumeAfterPathLoss(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	const total = 64 << 20
	want := sha256.New()
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for sent := 0; sent < total; sent += len(buf) {
			rand.Read(buf)
			want.Write(buf)
			if _, err := c.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- c.CloseWrite()
	}()
	got := sha256.New()
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	buf := make([]byte, 64<<10)
	n, cuts := 0, 0
	for n < total {
		k, err := c.Read(buf)
		got.Write(buf[:k])
		n += k
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		if cuts < 3 && n > (cuts+1)*total/4 {
			cuts++
			cutPath(w)
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("after the echo: %v, want EOF", err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the echo differs from what was sent")
	}
	_, resumes := w.cp.Resumes()
	if resumes < uint64(cuts) {
		t.Errorf("inlet flow resumed %d times for %d cuts", resumes, cuts)
	}
	t.Logf("%d MiB each way across %d path cuts, %d resumes", total>>20, cuts, resumes)
}

// TestFlowResumesAcrossRelayRestart stops the relay node and starts another
// on the same address: an interactive flow pauses and goes on.
func TestFlowResumesAcrossRelayRestart(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	ask := func(i int) error { return echoRequest(c, i) }
	for i := 0; i < 10; i++ {
		if err := ask(i); err != nil {
			t.Fatal(err)
		}
	}
	w.relayN.Close()
	n := router.New(router.Config{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := n.Listen(w.relayAddr); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	svc, _ := relay.NewService(n, relay.Config{})
	t.Cleanup(func() { svc.Close(); n.Close() })
	start := time.Now()
	if err := ask(10); err != nil {
		t.Fatalf("first request after the relay restarted: %v", err)
	}
	t.Logf("first answer %v after the relay restarted", time.Since(start).Round(time.Millisecond))
	for i := 11; i < 20; i++ {
		if err := ask(i); err != nil {
			t.Fatal(err)
		}
	}
	fs := w.inlet.Flows()
	if len(fs) != 1 || fs[0].Resumes == 0 {
		t.Fatalf("inlet flows %+v: want one, resumed", fs)
	}
}

// TestFlowEndsAfterGrace: with the relay gone for longer than the grace
// period, the flow ends with a reset.
func TestFlowEndsAfterGrace(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	cfg := portal.Config{ResumeGrace: 500 * time.Millisecond}
	w := newWorldConfig(t, s.addr(), cfg, cfg)
	c := dialInlet(t, w)
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	w.relayN.Close()
	start := time.Now()
	_, err := c.Read(buf)
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the grace: %v, want a reset", err)
	}
	if took < 400*time.Millisecond || took > 5*time.Second {
		t.Fatalf("flow ended %v after the relay went, grace 500ms", took)
	}
	t.Logf("flow reset %v after the relay went (grace 500ms)", took.Round(time.Millisecond))
}

// recorder is a hostile relay worker in the channel's path: it forwards
// everything (pushing itself on the return route, so both directions cross
// it) and keeps a copy of every message.
type recorder struct {
	n    *router.Node
	mu   sync.Mutex
	kept []*routing.Message
}

func (r *recorder) handle(m *routing.Message) error {
	out := &routing.Message{Onward: m.Onward[1:].Clone(), Return: append(routing.Route{routing.LocalAddr("evil")}, m.Return...), Payload: bytes.Clone(m.Payload)}
	if len(out.Onward) > 0 {
		r.mu.Lock()
		r.kept = append(r.kept, &routing.Message{Onward: out.Onward.Clone(), Return: out.Return.Clone(), Payload: bytes.Clone(out.Payload)})
		r.mu.Unlock()
	}
	return r.n.Send(context.Background(), out)
}

// replay sends every kept message again: to where it went, and to where the
// last message with the same first hop went (towards the server, whose
// connection to the relay stays, that is the current session's decryptor).
// It returns how many it kept.
func (r *recorder) replay() int {
	r.mu.Lock()
	kept := slices.Clone(r.kept)
	r.mu.Unlock()
	latest := map[routing.Address]routing.Route{}
	for _, m := range kept {
		latest[m.Onward[0]] = m.Onward
	}
	for _, m := range kept {
		for _, to := range []routing.Route{m.Onward, latest[m.Onward[0]]} {
			r.n.Send(context.Background(), &routing.Message{Onward: to.Clone(), Return: m.Return.Clone(), Payload: bytes.Clone(m.Payload)})
		}
	}
	return len(kept)
}

// TestHostileRelayReplaysResumes: a relay that records a flow's messages
// over three sessions (two path cuts, so two Resumes) and replays all of
// them, old Resumes included, into the current session and the old ones,
// changes nothing: the flow goes on exactly, the server's channel refuses
// every replayed message, and no flow resets.
func TestHostileRelayReplaysResumes(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	rec := &recorder{n: w.relayN}
	in := inletThrough(t, w, "evil", rec.handle)
	conn, err := net.Dial("tcp", in.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	i := 0
	ask := func() {
		t.Helper()
		if err := echoRequest(conn, i); err != nil {
			t.Fatal(err)
		}
		i++
	}
	for cut := 0; cut < 2; cut++ {
		for k := 0; k < 5; k++ {
			ask()
		}
		cutPath(w)
	}
	for k := 0; k < 5; k++ {
		ask()
	}
	if _, resumes := w.cp.Resumes(); resumes < 2 {
		t.Fatalf("%d resumes, want 2", resumes)
	}
	refused := func() (n uint64) {
		for _, m := range []*secure.Manager{w.sm, w.cm} {
			for _, c := range m.Channels() {
				n += c.Stats().Rejected
			}
		}
		return n
	}
	rejectedBefore := refused()
	n := rec.replay()
	for k := 0; k < 5; k++ {
		ask()
	}
	rejected := refused() - rejectedBefore
	if rejected == 0 {
		t.Fatal("the channels refused none of the replayed messages")
	}
	if fs := in.Flows(); len(fs) != 1 {
		t.Fatalf("inlet flows: %+v", fs)
	}
	for _, o := range w.sp.Outlets() {
		if fs := o.Flows(); len(fs) != 1 {
			t.Fatalf("outlet flows: %+v", fs)
		}
	}
	t.Logf("replayed %d recorded messages of three sessions (two Resumes among them) twice: %d refused by the channels, the flow unchanged", n, rejected)
}

// TestFlowMovesToAnotherRelay: the server registers its name at two relays,
// the client's channel has a route through each; when the relay in use
// dies, the channel moves to the other within 2 s and the flow resumes on
// it, exactly.
func TestFlowMovesToAnotherRelay(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	// A second relay, where the server registers the same name.
	r2 := router.New(router.Config{})
	ra2, err := r2.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc2, _ := relay.NewService(r2, relay.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg2, err := relay.Register(w.server, routing.Route{routing.TCPAddr(ra2.String())}, "server", w.sid, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg2.Close(); svc2.Close(); r2.Close() })
	if err := reg2.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var routes []routing.Route
	for _, a := range []string{w.relayAddr, ra2.String()} {
		rt, _ := routing.ParseRoute("/tcp/"+a+"/service/forward_to_server/service/api", nil)
		routes = append(routes, rt)
	}
	ch, err := w.cm.CreateRoutes(ctx, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ch.ListenerRoute().String(); got != routes[0].String() {
		t.Fatalf("route in use %s, want the first", got)
	}
	in, err := w.cp.CreateInlet("two", "127.0.0.1:0", append(ch.Route(), routing.LocalAddr("outlet")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", in.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	i := 0
	ask := func() time.Duration {
		t.Helper()
		start := time.Now()
		if err := echoRequest(conn, i); err != nil {
			t.Fatal(err)
		}
		i++
		return time.Since(start)
	}
	for k := 0; k < 5; k++ {
		ask()
	}
	w.relayN.Close() // the relay in use dies
	gap := ask()
	if gap > 2*time.Second {
		t.Errorf("the first answer took %v after the relay in use died, want < 2s", gap)
	}
	if got := ch.ListenerRoute().String(); got != routes[1].String() {
		t.Fatalf("route in use %s, want the second", got)
	}
	for k := 0; k < 5; k++ {
		ask()
	}
	t.Logf("relay in use killed: the channel moved to the other relay, the flow resumed; the request across it took %v", gap.Round(time.Millisecond))
}

// TestOtherIdentityCannotResumeAFlow: another identity the server trusts,
// with a channel of its own, sends Resumes (and a Reset) naming a flow that
// is not its own, at the outlet and at the flow's address: the flow stays
// bound to its peer and carries on exactly.
func TestOtherIdentityCannotResumeAFlow(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	c := dialInlet(t, w)
	i := 0
	ask := func() {
		t.Helper()
		if err := echoRequest(c, i); err != nil {
			t.Fatal(err)
		}
		i++
	}
	ask()
	flows := w.sp.Outlets()[0].Flows()
	if len(flows) != 1 {
		t.Fatalf("outlet flows %+v", flows)
	}
	victim := flows[0].ID
	mid, _ := identity.Generate(nil)
	mn := router.New(router.Config{})
	defer mn.Close()
	mm, _ := secure.NewManager(mn, secure.Config{Identity: mid, Trust: trustAll})
	defer mm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rt, _ := routing.ParseRoute("/tcp/"+w.relayAddr+"/service/forward_to_server/service/api", nil)
	mch, err := mm.Create(ctx, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	mn.Register("mallory", router.Public, func(*routing.Message) error { return nil })
	for gen := uint32(1); gen <= 3; gen++ {
		for _, to := range []string{"outlet", victim} {
			for _, pm := range []portal.Msg{
				{Kind: portal.KindResume, Gen: gen << 20, Flow: victim},
				{Kind: portal.KindResumed, Gen: gen},
				{Kind: portal.KindReset, Reason: "mallory"},
			} {
				mn.Send(ctx, &routing.Message{Onward: append(mch.Route(), routing.LocalAddr(to)), Return: routing.Route{routing.LocalAddr("mallory")}, Payload: portal.Append(nil, pm)})
			}
		}
	}
	for k := 0; k < 10; k++ {
		ask()
	}
	flows = w.sp.Outlets()[0].Flows()
	if len(flows) != 1 || flows[0].ID != victim || flows[0].Resumes != 0 || flows[0].Foreign == 0 {
		t.Fatalf("outlet flows after another identity's resumes: %+v (want the same flow, no resume, foreign messages counted)", flows)
	}
	t.Logf("%d messages of another identity dropped by the flow", flows[0].Foreign)
}

// echoRequest writes request number i on c, an echo through a flow, and
// checks that the same bytes come back.
func echoRequest(c net.Conn, i int) error {
	msg := []byte(fmt.Sprintf("request %06d", i))
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if !bytes.Equal(b, msg) {
		return fmt.Errorf("got %q, want %q", b, msg)
	}
	return nil
}

// inletThrough registers handle as worker name on the relay node, opens a
// channel to the server whose route passes through it, and returns an inlet
// (named name too) on that channel to the outlet.
func inletThrough(t *testing.T, w *world, name string, handle func(*routing.Message) error) *portal.Inlet {
	t.Helper()
	if err := w.relayN.Register(name, router.Public, handle); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rt, _ := routing.ParseRoute("/tcp/"+w.relayAddr+"/service/"+name+"/service/forward_to_server/service/api", nil)
	ch, err := w.cm.Create(ctx, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := w.cp.CreateInlet(name, "127.0.0.1:0", append(ch.Route(), routing.LocalAddr("outlet")))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// dropper is a relay worker that passes messages on, as the relay's
// forwarder does, but drops every nth one larger than 1 KiB (the Data of a
// bulk flow), up to max of them, as a relay drops what does not fit its
// queue towards a slow connection.
type dropper struct {
	n          *router.Node
	every, max int
	mu         sync.Mutex
	big        int
	dropped    int
}

func (d *dropper) handle(m *routing.Message) error {
	if len(m.Payload) > 1<<10 {
		d.mu.Lock()
		d.big++
		drop := d.big%d.every == 0 && d.dropped < d.max
		if drop {
			d.dropped++
		}
		d.mu.Unlock()
		if drop {
			return nil
		}
	}
	return passOn(d.n, "lossy", m)
}

// passOn sends m on past the relay worker at name, as the relay's
// forwarder does: the rest of its onward route, name in front of its
// return route.
func passOn(n *router.Node, name string, m *routing.Message) error {
	return n.Send(context.Background(), &routing.Message{Onward: m.Onward[1:].Clone(), Return: append(routing.Route{routing.LocalAddr(name)}, m.Return...), Payload: bytes.Clone(m.Payload)})
}

// TestFlowRepairsDroppedMessages: a relay that drops one bulk message in
// 40, both ways, costs the flow a resume each time and no byte: 16 MiB
// each way through an echo come back exactly, and the application sees no
// error. Before, the first drop reset the flow ("data out of order").
// The drops stop after 8, at about two thirds of the transfer: the loss
// of a flow's last messages, after which nothing reveals the gap, is not
// repaired (see resume.go).
func TestFlowRepairsDroppedMessages(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	d := &dropper{n: w.relayN, every: 40, max: 8}
	in := inletThrough(t, w, "lossy", d.handle)
	nc, err := net.Dial("tcp", in.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*net.TCPConn)
	const total = 16 << 20
	want := sha256.New()
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for sent := 0; sent < total; sent += len(buf) {
			rand.Read(buf)
			want.Write(buf)
			if _, err := c.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- c.CloseWrite()
	}()
	got := sha256.New()
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	n, err := io.Copy(got, c)
	if err != nil || n != total {
		t.Fatalf("echo: %d of %d bytes: %v", n, total, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the echo differs from what was sent")
	}
	d.mu.Lock()
	dropped := d.dropped
	d.mu.Unlock()
	_, resumes := w.cp.Resumes()
	if dropped == 0 || resumes == 0 {
		t.Fatalf("%d messages dropped, %d resumes: the test dropped nothing, or nothing was repaired", dropped, resumes)
	}
	t.Logf("%d MiB each way, %d messages dropped by the relay, %d resumes", total>>20, dropped, resumes)
}

// tailDropper is a relay worker that passes messages on, as the relay's
// forwarder does, counting them by direction since the last reset, and
// drops the one numbered drop in the direction up (client to server) or
// down. It cannot read them (the secure channel's), only count.
type tailDropper struct {
	n        *router.Node
	mu       sync.Mutex
	client   string // the relay's connection from the client
	up, down int
	dropUp   bool
	drop     int // -1: none
	dropped  int
}

func (d *tailDropper) reset(dropUp bool, drop int) {
	d.mu.Lock()
	d.up, d.down, d.dropUp, d.drop, d.dropped = 0, 0, dropUp, drop, 0
	d.mu.Unlock()
}

func (d *tailDropper) handle(m *routing.Message) error {
	d.mu.Lock()
	if len(m.Onward) > 1 && m.Onward[1].Value == "forward_to_server" && len(m.Return) > 0 {
		d.client = m.Return[0].Value // the channel's handshake: from the client's connection
	}
	up := len(m.Onward) > 1 && m.Onward[1].Value != d.client
	i := d.down
	if up {
		i = d.up
		d.up++
	} else {
		d.down++
	}
	drop := up == d.dropUp && i == d.drop
	if drop {
		d.dropped++
	}
	d.mu.Unlock()
	if drop {
		return nil
	}
	return passOn(d.n, "tail", m)
}

// TestFlowEndSurvivesDrops: a relay drops one of the last messages of a
// flow's life, in either direction: its last Data, its Fin, the FinAck or
// Credits after them. Each time the echo of 96 KiB comes back whole, the
// application sees its end of stream, and both sides' flows end well
// before the grace period. Before the FinAck, a lost Fin left the other
// side waiting for ever and a lost last Data met "no such flow".
func TestFlowEndSurvivesDrops(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c); c.CloseWrite() })
	const grace = 4 * time.Second
	w := newWorldConfig(t, s.addr(), portal.Config{ResumeGrace: grace}, portal.Config{ResumeGrace: grace})
	d := &tailDropper{n: w.relayN, drop: -1}
	in := inletThrough(t, w, "tail", d.handle)
	out := w.sp.Outlet("outlet")
	echo := func(what string) {
		t.Helper()
		nc, err := net.Dial("tcp", in.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c := nc.(*net.TCPConn)
		msg := make([]byte, 96<<10)
		rand.Read(msg)
		go func() { c.Write(msg); c.CloseWrite() }()
		c.SetReadDeadline(time.Now().Add(3 * grace))
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo of %d bytes: %d came back, equal %v, %v", what, len(msg), len(got), bytes.Equal(got, msg), err)
		}
		waitFor(t, grace-time.Second, what+": both flows end", func() bool {
			return len(in.Flows())+len(out.Flows()) == 0
		})
	}
	d.reset(true, -1)
	echo("no drop")
	d.mu.Lock()
	up, down := d.up, d.down
	d.mu.Unlock()
	t.Logf("one echo: %d messages up, %d down", up, down)
	for _, dir := range []bool{true, false} {
		n := down
		if dir {
			n = up
		}
		for k := 1; k <= 3 && n-k >= 1; k++ { // never the Open or the Opened
			d.reset(dir, n-k)
			what := fmt.Sprintf("dropped message %d of %d down", n-k, n)
			if dir {
				what = fmt.Sprintf("dropped message %d of %d up", n-k, n)
			}
			echo(what)
			d.mu.Lock()
			dropped, seen := d.dropped, d.down
			if dir {
				seen = d.up
			}
			d.mu.Unlock()
			if dropped == 0 && seen >= 2 {
				// This echo took fewer messages (timing): drop its
				// last-but-one instead.
				d.reset(dir, seen-2)
				what += fmt.Sprintf(", again as %d of %d", seen-2, seen)
				echo(what)
				d.mu.Lock()
				dropped = d.dropped
				d.mu.Unlock()
			}
			if dropped != 1 {
				t.Fatalf("%s: the relay dropped %d messages", what, dropped)
			}
		}
	}
}
