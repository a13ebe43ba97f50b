package portal

import (
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// TestLaneMoveWaitsForTheDrain: a bulk flow sends Probe on lane 0 behind
// its Data and moves only once the peer says it received every byte; with
// no answer it stays on lane 0 and tries again after BulkAfter more bytes.
func TestLaneMoveWaitsForTheDrain(t *testing.T) {
	n, p, f := newTestFlow(t, anyChannel{})
	var mu sync.Mutex
	var got []routing.Message // what the flow sent its peer
	if err := n.Register("peer", router.Channel, func(m *routing.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, routing.Message{Payload: append([]byte(nil), m.Payload...), Lane: m.Lane})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f.peer, f.hasPeer, f.resumable = "Ialice", true, true
	f.remote = routing.Route{routing.LocalAddr("peer")}
	f.placeLane()
	const sent = 2 * BulkAfter
	f.mu.Lock()
	f.tx, f.sendSeq = sent, 32
	lane0, due := f.lane.Load(), f.moveAfter
	f.mu.Unlock()
	if lane0 != 0 || due != BulkAfter {
		t.Fatalf("a resumable flow starts on lane %d, to move after %d bytes; want 0, %d", lane0, due, BulkAfter)
	}
	probe := func() Msg {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 {
			t.Fatalf("the flow sent %d messages to its peer, want one Probe", len(got))
		}
		pm, err := Decode(got[0].Payload)
		if err != nil || pm.Kind != KindProbe || got[0].Lane != 0 {
			t.Fatalf("the flow sent %v on lane %d (%v), want Probe on lane 0", pm.Kind, got[0].Lane, err)
		}
		got = got[:0]
		return pm
	}

	// No answer: it stays, and tries again later.
	start := time.Now()
	f.moveLane()
	if d := time.Since(start); d < moveWait {
		t.Fatalf("moveLane returned after %v with no answer, want %v", d, moveWait)
	}
	if pm := probe(); pm.Seq != 32 {
		t.Fatalf("Probe for seq %d, want the next Data, 32", pm.Seq)
	}
	f.mu.Lock()
	lane, due, tries := f.lane.Load(), f.moveAfter, f.moveTries
	f.mu.Unlock()
	if lane != 0 || due != sent+BulkAfter || tries != 1 || p.LaneMoves.Load() != 0 {
		t.Fatalf("after no answer: lane %d, next try at %d, tries %d; want 0, %d, 1", lane, due, tries, sent+BulkAfter)
	}

	// The peer answers that it received every byte: the flow moves.
	done := make(chan struct{})
	go func() { f.moveLane(); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no Probe on the second try")
		}
		time.Sleep(time.Millisecond)
	}
	probe()
	// Meanwhile its socket took Window bytes of the peer's stream: the
	// Credit waits for the move (a grant in all on the new lane must not
	// overtake it).
	f.mu.Lock()
	f.rx = Window
	held := f.wroteLocked(Window)
	f.mu.Unlock()
	if held != 0 {
		t.Fatalf("a moving flow granted %d, want nothing until it moved", held)
	}
	answer := func(recv uint64) {
		m := &routing.Message{Onward: routing.Route{routing.LocalAddr(f.addr)}, Return: routing.Route{routing.LocalAddr("peer")},
			Payload: Append(nil, Msg{Kind: KindGranted, Granted: sent + Window, Recv: recv}), Peer: "Ialice"}
		if err := f.handle(m); err != nil {
			t.Fatal(err)
		}
	}
	answer(sent - 1) // not all of it yet
	select {
	case <-done:
		t.Fatal("the flow moved before the peer had every byte")
	case <-time.After(50 * time.Millisecond):
	}
	answer(sent)
	select {
	case <-done:
	case <-time.After(moveWait / 2):
		t.Fatal("the flow did not move once the peer had every byte")
	}
	lane = f.lane.Load()
	if lane < 1 || lane >= uint32(router.DefaultLanes) || p.LaneMoves.Load() != 1 {
		t.Fatalf("after the answer: lane %d, %d moves; want one of 1..%d, 1", lane, p.LaneMoves.Load(), router.DefaultLanes-1)
	}
	mu.Lock()
	if len(got) != 1 {
		t.Fatalf("after the move the flow sent %d messages, want the Credit that came due", len(got))
	}
	pm, err := Decode(got[0].Payload)
	if err != nil || pm.Kind != KindCredit || pm.Credit != Window || uint32(got[0].Lane) != lane {
		t.Fatalf("after the move: %v credit %d on lane %d (%v), want Credit %d on lane %d", pm.Kind, pm.Credit, got[0].Lane, err, Window, lane)
	}
	mu.Unlock()
	f.mu.Lock()
	due = f.moveAfter
	f.mu.Unlock()
	if due != 0 {
		t.Fatalf("a flow that moved would move again after %d bytes", due)
	}
}
