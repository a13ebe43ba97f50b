// Package portal carries TCP connections over routes: an outlet next to a
// server opens a connection per flow, an inlet next to the client accepts
// connections and opens a flow for each. Many flows share one secure channel;
// each has its own credit-based flow control, so a reader that stops never
// stalls the others and memory stays bounded whatever the peers do.
package portal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/sched"
)

const (
	// Window is the receive window each side of a flow announces at open:
	// the most stream bytes that may be in flight towards it, queued or on
	// the way. It grows with the path (window.go).
	Window = 256 << 10
	// OpenTimeout bounds opening a flow (the outlet's connect included).
	OpenTimeout = 10 * time.Second
)

// Path tells a flow when the path its messages take has failed. Watch
// returns a channel closed when the path that route starts with (a secure
// channel's current session) ends, waiting up to ctx for it to be up; a nil
// channel means the path never fails on its own.
type Path interface {
	Watch(ctx context.Context, route routing.Route) (<-chan struct{}, error)
}

// conn is what a flow needs of a local connection.
type conn interface {
	net.Conn
	CloseWrite() error
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, DataHeader+MaxChunk); return &b }}

// Flow is one carried TCP connection, on either side.
type Flow struct {
	n      *router.Node
	log    *slog.Logger
	budget *budget
	stalls *atomic.Uint64 // Portals.Stalls
	paths  *paths
	addr   string // our worker address
	// lane is the transport lane the flow's messages take (Lane of
	// routing.Message), one at a time so that they stay in order; see
	// lanes.go for which, and when it changes.
	lane atomic.Uint32
	// moveAfter is the bytes sent (tx) at which the flow moves to a lane
	// of its own; zero: it does not (any more). Under mu.
	moveAfter uint64
	moveTries int  // moves tried again (maxMoveTries); under mu
	moving    bool // a move waits for the peer's answer: no grants (lanes.go); under mu
	// probesOut counts the Probes sent (under smu and mu), grantedIn the
	// Granted answers taken (under mu): a move waits for the answer to
	// its own Probe (lanes.go).
	probesOut, grantedIn uint32

	remote  routing.Route // to the peer flow
	pathEnd <-chan struct{}

	opened chan Msg // Opened or Refused, to Dial

	mu        sync.Mutex
	cond      *sync.Cond
	c         conn
	queue     []*[]byte // chunks from the peer, DataHeader offset, waiting for the socket
	queued    int       // bytes in queue
	recvSeq   uint32
	finRecv   bool // peer sent Fin and all data before it is queued
	sendSeq   uint32
	raw       syscall.RawConn // the local connection's, for writes that must not block
	rawRead   syscall.RawConn // the same, read by fromLocal only
	writing   bool            // toLocal is writing chunks it took from queue
	resetErr  error           // set once the flow is reset
	done      chan struct{}
	closeOnce sync.Once

	// Receiving (window.go): the peer may send up to granted bytes in all.
	win         int    // receive window: Window + what was drawn from the budget
	granted     uint64 // bytes the peer may send in all (window + credits − releases)
	rx          uint64 // bytes received
	consumed    uint64 // bytes written to the local socket (or dropped at reset)
	decaying    bool   // the peer released credit: shrink to Window as bytes leave
	pingOut     bool   // a BDP sample is running
	pingID      uint32
	sample      int       // bytes received since the sample's Ping
	sinceSample int       // bytes received since the last sample ended
	pingAt      time.Time // when it was sent
	bwMax       float64   // the highest bandwidth a sample showed, bytes/s

	// Sending.
	credit     int       // bytes we may still send
	peerWindow int       // the window the peer announced: credit above it is released when idle
	idleAt     time.Time // the read deadline armed to release credit (zero: none)

	BytesIn, BytesOut atomic.Uint64
	Opened            time.Time
	Client, Target    string

	running  atomic.Int32 // directions still running
	onFinish func()       // called once the flow is over (an outlet's table)
	early    int          // bytes sent with Open, before the outlet's window

	peer    string // identifier of the channel peer the flow belongs to
	hasPeer bool   // set at an outlet when the flow is made, at an inlet by Opened
	// Foreign counts messages from anyone but the flow's peer, dropped.
	Foreign atomic.Uint64

	// Resumption (resume.go).
	resumable   bool
	path        Path
	grace       time.Duration
	opener      bool
	openRoute   routing.Route   // opener: the route it opened the flow to
	smu         sync.Mutex      // serialises Data and Fin sends; owns unacked
	held        bool            // fromLocal only buffers: suspended or retransmitting
	suspended   bool            // the path failed and the flow has not resumed
	gen         uint32          // the last Resume sent (opener) or taken (outlet)
	awaitGen    uint32          // opener: the Resume whose answer it waits for
	nextPath    <-chan struct{} // opener: the session that Resume went on
	pending     *Msg            // the peer's Resume or Resumed, for retransmit
	retxRunning bool
	tx          uint64 // stream bytes sent in all, early bytes included
	ubase       uint64 // stream offset of unacked[0]'s first byte
	unacked     []seg
	cursor      uint64 // retransmit: the next stream byte to send
	peerRecv    uint64 // the most the peer said it received
	acked       uint64 // the most we said we received
	finSent     bool
	peerFin     bool
	rebound     chan struct{} // cap 1: the flow resumed
	recovering  bool          // a goroutine waits for the path to come back
	finished    bool          // finish ran: nothing rebinds the flow
	portals     *Portals
	repairing   bool        // outlet: Data went missing, Rewind asked the opener to resume
	repairSince time.Time   // when the first Rewind went
	repairTimer *time.Timer // asks again while no Resume comes
	stallTimer  *time.Timer // checks a sender out of credit for lost bytes
	// lingering: Fin went with flag 1 and its FinAck has not come; the
	// flow holds one count of running meanwhile (it does not finish), and
	// finTimer sends Fin again (resume.go: finCheck).
	lingering   bool
	lingerSince time.Time
	finTimer    *time.Timer
	stallMark   uint64 // peerRecv when stallTimer was armed
	stallArmed  bool   // stallTimer is pending
	// creditsOut counts Credits decided (their grant is in granted) and not
	// yet handed to the channel; a resume state waits for them to go first
	// (waitCreditsSentLocked), creditWaiters for it.
	creditsOut, creditWaiters atomic.Int32
	// Gaps counts the messages from the peer that came after lost ones
	// (dropped by a relay on the way) and waited for a resume; Probes the
	// Probes sent while stalled and the Fins sent again while lingering.
	Gaps, Probes atomic.Uint64
	// Suspends and Resumes count the flow's suspensions and resumes;
	// Stale counts messages dropped as from another channel or resume.
	Suspends, Resumes, Stale atomic.Uint64
}

// errForeign is returned for a message to a flow from another identity
// than the flow's peer.
var errForeign = errors.New("portal: message for a flow from another identity than its peer")

// fromPeer reports whether a message from the channel peer peer ("" for
// this node) belongs to the flow; the first Opened binds an inlet's flow
// to the peer that answered its open.
func (f *Flow) fromPeer(peer string, opened bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.hasPeer {
		if !opened {
			return false
		}
		f.peer, f.hasPeer = peer, true
	}
	return f.peer == peer
}

func newFlow(p *Portals) (*Flow, error) {
	f := &Flow{n: p.n, log: p.log, budget: &p.budget, stalls: &p.Stalls, paths: &p.paths, opened: make(chan Msg, 1), done: make(chan struct{}), rebound: make(chan struct{}, 1), Opened: time.Now().UTC(), path: p.cfg.Path, grace: p.grace(), portals: p}
	f.cond = sync.NewCond(&f.mu)
	f.win, f.granted = Window, Window
	var err error
	f.addr, err = p.n.RegisterRandom("flow_", router.Channel, f.handle)
	if err == nil {
		err = p.n.AcceptErrors(f.addr) // handleUnreachable: the peer's flow is gone
	}
	return f, err
}

// ID is the flow's local address.
func (f *Flow) ID() string { return f.addr }

// Done is closed when the flow has ended.
func (f *Flow) Done() <-chan struct{} { return f.done }

func (f *Flow) send(payload []byte) error {
	f.mu.Lock()
	remote := f.remote // a Resume rebinds an outlet's flow
	f.mu.Unlock()
	return f.n.Send(context.Background(), &routing.Message{
		Onward:  remote,
		Return:  routing.Route{routing.LocalAddr(f.addr)},
		Payload: payload,
		Lane:    uint8(f.lane.Load()),
	})
}

// handle receives the peer's messages. It runs on the goroutine that
// delivered them (a connection's reader, after decryption): it never blocks,
// it only queues what the credits it gave allow.
func (f *Flow) handle(m *routing.Message) error {
	if m.Kind == routing.KindError {
		return f.handleUnreachable(m)
	}
	pm, err := Decode(m.Payload)
	if err != nil {
		f.reset(err, true)
		return err
	}
	// The flow's address is random, but it travels in every message:
	// anyone else who learnt it (another trusted peer) is ignored.
	if !f.fromPeer(m.Peer, pm.Kind == KindOpened || pm.Kind == KindRefused) {
		f.Foreign.Add(1)
		return errForeign
	}
	if f.resumable {
		switch pm.Kind {
		case KindResume:
			return f.handleResume(m, pm)
		case KindResumed:
			return f.handleResumed(pm)
		}
		if !f.boundTo(m, pm.Kind) {
			f.Stale.Add(1)
			return errStale
		}
	}
	switch pm.Kind {
	case KindOpened, KindRefused:
		if pm.Kind == KindOpened {
			f.mu.Lock()
			if f.remote == nil {
				f.remote = m.Return.Clone()
				f.peerWindow = int(pm.Window)
				f.credit = int(pm.Window) - f.early
				if f.credit < 0 {
					f.mu.Unlock()
					f.reset(errors.New("portal: the outlet's window is smaller than our early data"), true)
					return nil
				}
			}
			f.mu.Unlock()
		}
		select {
		case f.opened <- pm:
		default:
		}
		return nil
	case KindData:
		f.mu.Lock()
		switch {
		case f.resetErr != nil:
			f.mu.Unlock()
			return nil
		case f.awaitGen != 0:
			// Passed boundTo as the opener's Resume went out: what it
			// carried goes again after the answer.
			f.mu.Unlock()
			f.Stale.Add(1)
			return errStale
		case pm.Seq != f.recvSeq || f.finRecv:
			repair, then := f.gapLocked(pm.Seq)
			f.mu.Unlock()
			if repair {
				if then != nil {
					then()
				}
				return nil
			}
			f.reset(fmt.Errorf("portal: data out of order (got %d, want %d)", pm.Seq, f.recvSeq), true)
			return nil
		case f.rx+uint64(len(pm.Data)) > f.granted:
			f.mu.Unlock()
			f.reset(errors.New("portal: peer sent beyond its credit"), true)
			return nil
		}
		f.recvSeq++
		data := pm.Data
		ping, sendPing := f.receivedLocked(len(data))
		recv := f.rx
		credit := 0
		if f.raw != nil && !f.writing && len(f.queue) == 0 {
			// Nothing waits for the socket: write now, without blocking,
			// on this goroutine; this saves waking the writer goroutine
			// for every small message (request/response latency).
			n := writeNow(f.raw, data)
			f.BytesIn.Add(uint64(n))
			data = data[n:]
			credit = f.wroteLocked(n)
		}
		if len(data) > 0 {
			// Small chunks share a buffer: what a peer can make us hold
			// is its bytes, not a pool buffer per message.
			if k := len(f.queue); k > 0 && cap(*f.queue[k-1])-len(*f.queue[k-1]) >= len(data) {
				*f.queue[k-1] = append(*f.queue[k-1], data...)
			} else {
				bp := chunkPool.Get().(*[]byte)
				*bp = append((*bp)[:0], data...)
				f.queue = append(f.queue, bp)
			}
			f.queued += len(data)
			f.cond.Broadcast()
		}
		// Bytes received but not yet written (a slow or stalled reader)
		// are acknowledged each quarter window all the same (Credit 0),
		// so that the peer does not keep them too.
		ack := credit > 0 || f.resumable && f.rx-f.acked >= uint64(min(f.win/4, creditStep))
		if ack {
			f.acked = recv
			f.creditsOut.Add(1)
		}
		f.mu.Unlock()
		if sendPing {
			f.sendCtl(Msg{Kind: KindPing, ID: ping})
		}
		if ack {
			f.sendCtl(Msg{Kind: KindCredit, Credit: uint32(credit), Recv: recv})
			f.creditSent()
		}
	case KindPing:
		f.sendCtl(Msg{Kind: KindPong, ID: pm.ID})
	case KindPong:
		f.mu.Lock()
		credit := 0
		if f.awaitGen == 0 { // else the resume's answer resets the sample
			credit = f.pongedLocked(pm.ID)
		}
		recv := f.creditOutLocked(credit)
		f.mu.Unlock()
		f.sendCredit(credit, recv)
	case KindRelease:
		f.mu.Lock()
		ok := f.releasedLocked(int(pm.Credit))
		f.mu.Unlock()
		if !ok {
			f.reset(errors.New("portal: peer released credit it did not hold"), true)
		}
	case KindCredit:
		f.mu.Lock()
		f.credit += int(pm.Credit)
		if f.credit > MaxWindow {
			f.mu.Unlock()
			f.reset(errors.New("portal: peer granted more credit than any window"), true)
			return nil
		}
		if f.resumable {
			if f.pending != nil {
				// The peer's resume state, not yet taken, predates
				// this credit.
				f.pending.Granted += uint64(pm.Credit)
			}
			if pm.Recv > f.tx {
				f.mu.Unlock()
				f.reset(errors.New("portal: peer acknowledged bytes never sent"), true)
				return nil
			}
			f.peerRecv = max(f.peerRecv, pm.Recv)
		}
		f.armIdleLocked(true)
		f.cond.Broadcast()
		f.mu.Unlock()
	case KindFin:
		f.mu.Lock()
		if f.resetErr != nil {
			f.mu.Unlock()
			return nil
		}
		if pm.Seq != f.recvSeq {
			repair, then := f.gapLocked(pm.Seq)
			f.mu.Unlock()
			if repair {
				if then != nil {
					then()
				}
				return nil
			}
			f.reset(fmt.Errorf("portal: fin after %d chunks, got %d", pm.Seq, f.recvSeq), true)
			return nil
		}
		f.finRecv = true
		// No data comes after Fin: the window's growth goes back to the
		// budget as the queued bytes leave.
		f.shrinkLocked(f.win - max(Window, f.queued))
		f.decaying = f.win > Window
		f.cond.Broadcast()
		f.mu.Unlock()
		if pm.Ack {
			// Again for a Fin sent again: our FinAck was lost.
			f.sendCtl(Msg{Kind: KindFinAck, Seq: pm.Seq})
		}
	case KindFinAck:
		f.mu.Lock()
		end := f.finSent && pm.Seq == f.sendSeq && f.endLingerLocked()
		f.mu.Unlock()
		if end {
			f.exited()
		}
	case KindReset:
		f.reset(fmt.Errorf("portal: reset by peer: %s", pm.Reason), false)
	case KindProbe:
		f.handleProbe(pm.Seq)
	case KindGranted:
		f.mu.Lock()
		err := f.grantedLocked(pm.Granted, pm.Recv)
		f.mu.Unlock()
		if err != nil {
			f.reset(err, true)
		}
	case KindRewind:
		if !f.resumable || !f.opener {
			f.reset(fmt.Errorf("portal: unexpected %v on an open flow", pm.Kind), true)
			return nil
		}
		f.suspend(nil, "the peer lost messages of the flow")
	default:
		f.reset(fmt.Errorf("portal: unexpected %v on an open flow", pm.Kind), true)
	}
	return nil
}

// handleUnreachable takes an error reply from the peer's node: the peer's
// flow is gone. A flow that lingers for a FinAck it did not get (lost on
// the way) sent a message (its Fin again, a Pong) to a peer flow that had
// taken the first Fin and ended: it ends too, quietly, even if the Credit
// for its last bytes was lost as well. Such a peer sent its own Fin first
// (it ended once that was acknowledged); a flow without the peer's Fin, or
// that does not linger, resets: the peer's flow was reset or is gone.
func (f *Flow) handleUnreachable(m *routing.Message) error {
	u, err := routing.DecodeUnreachable(m.Payload)
	if err != nil {
		return err
	}
	if !f.fromPeer(m.Peer, false) {
		f.Foreign.Add(1)
		return errForeign
	}
	f.mu.Lock()
	// An error reply has no return route: it is bound to the channel by
	// its sender, the peer's identity, and the hop, the peer flow's
	// random address.
	if f.remote == nil || u.Hop != f.remote[len(f.remote)-1] {
		f.mu.Unlock()
		f.Stale.Add(1)
		return errStale
	}
	// Only a peer flow that ended normally has sent us its Fin: it ended
	// once its own Fin was acknowledged.
	if f.finRecv && f.endLingerLocked() {
		f.mu.Unlock()
		f.log.Debug("flow ends: the peer's has ended after our Fin", "flow", f.addr)
		f.exited()
		return nil
	}
	f.mu.Unlock()
	f.reset(errors.New("portal: the peer's flow is gone"), false)
	return nil
}

// armIdleLocked sets the local connection's read deadline when the flow
// holds credit above the peer's initial window, so that fromLocal, blocked
// in a read, wakes after IdleRelease without input and releases it. The
// deadline moves at most every quarter of that (bulk reads do not pay a
// timer each); onlyIfUnset is the credit handler's call. f.mu is held, so
// the deadline and f.idleAt always agree.
func (f *Flow) armIdleLocked(onlyIfUnset bool) {
	if f.c == nil || f.credit <= f.peerWindow || onlyIfUnset && !f.idleAt.IsZero() {
		return
	}
	now := time.Now()
	if now.Add(IdleRelease * 3 / 4).After(f.idleAt) {
		f.idleAt = now.Add(IdleRelease)
		f.c.SetReadDeadline(f.idleAt)
	}
}

// creditOutLocked counts a Credit of credit bytes (if any), decided and in
// f.granted, as not yet sent (creditsOut), and returns the bytes received
// it acknowledges. The caller sends it with sendCredit once f.mu is
// released.
func (f *Flow) creditOutLocked(credit int) (recv uint64) {
	recv = f.rx
	if credit > 0 {
		f.acked = recv
		f.creditsOut.Add(1)
	}
	return recv
}

// sendCredit sends the Credit counted by creditOutLocked.
func (f *Flow) sendCredit(credit int, recv uint64) {
	if credit > 0 {
		f.sendCtl(Msg{Kind: KindCredit, Credit: uint32(credit), Recv: recv})
		f.creditSent()
	}
}

// sendCtl sends a control message of the flow; a failure resets it.
func (f *Flow) sendCtl(m Msg) {
	f.mu.Lock()
	stop := f.resetErr != nil
	f.mu.Unlock()
	if stop {
		return
	}
	if m.Kind == KindProbe {
		f.mu.Lock()
		f.probesOut++ // the callers hold smu: in the order they go
		f.mu.Unlock()
	}
	var b [MaxCtl]byte
	if err := f.send(Append(b[:0], m)); err != nil {
		f.sendFailed(err)
	}
}

// sendFailed handles a failed send: a flow that resumes waits for its path
// watcher (what it sent goes again after the resume), another resets.
func (f *Flow) sendFailed(err error) {
	if !f.resumable {
		f.reset(fmt.Errorf("portal: sending: %w", err), false)
	}
}

// boundTo reports whether m came through the channel the flow is bound to:
// the first hop of its return route is that of the flow's route to the peer.
// The outlet's flow moves to another channel only by a Resume.
func (f *Flow) boundTo(m *routing.Message, k Kind) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.remote == nil {
		return true // an opener before Opened
	}
	if len(m.Return) == 0 || m.Return[0] != f.remote[0] {
		return false
	}
	// An opener waiting for Resumed takes nothing else but a Reset.
	return f.awaitGen == 0 || k == KindReset
}

// reset aborts the flow: the local connection is closed with a TCP reset
// and, if tell, the peer is told.
func (f *Flow) reset(err error, tell bool) {
	f.mu.Lock()
	if f.resetErr != nil {
		f.mu.Unlock()
		return
	}
	f.resetErr = err
	c := f.c
	remote := f.remote
	for _, bp := range f.queue {
		chunkPool.Put(bp)
	}
	f.queue, f.queued = nil, 0
	lingered := f.endLingerLocked()
	f.cond.Broadcast()
	f.mu.Unlock()
	if tell && remote != nil {
		f.send(Append(nil, Msg{Kind: KindReset, Reason: err.Error()}))
	}
	if c != nil {
		abort(c)
	}
	if lingered {
		f.exited()
	}
	f.log.Debug("flow reset", "flow", f.addr, "reason", err)
}

// abort closes c so that its peer sees a reset, not an orderly close.
func abort(c net.Conn) {
	Abort(c)
}

// Abort closes c with a reset where c can send one (a *net.TCPConn, a
// netstack conn: anything with SetLinger), so the application sees
// "connection reset", not an end of stream.
func Abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(sec int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// run carries the flow over c until both directions have ended or the flow
// is reset. It returns at once; Done closes when it is over.
func (f *Flow) run(c conn) {
	f.mu.Lock()
	f.c = c
	if sc, ok := c.(syscall.Conn); ok {
		f.raw, _ = sc.SyscallConn()
		f.rawRead = f.raw
	}
	reset := f.resetErr != nil
	f.mu.Unlock()
	if reset {
		abort(c)
	}
	// The last of the two directions to end finishes the flow: no
	// goroutine waits for them, and one per path watches it for all its
	// flows (pathwatch.go): an idle flow costs its two stacks.
	if f.pathEnd != nil {
		f.paths.add(f, f.pathEnd) // before the directions: finish removes it
	}
	f.running.Store(2)
	go f.fromLocal(c)
	go f.toLocal(c)
}

// exited is called by each direction as it ends.
func (f *Flow) exited() {
	if f.running.Add(-1) == 0 {
		f.finish()
	}
}

func (f *Flow) finish() {
	f.closeOnce.Do(func() {
		f.n.Unregister(f.addr)
		f.mu.Lock()
		f.finished = true
		if f.repairTimer != nil {
			f.repairTimer.Stop()
		}
		if f.stallTimer != nil {
			f.stallTimer.Stop()
		}
		if f.pathEnd != nil {
			f.paths.remove(f, f.pathEnd) // under f.mu: a resume moves it
		}
		c, reset := f.c, f.resetErr != nil
		for _, bp := range f.queue {
			chunkPool.Put(bp)
		}
		f.queue, f.queued = nil, 0
		f.shrinkLocked(f.win - Window) // the window's growth back to the budget
		f.mu.Unlock()
		f.freeUnacked()
		if c != nil && reset {
			// Both directions may end before reset gets to abort: the
			// application must see a reset, not an end of stream.
			abort(c)
		} else if c != nil {
			c.Close()
		}
		close(f.done)
		if f.onFinish != nil {
			f.onFinish()
		}
	})
}

// fromLocal reads the local connection and sends it to the peer as far as
// credits allow. An idle flow holds no buffer: it waits for the socket to be
// readable before taking one from the pool.
func (f *Flow) fromLocal(c conn) {
	defer f.exited()
	var y sched.Yielder
	for {
		f.mu.Lock()
		if f.credit <= 0 && f.resetErr == nil {
			f.stalls.Add(1) // blocked on the peer's window
			f.armStallLocked()
		}
		for f.credit <= 0 && f.resetErr == nil {
			f.cond.Wait()
		}
		if f.resetErr != nil {
			f.mu.Unlock()
			return
		}
		room := min(f.credit, MaxChunk)
		f.armIdleLocked(false)
		f.mu.Unlock()

		bp, n, err := f.readChunk(c, room)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			chunkPool.Put(bp)
			// Under smu, and not while held: a Release must not follow
			// a Resume on the wire (the answer's grant would not count it).
			f.smu.Lock()
			f.mu.Lock()
			f.idleAt = time.Time{}
			c.SetReadDeadline(f.idleAt)
			k := f.credit - f.peerWindow
			if k > 0 && !f.held {
				f.credit -= k
			} else {
				k = 0
			}
			f.mu.Unlock()
			if k > 0 {
				f.sendCtl(Msg{Kind: KindRelease, Credit: uint32(k)})
			}
			f.smu.Unlock()
			continue
		}
		buf := (*bp)[:cap(*bp)]
		if n > 0 && f.resumable {
			if f.sendData(bp, n) {
				f.moveLane()
			}
		} else if n > 0 {
			f.mu.Lock()
			seq := f.sendSeq
			f.sendSeq++
			f.credit -= n
			f.mu.Unlock()
			PutDataHeader(buf, seq)
			serr := f.send(buf[:DataHeader+n])
			chunkPool.Put(bp)
			if serr != nil {
				f.reset(fmt.Errorf("portal: sending: %w", serr), false)
				return
			}
			f.BytesOut.Add(uint64(n))
		} else {
			chunkPool.Put(bp)
		}
		// A bulk flow's reader rarely blocks: give the node's other
		// goroutines their turn (sched.Yielder).
		y.Moved(n)
		if err != nil {
			if errors.Is(err, io.EOF) && f.resumable {
				f.sendFin()
				return
			}
			if errors.Is(err, io.EOF) {
				f.mu.Lock()
				seq := f.sendSeq
				f.mu.Unlock()
				if err := f.send(Append(nil, Msg{Kind: KindFin, Seq: seq})); err != nil {
					f.reset(fmt.Errorf("portal: sending: %w", err), false)
				}
				return
			}
			f.localFailed(err)
			return
		}
	}
}

func (f *Flow) localFailed(err error) {
	f.mu.Lock()
	already := f.resetErr != nil
	f.mu.Unlock()
	if !already {
		f.reset(fmt.Errorf("portal: local connection: %w", err), true)
	}
}

// toLocal writes what the peer sent to the local connection, and gives the
// peer credit back as the bytes leave.
func (f *Flow) toLocal(c conn) {
	defer f.exited()
	var bufs net.Buffers // allocated with the first data: idle flows are many
	var chunks []*[]byte
	var y sched.Yielder
	for {
		f.mu.Lock()
		for len(f.queue) == 0 && !f.finRecv && f.resetErr == nil {
			f.cond.Wait()
		}
		if f.resetErr != nil {
			f.mu.Unlock()
			return
		}
		if len(f.queue) == 0 && f.finRecv {
			f.mu.Unlock()
			if err := c.CloseWrite(); err != nil {
				f.localFailed(err)
			}
			return
		}
		chunks = append(chunks[:0], f.queue...)
		clear(f.queue)
		f.queue = f.queue[:0]
		n := f.queued
		f.queued = 0
		f.writing = true
		f.mu.Unlock()

		bufs = bufs[:0]
		for _, bp := range chunks {
			bufs = append(bufs, *bp)
		}
		_, err := bufs.WriteTo(c)
		for _, bp := range chunks {
			chunkPool.Put(bp)
		}
		clear(chunks)
		if err != nil {
			f.localFailed(err)
			return
		}
		f.BytesIn.Add(uint64(n))
		y.Moved(n)
		f.mu.Lock()
		f.writing = false
		credit := f.wroteLocked(n)
		recv := f.rx
		if credit > 0 {
			f.acked = recv
			f.creditsOut.Add(1)
		}
		f.mu.Unlock()
		if credit > 0 {
			err := f.send(Append(nil, Msg{Kind: KindCredit, Credit: uint32(credit), Recv: recv}))
			f.creditSent()
			if err != nil {
				f.sendFailed(err)
				if !f.resumable {
					return
				}
			}
		}
	}
}

// writeNow writes what the socket takes of b at once, never waiting, and
// returns how much that was (0 on any error: the writer goroutine will meet
// it and handle it).
func writeNow(raw syscall.RawConn, b []byte) int {
	n := 0
	raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true
	})
	return n
}

// readChunk reads at most room bytes of the local connection into a pooled
// chunk, after DataHeader bytes of room. An idle flow holds no chunk: on a
// connection with a file descriptor, each non-blocking read attempt takes a
// chunk and gives it back if there was nothing to read, before waiting for
// readability. One syscall per chunk when data is ready. A connection
// without one (a netstack.Conn: the TUN's flows) that can wait for
// readability, honouring the read deadline, waits before taking a chunk.
func (f *Flow) readChunk(c net.Conn, room int) (*[]byte, int, error) {
	if f.rawRead == nil {
		if w, ok := c.(interface{ WaitReadable() error }); ok {
			if err := w.WaitReadable(); err != nil {
				return chunkPool.Get().(*[]byte), 0, err
			}
		}
		bp := chunkPool.Get().(*[]byte)
		buf := (*bp)[:cap(*bp)]
		n, err := c.Read(buf[DataHeader : DataHeader+room])
		return bp, n, err
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	err := f.rawRead.Read(func(fd uintptr) bool {
		if bp == nil {
			bp = chunkPool.Get().(*[]byte)
		}
		buf := (*bp)[:cap(*bp)]
		for {
			m, err := syscall.Read(int(fd), buf[DataHeader:DataHeader+room])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				chunkPool.Put(bp)
				bp = nil
				return false // wait for readability without a buffer
			case err != nil:
				rerr = err
			case m == 0:
				rerr = io.EOF
			default:
				n = m
			}
			return true
		}
	})
	if bp == nil {
		bp = chunkPool.Get().(*[]byte)
	}
	if rerr == nil {
		rerr = err
	}
	return bp, n, rerr
}
