package portal

import (
	"time"

	"github.com/ockam-go/ockam/internal/router"
)

// The lane a flow's messages take (routing.Message.Lane).
//
// A transport connection to a peer is a bundle of lanes (several TCP
// connections, transport.Config.Lanes), and a flow's messages go on one of
// them, so that they stay in order. Which one decides what small messages
// cost: a write and a read on every hop carry the messages of the flows
// that share a lane, so flows of small messages spread over four lanes
// cost each hop more wakeups and syscalls per message than on one (about
// 12% CPU per request, docs/ARCHITECTURE.md), while bulk flows need the
// lanes (one TCP connection carries at most its send buffer per round trip,
// and a loss halves the window of everything on it).
//
// So a flow that resumes starts on lane 0, which every such flow of the
// node shares, and a flow that has sent BulkAfter bytes moves, once, to the
// next of lanes 1..lanes-1 (round robin). Small messages
// then share no kernel send buffer with a bulk flow past its first
// BulkAfter bytes (what that saves them on a congested path is not
// measured). A move must not reorder the stream, since the peer takes Data in
// seq order and repairs a gap by resuming: the sender stops sending, sends
// Probe behind its last Data on the old lane, and moves once the peer's
// answer (Granted) says it received every byte sent, so nothing of the
// flow's stream is left on the old lane. That costs the flow a round trip,
// once. With no answer within moveWait, or a suspend meanwhile, the flow
// stays where it is and tries again after BulkAfter more bytes (up to
// maxMoveTries times); after its Fin it stays. Credit, Release, Ping and
// Pong do not depend on their order with other messages (credits are
// increments, the bytes received a maximum), but a grant in all (Granted,
// a resume state) counts the Credits its sender sent before it, and must
// not overtake one left on the old lane: the peer would count it twice and
// send beyond the window (TestFlowsResumeAfterPathLoss failed so, about 1
// run in 50 under load, when the flow then resumed). So a moving flow sends
// its Credits before the Probe, grants nothing more until it has moved (or
// given up), and moves on the peer's answer to that Probe (Granted), which
// the peer sends after reading them; then what came due goes, on the new
// lane.

const (
	// BulkAfter is how many bytes a flow sends before it moves to a lane
	// of its own.
	BulkAfter = 1 << 20
	// moveWait bounds the pause of a move: with no answer by then, the
	// flow stays on its lane.
	moveWait = time.Second
	// maxMoveTries bounds the moves tried again after one that did not
	// happen (no answer in time, a suspend meanwhile).
	maxMoveTries = 3
)

// laneCount is how many lanes the node's bundles have (Config.Lanes).
func (p *Portals) laneCount() int {
	if p.cfg.Lanes > 0 {
		return p.cfg.Lanes
	}
	return router.DefaultLanes
}

// nextLane is the next lane of the round robin over 1..lanes-1 (0 with one
// lane).
func (p *Portals) nextLane() uint32 {
	n := p.laneCount()
	if n <= 1 {
		return 0
	}
	return 1 + (p.lanes.Add(1)-1)%uint32(n-1)
}

// placeLane sets the lane of a flow just made, once f.resumable is known.
func (f *Flow) placeLane() {
	if !f.resumable {
		f.lane.Store(f.portals.nextLane())
		return
	}
	if f.portals.laneCount() > 1 {
		f.moveAfter = BulkAfter
	}
}

// moveLane moves a bulk flow to a lane of its own (see above). It runs on
// fromLocal, between two reads: no Data or Fin is sent meanwhile.
func (f *Flow) moveLane() {
	f.smu.Lock()
	f.mu.Lock()
	f.moveAfter = 0
	if f.held || f.resetErr != nil || f.finSent {
		f.mu.Unlock()
		f.smu.Unlock()
		return
	}
	// Our Credits go ahead of the Probe, and none until the move is
	// decided (creditDueLocked): none is left behind on the old lane.
	f.waitCreditsSentLocked()
	f.moving = true
	seq, sent, probe := f.sendSeq, f.tx, f.probesOut+1
	f.mu.Unlock()
	// Under smu, behind every Data sent: the peer answers it after those.
	f.sendCtl(Msg{Kind: KindProbe, Seq: seq})
	f.smu.Unlock()

	f.mu.Lock()
	late := false
	t := time.AfterFunc(moveWait, func() {
		f.mu.Lock()
		late = true
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer t.Stop()
	// The answer to this Probe (Granted, in the order of the Probes),
	// not only a Credit acknowledging every byte: that can come before
	// the peer read our Credits sent after our last Data.
	answered := func() bool { return int32(f.grantedIn-probe) >= 0 && f.peerRecv >= sent }
	for !answered() && !f.held && f.resetErr == nil && !late {
		f.cond.Wait()
	}
	switch {
	case answered() && !f.held && f.resetErr == nil:
		f.lane.Store(f.portals.nextLane())
		f.portals.LaneMoves.Add(1)
	case f.resetErr == nil && f.moveTries < maxMoveTries:
		// Try again after as many bytes more.
		f.moveTries++
		f.moveAfter = f.tx + BulkAfter
	}
	f.moving = false
	credit := f.creditDueLocked()
	recv := f.creditOutLocked(credit)
	f.mu.Unlock()
	f.sendCredit(credit, recv) // what came due meanwhile, on the new lane
}
