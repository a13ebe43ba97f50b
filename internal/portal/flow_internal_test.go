package portal

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// newTestFlow is a flow of portals on a node of its own, with paths watched
// by path (nil: none), not bound to any peer yet; the test's cleanup closes
// them.
func newTestFlow(t *testing.T, path Path) (*router.Node, *Portals, *Flow) {
	t.Helper()
	n := router.New(router.Config{})
	t.Cleanup(func() { n.Close() })
	p, err := New(n, Config{Path: path, Allowed: func(string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	f, err := newFlow(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Unregister(f.addr) })
	return n, p, f
}

// TestFlowIgnoresOtherIdentities: a flow bound to one channel peer drops
// messages that another identity sends to its address, and an inlet's flow
// is bound by the first Opened it gets.
func TestFlowIgnoresOtherIdentities(t *testing.T) {
	_, _, f := newTestFlow(t, nil)
	msg := func(peer string, pm Msg) *routing.Message {
		return &routing.Message{Onward: routing.Route{routing.LocalAddr(f.addr)}, Return: routing.Route{routing.LocalAddr("x")}, Payload: Append(nil, pm), Peer: peer}
	}
	// Before Opened, nothing but Opened or Refused binds it.
	if err := f.handle(msg("Imallory", Msg{Kind: KindReset, Reason: "x"})); !errors.Is(err, errForeign) {
		t.Fatalf("reset before the flow opened: %v, want errForeign", err)
	}
	if err := f.handle(msg("Ialice", Msg{Kind: KindOpened, Window: 1024})); err != nil {
		t.Fatal(err)
	}
	for _, pm := range []Msg{{Kind: KindReset, Reason: "x"}, {Kind: KindCredit, Credit: 1 << 20}, {Kind: KindOpened, Window: 1 << 20}} {
		if err := f.handle(msg("Imallory", pm)); !errors.Is(err, errForeign) {
			t.Fatalf("%v from another identity: %v, want errForeign", pm.Kind, err)
		}
	}
	if got := f.Foreign.Load(); got != 4 {
		t.Fatalf("Foreign = %d, want 4", got)
	}
	f.mu.Lock()
	credit, reset := f.credit, f.resetErr
	f.mu.Unlock()
	if credit != 1024 || reset != nil {
		t.Fatalf("after foreign messages: credit %d, reset %v; want 1024 and none", credit, reset)
	}
}

// anyChannel is a Path on which every route starting with "chan" is a
// channel that is up.
type anyChannel struct{}

func (anyChannel) Watch(_ context.Context, r routing.Route) (<-chan struct{}, error) {
	if len(r) == 0 || !strings.HasPrefix(r[0].Value, "chan") {
		return nil, nil
	}
	return make(chan struct{}), nil
}

// TestResumeOnlyFromPeerFreshAndThroughAChannel: an outlet's flow moves to
// another channel only by a Resume from its own peer identity, through a
// secure channel, numbered higher than any before; a replayed Resume,
// another identity's, and anything else through another channel change
// nothing.
func TestResumeOnlyFromPeerFreshAndThroughAChannel(t *testing.T) {
	_, _, f := newTestFlow(t, anyChannel{})
	defer f.finish() // stops watching the path it was moved to
	f.peer, f.hasPeer, f.resumable = "Ialice", true, true
	f.remote = routing.Route{routing.LocalAddr("chanA"), routing.LocalAddr("flow_peer")}
	f.pathEnd = make(chan struct{})
	msg := func(peer, ch string, pm Msg) *routing.Message {
		return &routing.Message{Onward: routing.Route{routing.LocalAddr(f.addr)}, Return: routing.Route{routing.LocalAddr(ch), routing.LocalAddr("flow_peer")}, Payload: Append(nil, pm), Peer: peer}
	}
	resume := func(gen uint32) Msg { return Msg{Kind: KindResume, Gen: gen, Flow: f.addr} }
	bound := func() string {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.remote[0].Value
	}
	for _, c := range []struct {
		name string
		m    *routing.Message
		want error
		ch   string
	}{
		{"another identity's resume", msg("Imallory", "chanM", resume(1)), errForeign, "chanA"},
		{"a resume outside any channel", msg("", "chanM", resume(1)), errForeign, "chanA"},
		{"the peer's resume not through a channel", msg("Ialice", "tcp0", resume(1)), errStale, "chanA"},
		{"credit through another channel", msg("Ialice", "chanB", Msg{Kind: KindCredit, Credit: 1}), errStale, "chanA"},
		{"reset through another channel", msg("Ialice", "chanB", Msg{Kind: KindReset, Reason: "x"}), errStale, "chanA"},
		{"the peer's resume 1", msg("Ialice", "chanB", resume(1)), nil, "chanB"},
		{"resume 1 replayed", msg("Ialice", "chanC", resume(1)), errStale, "chanB"},
		{"an older resume", msg("Ialice", "chanC", resume(0)), errStale, "chanB"},
		{"data through the old channel", msg("Ialice", "chanA", Msg{Kind: KindData, Data: []byte("x")}), errStale, "chanB"},
		{"a resumed at an outlet", msg("Ialice", "chanB", Msg{Kind: KindResumed, Gen: 1}), errStale, "chanB"},
		{"the peer's resume 2", msg("Ialice", "chanC", resume(2)), nil, "chanC"},
	} {
		if err := f.handle(c.m); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if got := bound(); got != c.ch {
			t.Errorf("%s: bound to %s, want %s", c.name, got, c.ch)
		}
	}
	f.mu.Lock()
	reset := f.resetErr
	f.mu.Unlock()
	if reset != nil {
		t.Fatalf("flow reset: %v", reset)
	}
}

// TestSmallMessagesStartFewSamples: request/response traffic (a small Data
// per exchange) starts a BDP sample (a Ping, answered by a Pong) only once
// an eighth of the window has arrived, not with every message; bulk data
// starts one after win/8 bytes.
func TestSmallMessagesStartFewSamples(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, n   int
		wantPings int
	}{
		{"64-byte messages", 64, 10000, 64 * 10000 / (Window / sampleEvery)},
		{"full chunks", MaxChunk, 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &Flow{budget: &budget{limit: DefaultWindowBudget, maxFlow: DefaultMaxFlowWindow}, win: Window, granted: Window}
			pings := 0
			for range tc.n {
				if id, ok := f.receivedLocked(tc.size); ok {
					pings++
					f.pongedLocked(id) // the peer answers before the next Data
				}
			}
			if pings > tc.wantPings || pings == 0 {
				t.Fatalf("%d messages of %d bytes started %d samples, want 1..%d", tc.n, tc.size, pings, tc.wantPings)
			}
		})
	}
}

// TestSuspendedOpenerGrantsAfterTheAnswer: an opener writing what it had
// queued while suspended grants nothing (a Credit decided after its Resume
// state reaches an outlet that has not taken the Resume, which drops it),
// and grants what came due once it takes the answer.
func TestSuspendedOpenerGrantsAfterTheAnswer(t *testing.T) {
	n, _, f := newTestFlow(t, anyChannel{})
	sent := make(chan Msg, 4)
	if err := n.Register("peer", router.Channel, func(m *routing.Message) error {
		pm, err := Decode(m.Payload)
		if err != nil {
			t.Error(err)
		}
		sent <- pm
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f.peer, f.hasPeer, f.resumable, f.opener = "Ialice", true, true, true
	f.remote = routing.Route{routing.LocalAddr("peer")}
	f.running.Store(2) // as run does: the retransmitter claims a third
	f.mu.Lock()
	f.suspended, f.held = true, true
	f.rx = Window // received in full, written to the socket while suspended
	credit := f.wroteLocked(Window)
	granted := f.granted
	f.awaitGen, f.gen = 1, 1
	f.nextPath = make(chan struct{})
	f.mu.Unlock()
	if credit != 0 || granted != Window {
		t.Fatalf("suspended, the opener granted %d more (in all %d), want none (%d)", credit, granted, Window)
	}
	if err := f.handleResumed(Msg{Kind: KindResumed, Gen: 1, Granted: Window}); err != nil {
		t.Fatal(err)
	}
	select {
	case pm := <-sent:
		if pm.Kind != KindCredit || pm.Credit != Window || pm.Recv != Window {
			t.Fatalf("after the answer the opener sent %v credit %d recv %d, want Credit %d recv %d", pm.Kind, pm.Credit, pm.Recv, Window, Window)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Credit after the answer")
	}
	f.mu.Lock()
	granted = f.granted
	f.paths.remove(f, f.pathEnd) // the portals' Close stops the watcher
	f.mu.Unlock()
	if granted != 2*Window {
		t.Fatalf("granted %d in all after the answer, want %d", granted, 2*Window)
	}
}

// TestResetFlowFinishesWithAReset: a flow reset while both its directions
// end on their own (before reset gets to abort the socket) still ends the
// application's connection with a TCP reset, never an end of stream.
func TestResetFlowFinishesWithAReset(t *testing.T) {
	_, _, f := newTestFlow(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	local, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.c = local.(*net.TCPConn)
	f.resetErr = errors.New("portal: reset by peer: test")
	f.mu.Unlock()
	f.running.Store(1)
	f.exited() // the last direction ends: finish
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = app.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the application read %v, want a connection reset", err)
	}
}

// TestStaleGrantedGivesNothing: a Granted below the bytes sent (a Credit
// the peer sent after it, on its new lane, came first and was spent) is
// taken for its bytes received only; one granting more than any window, or
// acknowledging more than was sent, resets.
func TestStaleGrantedGivesNothing(t *testing.T) {
	_, _, f := newTestFlow(t, nil)
	f.resumable = true
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tx, f.credit = 3*Window, Window
	if err := f.grantedLocked(2*Window, 2*Window); err != nil {
		t.Fatalf("a stale Granted: %v, want it taken", err)
	}
	if f.credit != Window || f.peerRecv != 2*Window {
		t.Fatalf("after a stale Granted: credit %d, peer received %d; want %d, %d", f.credit, f.peerRecv, Window, 2*Window)
	}
	if err := f.grantedLocked(5*Window, 3*Window); err != nil || f.credit != 2*Window {
		t.Fatalf("a fresh Granted: %v, credit %d; want credit %d", err, f.credit, 2*Window)
	}
	for _, g := range [][2]uint64{{3*Window + MaxWindow + 1, 0}, {4 * Window, 3*Window + 1}, {Window, 2 * Window}} {
		if err := f.grantedLocked(g[0], g[1]); err == nil {
			t.Fatalf("Granted %d, received %d with %d sent: taken, want an error", g[0], g[1], f.tx)
		}
	}
}
