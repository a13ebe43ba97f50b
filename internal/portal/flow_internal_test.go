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
