package portal

import (
	"sync"
	"time"
)

// Receive windows that follow the path.
//
// Each side of a flow has a receive window: the most stream bytes the peer
// may have sent that this side has not yet written to its socket. It starts
// at Window. While data flows, the receiver measures the bandwidth-delay
// product the way gRPC-Go's BDP estimator does: with the first Data after
// the previous sample it sends a Ping, which the sender answers with a Pong
// at once; the bytes that arrived between the two are what the path carried
// in one round trip. When a sample reaches 2/3 of the window (the window, not
// the path, was the limit), shows more bandwidth than any before it, and the
// application keeps up (less than half a window queued), the window doubles, up to the per-flow maximum and as far
// as the node-wide budget allows. Growth is sent as extra Credit, so a
// sender needs nothing new to use it.
//
// Shrinking when idle is the sender's move, because only the sender knows
// when credit it holds goes unused: after IdleRelease without reading
// anything from its socket, a sender holding more credit than the peer's
// initial window gives the excess back with Release. The receiver shrinks
// its window by that much and returns it to the budget. Messages of a flow
// travel in order, so every byte sent before a Release was within the old
// grant and every byte after it within the new one: the receiver's check
// (bytes received ≤ bytes granted) stays exact.
//
// Memory: a receiver queues at most its window per flow. Windows above
// Window are drawn from the budget, so the bytes queued on a node are at
// most flows × Window + budget.

const (
	// DefaultMaxFlowWindow is the default most a flow's receive window grows
	// to: 32 MiB carries 5 Gbit/s over a 50 ms round trip. Half the
	// default budget: a flow whose reader stalls after its window grew
	// holds that much, and leaves the other half to the flows that move.
	DefaultMaxFlowWindow = 32 << 20
	// DefaultWindowBudget is the default node-wide budget for receive
	// windows above Window (the sum over all flows of window − Window).
	// What a node queues for its flows is at most flows × Window + this;
	// a relay's per-connection queue (router.DefaultMaxQueueBytes, 64 MiB)
	// holds one sidecar's whole budget in flight.
	DefaultWindowBudget = 64 << 20
	// IdleRelease is how long a sender goes without reading its socket
	// before it gives back credit above the peer's initial window.
	IdleRelease = time.Second
	// DefaultEarlyWait is how long an inlet waits for the application's
	// first bytes to send them with the open (early data). A protocol where
	// the server speaks first pays it once per connection.
	DefaultEarlyWait = 2 * time.Millisecond
)

// creditStep is the most credit a receiver holds back before sending it:
// a quarter window, but no more than this on large windows, so the sender
// does not idle on a large window's last quarter.
const creditStep = 1 << 20

// budget is the node-wide pool that windows grow from.
type budget struct {
	mu         sync.Mutex
	limit, use int
	maxFlow    int
}

// take reserves up to n bytes and returns how many it got.
func (b *budget) take(n int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = max(0, min(n, b.limit-b.use))
	b.use += n
	return n
}

func (b *budget) give(n int) {
	b.mu.Lock()
	b.use -= n
	b.mu.Unlock()
}

// Used returns the bytes of window growth reserved on this node, and the
// budget.
func (p *Portals) WindowBudget() (used, limit int) {
	p.budget.mu.Lock()
	defer p.budget.mu.Unlock()
	return p.budget.use, p.budget.limit
}

// wroteLocked records n more bytes written to the local socket and returns
// the credit to send the peer now (0: not yet). f.mu is held.
func (f *Flow) wroteLocked(n int) int {
	f.consumed += uint64(n)
	if f.decaying {
		d := min(n, f.win-Window)
		f.shrinkLocked(d)
		if f.win <= Window {
			f.decaying = false
		}
	}
	return f.creditDueLocked()
}

// creditDueLocked returns the credit that keeps the peer's grant at
// consumed + win, once it is worth a message (a quarter window).
//
// Nothing is granted while the flow moves lanes (lanes.go), nor by an
// opener while suspended: a Credit decided after its Resume state reaches
// an outlet that has not taken the Resume yet, which drops it, and the
// grant would be lost until a Probe found it; what came due goes once the
// answer is taken (retransmit).
func (f *Flow) creditDueLocked() int {
	if f.moving || f.opener && f.suspended {
		return 0
	}
	due := int64(f.consumed) + int64(f.win) - int64(f.granted)
	if due <= 0 || due < int64(min(f.win/4, creditStep)) {
		return 0
	}
	f.granted += uint64(due)
	return int(due)
}

func (f *Flow) shrinkLocked(d int) {
	d = min(d, f.win-Window)
	if d <= 0 {
		return
	}
	f.win -= d
	f.budget.give(d)
}

// sampleEvery is the fraction of the window (1/sampleEvery) that must
// arrive after a BDP sample ends before the next one starts. A sample can
// only grow the window when it carried 2/3 of it, so a flow that moves less
// than this between samples (request/response traffic: a small Data each
// way per exchange) gains nothing from one; sampling at every first Data
// would cost a Ping and a Pong per message, tripling the messages of
// request/response traffic on every hop. A bulk flow starts its first
// sample after win/8 bytes.
const sampleEvery = 8

// receivedLocked accounts for n bytes of Data and says whether to send a
// Ping (a new BDP sample). f.mu is held.
func (f *Flow) receivedLocked(n int) (ping uint32, send bool) {
	f.rx += uint64(n)
	if f.pingOut {
		f.sample += n
		return 0, false
	}
	if f.win >= f.budget.maxFlow {
		return 0, false
	}
	if f.sinceSample += n; f.sinceSample < f.win/sampleEvery {
		return 0, false
	}
	f.sinceSample = 0
	f.pingOut = true
	f.pingID++
	f.pingAt = time.Now()
	f.sample = n
	return f.pingID, true
}

// ponged ends a BDP sample and returns the credit to send if the window grew.
func (f *Flow) pongedLocked(id uint32) int {
	if !f.pingOut || id != f.pingID {
		return 0
	}
	f.pingOut = false
	if f.finRecv || 3*f.sample < 2*f.win || 2*f.queued > f.win {
		return 0
	}
	// Grow only for more bandwidth than ever seen (as gRPC-Go does): once
	// the path, not the window, is the limit, a bigger window would only
	// lengthen the queues that inflate the round trip.
	rtt := max(time.Since(f.pingAt), time.Microsecond)
	bw := float64(f.sample) / rtt.Seconds()
	if bw <= f.bwMax {
		return 0
	}
	f.bwMax = bw
	want := min(2*f.win, f.budget.maxFlow) - f.win
	got := f.budget.take(want)
	if got == 0 {
		return 0
	}
	f.win += got
	f.decaying = false
	return f.creditDueLocked()
}

// releasedLocked handles the peer giving back k bytes of credit. It returns
// false if the peer gave back more than it held.
func (f *Flow) releasedLocked(k int) bool {
	if uint64(k) > f.granted-f.rx {
		return false
	}
	f.granted -= uint64(k)
	// What is still committed: bytes on the way or queued, and credit the
	// peer had not seen when it released. The window shrinks to that now
	// and to Window as those bytes are written.
	committed := int(f.granted - f.consumed)
	if committed < f.win {
		f.shrinkLocked(f.win - max(committed, Window))
	}
	f.decaying = f.win > Window
	f.bwMax = 0 // the next burst measures the path afresh
	return true
}
