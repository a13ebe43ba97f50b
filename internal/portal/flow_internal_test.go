package portal

import (
	"errors"
	"testing"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// TestFlowIgnoresOtherIdentities: a flow bound to one channel peer drops
// messages that another identity sends to its address, and an inlet's flow
// is bound by the first Opened it gets.
func TestFlowIgnoresOtherIdentities(t *testing.T) {
	n := router.New(router.Config{})
	defer n.Close()
	p, err := New(n, Config{Allowed: func(string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f, err := newFlow(p)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Unregister(f.addr)
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
