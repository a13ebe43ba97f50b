package portal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ockam-go/ockam/internal/routing"
)

// Flows that survive their path.
//
// A flow whose messages go through a secure channel keeps the stream bytes it
// sent until the peer says it received them (Credit carries the bytes
// received in all), so at most about a window per direction. When the
// channel's session ends (the relay restarted, the path failed), the flow
// suspends instead of resetting: fromLocal keeps reading as far as its
// credit goes but only buffers, toLocal keeps writing what was queued. The
// opener waits for its channel to be up again and sends Resume (to the
// outlet's address, naming the outlet's flow) with its receive state: a
// resume number, the bytes it received, the bytes it grants, the Data seq it
// expects and whether it got Fin. The outlet's flow checks that the Resume
// comes through a secure channel from the flow's own peer identity and that
// its number is higher than any before, rebinds to the channel it came on,
// and answers Resumed with its own state. Each side then sends again, from
// the bytes the other received, everything after them: no byte is lost,
// duplicated or reordered, and the applications' connections see a pause.
//
// A flow accepts messages only from the channel it is bound to (the first
// hop of their return route): a message from an older session, or sent by
// the opener on the new session before the outlet took its Resume, is
// dropped, and what it carried is sent again after the resume. An opener
// that sent Resume number g drops everything but Resumed g and Reset until
// that answer, so a late answer to an earlier Resume (and the Data after it)
// cannot interleave with the answer it waits for.
//
// No resume within the grace period (DefaultResumeGrace) ends the flow with a
// reset, as a flow without resumption ends at once.
//
// A relay drops what it cannot queue towards a slow connection (its queues
// are bounded), and the secure channel carries on past the gap. A flow that
// resumes repairs that too, on the same channel: a Data or Fin numbered
// beyond the one it expects is dropped, with everything after it, and the
// opener resumes (Resume names the bytes it received; the outlet sends
// again from there); an outlet that sees the gap sends Rewind, the opener's
// cue to resume, every resumeRetry until a Resume comes or the grace period
// ends. Only the flow's peer, through the channel the flow is bound to, can
// send Rewind, and it costs a round trip. A resume state waits for the
// Credits already decided to go first (their grants are in it), and no Data
// or Release follows a Resume until its answer: on the same channel, what
// was sent before the state is read before it.
//
// Lost Data at the end of a burst, which no later Data reveals, hold the
// window, and so do lost Credits: a sender out of credit whose peer
// acknowledges nothing more for stallRepair sends Probe, the seq of its next
// Data; the peer repairs a gap it reveals as above, or answers Granted, its
// grant in all, which restores lost credit.
//
// The end of a stream: a flow that resumes sends Fin with flag 1 and keeps
// the flow (lingers) until the peer answers FinAck, which it does once it
// has taken the Fin in order, so after every Data before it. No FinAck
// within stallRepair sends Fin again: a peer that lost the Fin takes it now;
// one that lost Data before it sees the gap and repairs it as above, with
// the sender's flow still there to resend; one whose FinAck was lost
// answers again. A flow that lingers for the grace period ends: quietly if
// the peer acknowledged every byte, with a reset if not.

const (
	// DefaultResumeGrace is how long a flow waits for its path to come back.
	DefaultResumeGrace = 30 * time.Second
	// resumeRetry is how often an opener sends Resume again while no answer
	// comes on a channel that is up.
	resumeRetry = time.Second
	// keepWhole is the read size from which a sent chunk is kept as it is
	// for retransmission; smaller reads are copied into a shared buffer, so
	// that an interactive flow holds its unacknowledged bytes, not a pool
	// chunk per message.
	keepWhole = 8 << 10
	// smallSeg is the most capacity a buffer that small reads share grows to.
	smallSeg = 4 << 10
)

// seg is a run of sent, unacknowledged stream bytes: b[DataHeader:], with
// room for a Data header in front. pooled is b's pool chunk, if it is one.
type seg struct {
	b      []byte
	pooled *[]byte
}

var errStale = errors.New("portal: message for a flow from a channel it is not bound to")

// claim counts one more goroutine that must end before the flow finishes;
// false if the flow has finished.
func (f *Flow) claim() bool {
	for {
		r := f.running.Load()
		if r <= 0 {
			return false
		}
		if f.running.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// keepLocked stores the n bytes read into bp for retransmission and says
// whether it kept bp itself. f.smu and f.mu are held.
func (f *Flow) keepLocked(bp *[]byte, n int) bool {
	data := (*bp)[DataHeader : DataHeader+n]
	f.tx += uint64(n)
	if k := len(f.unacked); k > 0 {
		last := &f.unacked[k-1]
		if last.pooled == nil && len(last.b)+n <= cap(last.b) {
			last.b = append(last.b, data...)
			return false
		}
	}
	if n >= keepWhole {
		f.unacked = append(f.unacked, seg{b: (*bp)[:DataHeader+n], pooled: bp})
		return true
	}
	// A new shared buffer: the bytes rounded up at first (an idle
	// interactive flow keeps what it last sent, not a buffer), then twice
	// the last one, up to smallSeg.
	room := (n + 63) &^ 63
	if k := len(f.unacked); k > 0 && f.unacked[k-1].pooled == nil {
		room = max(n, min(2*(cap(f.unacked[k-1].b)-DataHeader), smallSeg))
	}
	b := make([]byte, DataHeader, DataHeader+room)
	f.unacked = append(f.unacked, seg{b: append(b, data...)})
	return false
}

// pruneLocked drops the segments the peer has received in full. f.smu and
// f.mu are held.
func (f *Flow) pruneLocked() {
	for len(f.unacked) > 0 {
		s := f.unacked[0]
		end := f.ubase + uint64(len(s.b)-DataHeader)
		if end > f.peerRecv {
			return
		}
		if s.pooled != nil {
			chunkPool.Put(s.pooled)
		}
		f.unacked[0] = seg{}
		f.unacked = f.unacked[1:]
		f.ubase = end
	}
}

// freeUnacked drops the retransmit buffer (the flow has ended).
func (f *Flow) freeUnacked() {
	f.smu.Lock()
	f.mu.Lock()
	for _, s := range f.unacked {
		if s.pooled != nil {
			chunkPool.Put(s.pooled)
		}
	}
	f.unacked = nil
	f.mu.Unlock()
	f.smu.Unlock()
}

// pieceLocked returns the Data message (header room included) that sends the
// stream from off to the end of its segment. The header goes over bytes
// before off, which the peer has. f.smu and f.mu are held.
func (f *Flow) pieceLocked(off uint64) []byte {
	start := f.ubase
	for _, s := range f.unacked {
		n := uint64(len(s.b) - DataHeader)
		if off < start+n {
			return s.b[off-start:]
		}
		start += n
	}
	return nil
}

// sendData sends (or, while the flow is held, only keeps) the n bytes read
// into bp, then gives bp back unless it was kept.
func (f *Flow) sendData(bp *[]byte, n int) (move bool) {
	f.smu.Lock()
	f.mu.Lock()
	f.credit -= n
	f.pruneLocked()
	kept := f.keepLocked(bp, n)
	move = f.moveAfter != 0 && f.tx >= f.moveAfter
	held := f.held
	seq := f.sendSeq
	if !held {
		f.sendSeq++
	}
	f.mu.Unlock()
	if !held {
		buf := (*bp)[:DataHeader+n]
		PutDataHeader(buf, seq)
		// An error is a path that fails: the watcher suspends the flow
		// and the bytes go again after the resume.
		f.send(buf)
	}
	f.smu.Unlock()
	if !kept {
		chunkPool.Put(bp)
	}
	f.BytesOut.Add(uint64(n))
	return move
}

// sendFin sends Fin after the last Data (or, while held, leaves it to the
// resume), and keeps the flow until the peer acknowledges it.
func (f *Flow) sendFin() {
	f.smu.Lock()
	defer f.smu.Unlock()
	f.mu.Lock()
	f.finSent = true
	f.lingerLocked()
	held, seq, ack := f.held, f.sendSeq, f.lingering
	f.mu.Unlock()
	if !held {
		f.send(Append(nil, Msg{Kind: KindFin, Seq: seq, Ack: ack}))
	}
}

// lingerLocked keeps the flow, once its Fin is sent, until the peer
// acknowledges it (FinAck): a Fin or the last Data before it that a relay
// dropped are sent again, and the peer's repair finds the flow still
// there. The flow counts as running meanwhile. f.mu is held.
func (f *Flow) lingerLocked() {
	if f.lingering || f.resetErr != nil || !f.claim() {
		return
	}
	f.lingering, f.lingerSince = true, time.Now()
	if f.finTimer == nil {
		f.finTimer = time.AfterFunc(stallRepair, f.finCheck)
	} else {
		f.finTimer.Reset(stallRepair)
	}
}

// endLingerLocked ends the lingering and reports whether the flow was, in
// which case the caller calls f.exited once f.mu is released. f.mu is held.
func (f *Flow) endLingerLocked() bool {
	if !f.lingering {
		return false
	}
	f.lingering = false
	f.finTimer.Stop()
	return true
}

// finCheck runs while the flow lingers and no FinAck came for stallRepair:
// it sends Fin again (a peer that has it answers FinAck again; one missing
// Data before it sees the gap and repairs it). After the grace period the
// flow ends: quietly if the peer acknowledged every byte (only its FinAck
// went missing, or its flow ended meanwhile), else with a reset.
func (f *Flow) finCheck() {
	if !f.smu.TryLock() {
		// Retransmitting (it sends Fin itself) or sending: look again.
		f.mu.Lock()
		if f.lingering {
			f.finTimer.Reset(stallRepair)
		}
		f.mu.Unlock()
		return
	}
	defer f.smu.Unlock()
	f.mu.Lock()
	if !f.lingering || f.resetErr != nil {
		f.mu.Unlock()
		return
	}
	if time.Since(f.lingerSince) > f.grace {
		if f.peerRecv < f.tx {
			f.mu.Unlock()
			f.reset(fmt.Errorf("portal: the peer did not acknowledge the end of the stream within %v", f.grace), true)
			return
		}
		f.endLingerLocked()
		f.mu.Unlock()
		f.log.Debug("flow ends without the peer's FinAck", "flow", f.addr)
		f.exited()
		return
	}
	held, seq := f.held, f.sendSeq
	f.finTimer.Reset(stallRepair)
	f.mu.Unlock()
	if !held {
		f.Probes.Add(1)
		f.send(Append(nil, Msg{Kind: KindFin, Seq: seq, Ack: true}))
	}
}

// creditSent ends the send of a Credit counted in creditsOut.
func (f *Flow) creditSent() {
	if f.creditsOut.Add(-1) == 0 && f.creditWaiters.Load() > 0 {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	}
}

// waitCreditsSentLocked waits until every Credit decided so far has been
// handed to the channel. A resume state counts their grants: sent after it,
// on the same channel, the peer would count them twice and send beyond the
// window. f.mu is held (and released while waiting).
func (f *Flow) waitCreditsSentLocked() {
	f.creditWaiters.Add(1)
	for f.creditsOut.Load() > 0 && f.resetErr == nil {
		f.cond.Wait()
	}
	f.creditWaiters.Add(-1)
}

// stateLocked is this side's receive state for Resume or Resumed.
func (f *Flow) stateLocked(kind Kind, gen uint32) Msg {
	return Msg{Kind: kind, Gen: gen, Recv: f.rx, Granted: f.granted, Seq: f.recvSeq, Fin: f.finRecv}
}

// applyLocked takes the peer's receive state: sending restarts from the
// bytes it received. f.smu and f.mu are held.
func (f *Flow) applyLocked(p *Msg) error {
	if p.Recv < f.peerRecv || p.Recv < f.ubase || p.Recv > f.tx {
		return fmt.Errorf("portal: peer resumes from byte %d, outside [%d, %d]", p.Recv, max(f.peerRecv, f.ubase), f.tx)
	}
	if p.Granted < f.tx || p.Granted-f.tx > MaxWindow {
		return fmt.Errorf("portal: peer resumes granting %d bytes, %d sent", p.Granted, f.tx)
	}
	if p.Fin && (!f.finSent || p.Recv != f.tx) {
		return errors.New("portal: peer resumes after a Fin we did not send")
	}
	f.peerRecv = p.Recv
	f.grantedIn = f.probesOut // answers to Probes before it will not come
	f.pruneLocked()
	f.cursor = p.Recv
	f.sendSeq = p.Seq
	f.credit = int(p.Granted - f.tx)
	f.peerFin = p.Fin
	f.pingOut = false
	f.cond.Broadcast()
	return nil
}

// startRetransmit runs the retransmitter unless it runs already. f.mu is
// held.
func (f *Flow) startRetransmitLocked() {
	if f.retxRunning {
		return
	}
	if !f.claim() {
		return
	}
	f.retxRunning = true
	go f.retransmit()
}

// retransmit takes the peer's state (the outlet answers Resumed with its
// own first), sends everything the peer has not received, then Fin if the
// peer missed it, and lets fromLocal send again. It holds f.smu throughout:
// fromLocal meanwhile only buffers, and what is on the wire stays in order.
func (f *Flow) retransmit() {
	defer f.exited()
	f.smu.Lock()
	defer f.smu.Unlock()
	for {
		f.mu.Lock()
		if f.resetErr != nil {
			f.retxRunning = false
			f.mu.Unlock()
			return
		}
		if f.opener && f.awaitGen != 0 {
			// A newer Resume is going out: no Data may follow it
			// before its answer, which restarts the retransmission.
			f.retxRunning = false
			f.mu.Unlock()
			return
		}
		if p := f.pending; p != nil {
			if !f.opener && f.creditsOut.Load() > 0 {
				f.waitCreditsSentLocked() // Resumed counts their grants
				f.mu.Unlock()
				continue
			}
			f.pending = nil
			if err := f.applyLocked(p); err != nil {
				f.retxRunning = false
				f.mu.Unlock()
				f.reset(err, true)
				return
			}
			var reply []byte
			if !f.opener {
				reply = Append(nil, f.stateLocked(KindResumed, p.Gen))
			} else if credit := f.creditDueLocked(); credit > 0 {
				// What came due while suspended (creditDueLocked).
				recv := f.creditOutLocked(credit)
				reply = Append(nil, Msg{Kind: KindCredit, Credit: uint32(credit), Recv: recv})
			}
			f.mu.Unlock()
			if reply != nil {
				f.send(reply)
				if f.opener {
					f.creditSent()
				}
			}
			continue
		}
		if f.cursor < f.tx {
			b := f.pieceLocked(f.cursor)
			if b == nil {
				f.retxRunning = false
				f.mu.Unlock()
				f.reset(fmt.Errorf("portal: byte %d is not in the retransmit buffer", f.cursor), true)
				return
			}
			PutDataHeader(b, f.sendSeq)
			f.sendSeq++
			f.cursor += uint64(len(b) - DataHeader)
			f.mu.Unlock()
			f.send(b)
			continue
		}
		fin := f.finSent && !f.peerFin
		// The peer's state says it has our Fin: nothing to wait for.
		lingered := f.finSent && f.peerFin && f.endLingerLocked()
		seq, ack := f.sendSeq, f.lingering
		f.held = f.suspended
		f.retxRunning = false
		f.cond.Broadcast()
		f.mu.Unlock()
		if fin {
			f.send(Append(nil, Msg{Kind: KindFin, Seq: seq, Ack: ack}))
		}
		if lingered {
			f.exited()
		}
		f.Resumes.Add(1)
		f.portals.resumes.Add(1)
		return
	}
}

// handleResume is the outlet's side: a Resume from the flow's peer,
// through a secure channel, numbered higher than any before.
func (f *Flow) handleResume(m *routing.Message, pm Msg) error {
	if f.opener || !f.resumable || m.Peer == "" {
		f.Stale.Add(1)
		return errStale
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the channel it came on is up: Watch must not wait
	pe, err := f.path.Watch(ctx, m.Return)
	if err != nil || pe == nil {
		f.Stale.Add(1)
		return errStale
	}
	f.mu.Lock()
	if pm.Gen <= f.gen || f.resetErr != nil || f.finished {
		f.mu.Unlock()
		f.Stale.Add(1)
		return errStale
	}
	f.gen = pm.Gen
	f.remote = m.Return.Clone()
	f.repairing = false
	f.rebindLocked(pe)
	f.suspended, f.held = false, true
	f.pending = &pm
	f.startRetransmitLocked()
	f.mu.Unlock()
	f.kickWatcher()
	f.log.Debug("flow resumed by peer", "flow", f.addr, "gen", pm.Gen, "from", pm.Recv)
	return nil
}

// handleResumed is the opener's side: the answer to its latest Resume.
func (f *Flow) handleResumed(pm Msg) error {
	f.mu.Lock()
	if !f.opener || f.awaitGen == 0 || pm.Gen != f.awaitGen || f.resetErr != nil || f.finished {
		f.mu.Unlock()
		f.Stale.Add(1)
		return errStale
	}
	f.awaitGen = 0
	f.suspended, f.held = false, true
	f.rebindLocked(f.nextPath)
	f.pending = &pm
	f.startRetransmitLocked()
	f.mu.Unlock()
	f.kickWatcher()
	f.log.Debug("flow resumed", "flow", f.addr, "gen", pm.Gen, "from", pm.Recv)
	return nil
}

func (f *Flow) kickWatcher() {
	select {
	case f.rebound <- struct{}{}:
	default:
	}
}

// pathFailed is called by the path watcher (pathwatch.go) when end, a
// session the flow was bound to, has ended: a flow without resumption
// resets; one with resumption suspends, and a goroutine of its own (only
// while the outage lasts) recovers it or resets it after the grace period.
func (f *Flow) pathFailed(end <-chan struct{}) {
	if !f.resumable {
		f.reset(errors.New("portal: the path to the peer failed"), false)
		return
	}
	f.suspend(end, "its path failed")
}

// gapLocked is told that a Data or Fin numbered seq came while the flow
// expects recvSeq, and reports whether the flow repairs the gap (the
// message is dropped) rather than resets; then, if non-nil, is called once
// f.mu is released. f.mu is held.
func (f *Flow) gapLocked(seq uint32) (repair bool, then func()) {
	if !f.resumable || f.finRecv || int32(seq-f.recvSeq) <= 0 {
		return false, nil // a repeat, or the peer does not resume
	}
	f.Gaps.Add(1)
	if f.opener {
		return true, func() { f.suspend(nil, "messages from the peer were lost on the way") }
	}
	if f.repairing {
		return true, nil // asked already; the timer asks again
	}
	f.repairing, f.repairSince = true, time.Now()
	return true, f.askRewind
}

// askRewind sends Rewind, and again every resumeRetry until a Resume
// comes; after the grace period the flow resets.
func (f *Flow) askRewind() {
	f.mu.Lock()
	if !f.repairing || f.resetErr != nil || f.finished {
		f.mu.Unlock()
		return
	}
	if time.Since(f.repairSince) > f.grace {
		f.mu.Unlock()
		f.reset(fmt.Errorf("portal: the peer did not send again what was lost within %v", f.grace), true)
		return
	}
	seq := f.recvSeq
	if f.repairTimer == nil {
		f.repairTimer = time.AfterFunc(resumeRetry, f.askRewind)
	} else {
		f.repairTimer.Reset(resumeRetry)
	}
	f.mu.Unlock()
	f.log.Debug("flow asks its peer to resume: messages were lost", "flow", f.addr, "seq", seq)
	f.sendCtl(Msg{Kind: KindRewind, Seq: seq})
}

// stallRepair is how long a sender out of credit waits for the peer to
// acknowledge more of what it sent before it takes the bytes for lost.
const stallRepair = time.Second

// armStallLocked is called as fromLocal starts waiting for credit: if the
// peer acknowledges nothing more for stallRepair, stallCheck probes. Lost
// Data at the end of a burst leave the sender out of credit (the lost bytes
// hold the window) and no later Data reveals the gap to the peer. At most
// one check is pending; it measures from the bytes acknowledged when it was
// armed. f.mu is held.
func (f *Flow) armStallLocked() {
	if !f.resumable || f.stallArmed {
		return
	}
	f.stallArmed, f.stallMark = true, f.peerRecv
	if f.stallTimer == nil {
		f.stallTimer = time.AfterFunc(stallRepair, f.stallCheck)
	} else {
		f.stallTimer.Reset(stallRepair)
	}
}

// stallCheck runs stallRepair after armStallLocked. While the flow is out
// of credit it checks again every stallRepair (a Probe or its answer can be
// lost too, and a check that met a resume must not be the last); when the
// peer acknowledged nothing since the last check, it probes. The Probe goes
// under smu, behind any Data on its way, with the seq of the next Data: a
// peer that expects less lost some and resumes (or asks the opener to); one
// that expects exactly that answers Granted, its grant in all, which gives
// back credit whose Credit was lost. A peer whose reader is slow answers
// Granted with nothing new.
func (f *Flow) stallCheck() {
	f.mu.Lock()
	f.stallArmed = false
	if f.resetErr != nil || f.finished || f.credit > 0 {
		f.mu.Unlock()
		return // not stalled: fromLocal arms the next stall's check
	}
	probe := !f.held && f.peerRecv == f.stallMark
	f.armStallLocked()
	f.mu.Unlock()
	if !probe || !f.smu.TryLock() {
		return // resuming, progress, or a send under way: the next check
	}
	defer f.smu.Unlock()
	f.mu.Lock()
	if f.resetErr != nil || f.held || f.credit > 0 {
		f.mu.Unlock()
		return
	}
	seq := f.sendSeq
	f.mu.Unlock()
	f.Probes.Add(1)
	f.sendCtl(Msg{Kind: KindProbe, Seq: seq})
}

// handleProbe is the receiver's side of a stalled sender's Probe: seq is
// the sender's next Data.
func (f *Flow) handleProbe(seq uint32) {
	f.mu.Lock()
	if seq != f.recvSeq && !f.finRecv {
		repair, then := f.gapLocked(seq)
		f.mu.Unlock()
		if then != nil {
			then()
		}
		if !repair {
			f.reset(fmt.Errorf("portal: Data %d to %d were lost on the way", f.recvSeq, seq-1), true)
		}
		return
	}
	// Nothing lost this way: tell the sender our grant in all. Credits
	// decided before it go first, or the sender would count them twice.
	f.waitCreditsSentLocked()
	m := Msg{Kind: KindGranted, Granted: f.granted, Recv: f.rx}
	f.mu.Unlock()
	f.sendCtl(m)
}

// grantedLocked takes the peer's answer to a Probe: its grant in all, and
// the bytes it received. Every Credit it sent before is counted already, so
// the credit is what the grant leaves; it never shrinks here. A grant below
// what we sent is stale, not a lie: a Credit the peer sent after it, on the
// lane the peer moved to (lanes.go), came first and we spent it; it gives
// nothing (the peer's own check, bytes received ≤ granted, still holds
// everything we send to the truth). f.mu is held.
func (f *Flow) grantedLocked(granted, recv uint64) error {
	if !f.resumable {
		return errors.New("portal: unexpected granted on a flow that does not resume")
	}
	if granted > f.tx && granted-f.tx > MaxWindow || recv > f.tx || recv > granted {
		return fmt.Errorf("portal: peer grants %d bytes in all and received %d, %d sent", granted, recv, f.tx)
	}
	f.peerRecv = max(f.peerRecv, recv)
	f.grantedIn++
	f.pruneLocked()
	if c := int(granted) - int(f.tx); c > f.credit {
		f.credit = c
	}
	f.cond.Broadcast() // fromLocal waits for credit, or for a lane move
	return nil
}

// suspend stops the flow's sending and starts its recovery: after its path
// failed (end, the session it was bound to), or with end nil on the path it
// is on, when messages were lost on the way.
func (f *Flow) suspend(end <-chan struct{}, why string) {
	f.mu.Lock()
	if f.resetErr != nil || f.finished || end != nil && f.pathEnd != end || end == nil && f.suspended {
		f.mu.Unlock()
		return // ended, rebound meanwhile, or suspended already
	}
	f.suspended, f.held = true, true
	start := !f.recovering
	f.recovering = true
	select {
	case <-f.rebound:
	default:
	}
	f.mu.Unlock()
	f.Suspends.Add(1)
	f.portals.suspends.Add(1)
	f.log.Debug("flow suspended: "+why, "flow", f.addr)
	if start {
		go f.recovery()
	}
}

// recovery recovers the flow, again if its new session failed before it
// was done, or resets it.
func (f *Flow) recovery() {
	for {
		ok := f.recover()
		f.mu.Lock()
		again := ok && f.suspended && f.resetErr == nil && !f.finished
		if !again {
			f.recovering = false
		}
		f.mu.Unlock()
		if !ok {
			f.reset(fmt.Errorf("portal: the path to the peer did not come back within %v", f.grace), true)
			return
		}
		if !again {
			return
		}
	}
}

// rebindLocked moves the flow to the session end: the path watcher follows
// it there. f.mu is held.
func (f *Flow) rebindLocked(end <-chan struct{}) {
	if f.pathEnd != nil {
		f.paths.remove(f, f.pathEnd)
	}
	f.pathEnd = end
	if !f.finished {
		f.paths.add(f, end)
	}
}

func (f *Flow) isSuspended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.suspended
}

// recover waits for the flow to resume within the grace period; the opener
// sends Resume on each session of its channel until answered.
func (f *Flow) recover() bool {
	ctx, cancel := context.WithTimeout(context.Background(), f.grace)
	defer cancel()
	if !f.opener {
		for {
			select {
			case <-f.rebound:
				if !f.isSuspended() {
					return true
				}
			case <-ctx.Done():
				return !f.isSuspended()
			case <-f.done:
				return true
			}
		}
	}
	go func() {
		select {
		case <-f.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	retry := time.NewTimer(resumeRetry)
	defer retry.Stop()
	for {
		pe, err := f.path.Watch(ctx, f.remote)
		if err != nil || pe == nil {
			return false
		}
		f.mu.Lock()
		f.waitCreditsSentLocked() // the Resume counts their grants
		f.gen++
		msg := f.stateLocked(KindResume, f.gen)
		msg.Flow = f.remote[len(f.remote)-1].Value
		f.awaitGen, f.nextPath = f.gen, pe
		f.mu.Unlock()
		// Under smu: no Data goes after the Resume (a retransmission
		// stops at awaitGen, fromLocal only buffers), so the peer's
		// answer describes everything we sent on this path.
		f.smu.Lock()
		f.n.Send(ctx, &routing.Message{Onward: f.openRoute, Return: routing.Route{routing.LocalAddr(f.addr)}, Payload: Append(nil, msg), Lane: uint8(f.lane.Load())})
		f.smu.Unlock()
		retry.Reset(resumeRetry)
	wait:
		for {
			select {
			case <-f.rebound:
				if !f.isSuspended() {
					return true
				}
			case <-pe:
				break wait // the new session failed too
			case <-retry.C:
				break wait
			case <-ctx.Done():
				return !f.isSuspended()
			}
		}
	}
}
