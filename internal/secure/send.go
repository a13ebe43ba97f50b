package secure

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ockam-go/ockam/channel"
	"github.com/ockam-go/ockam/internal/routing"
)

// The send side of a link.
//
// Every sender of a channel (each flow's reader, connection readers sending
// credits, keepalives) seals under the link's send lock and appends the
// message to the link's queue there, so messages leave in nonce order: the
// peer's replay window never sees a nonce behind a later one because two
// senders raced between Seal and the write. The first sender to find nobody
// flushing becomes the flusher: it yields once (runtime.Gosched), so that
// the other senders woken by the same network poll add their messages, then
// sends everything queued as one batch, one writev on the connection
// (router.Node.SendAll, transport.Conn.SendBatch), and repeats until the
// queue is empty. The others return at once. Under load, many flows' small
// messages cost one syscall per wakeup instead of one each; alone, a message
// costs one yield more than a direct write.
//
// Bounded: a large message (a bulk flow's chunk) waits while the queue
// holds maxQueueBytes or maxQueueMsgs, and a flusher that sent one waits for
// room on the connection (SendQueueBytes) as transport.Conn.Send does. Small
// messages (credits, pings, keepalives, requests) never wait: a
// connection's reader sends them and must not wait on a writer.
//
// Errors: the flusher returns the first error of the batches it sent;
// senders whose messages it carried have already returned nil. A failed
// send means the connection failed, and the link goes down with it.

const (
	maxQueueBytes = 1 << 20
	maxQueueMsgs  = 64
	// smallMessage is the size up to which a sender never waits.
	smallMessage = 4 << 10
)

// sendQueue is a link's queue of sealed messages; see above.
type sendQueue struct {
	mu      sync.Mutex
	room    *sync.Cond // signalled when the flusher takes a batch
	pending []sealed   // in nonce order
	spare   []sealed   // the previous batch's slice, for reuse
	bytes   int
	sending bool              // a flusher is at work
	msgs    []routing.Message // the flusher's, to hand a batch to the router
}

// sealed is a message sealed for the peer, from bufPool, and the lane it
// goes on (routing.Message.Lane): its inner message's, so a flow's messages
// stay in order on one lane of the connection while the channel's flows
// spread over them. Per lane, messages leave in nonce order; across lanes
// they may arrive out of order, which the peer's replay window
// (channel.ReplayWindow) takes.
type sealed struct {
	bp   *[]byte
	lane uint8
}

// send seals inner (nil: a keepalive, empty routes) on link l and sends it
// to the peer's decryptor, in nonce order with every other message of the
// link.
func (c *Channel) send(l *link, inner *routing.Message) error {
	size := 2
	if inner != nil {
		size = routing.EncodedLen(inner)
	}
	if size > channel.MaxPayload {
		return fmt.Errorf("securechannel: message of %d bytes is over the %d-byte limit", size, channel.MaxPayload)
	}
	large := size > smallMessage
	var lane uint8
	if inner != nil {
		lane = inner.Lane
	}
	bp := bufPool.Get().(*[]byte)
	// The plaintext goes after room for the channel header, to be sealed
	// in place.
	buf := (*bp)[:channel.HeaderLen]
	if inner != nil {
		var err error
		if buf, err = routing.AppendMessage(buf, inner); err != nil {
			bufPool.Put(bp)
			return err
		}
	} else {
		buf = append(buf, 0, 0)
	}
	q := &l.q
	q.mu.Lock()
	if q.room == nil {
		q.room = sync.NewCond(&q.mu)
	}
	for large && q.sending && (q.bytes >= maxQueueBytes || len(q.pending) >= maxQueueMsgs) {
		q.room.Wait()
	}
	ct, err := l.sess.Seal(buf[:0], buf[channel.HeaderLen:])
	if err != nil {
		q.mu.Unlock()
		bufPool.Put(bp)
		return err
	}
	*bp = ct
	if inner != nil {
		c.sent.Add(1)
	}
	c.bytesOut.Add(uint64(len(ct)))
	q.pending = append(q.pending, sealed{bp, lane})
	q.bytes += len(ct)
	if q.sending {
		q.mu.Unlock()
		l.lastSend.Store(time.Now().UnixNano())
		return nil
	}
	q.sending = true
	q.mu.Unlock()
	runtime.Gosched() // let the senders woken with us add theirs
	err = c.flush(l, large)
	l.lastSend.Store(time.Now().UnixNano())
	return err
}

// flush sends the link's queue, batch by batch, until it is empty; it runs
// on the goroutine that set q.sending. With wait, it waits for room on the
// connection (see sendQueue).
func (c *Channel) flush(l *link, wait bool) error {
	q := &l.q
	var first error
	for {
		q.mu.Lock()
		batch := q.pending
		if len(batch) == 0 {
			q.sending = false
			q.mu.Unlock()
			return first
		}
		q.pending, q.spare = q.spare[:0], nil
		q.bytes = 0
		q.room.Broadcast()
		q.mu.Unlock()

		ms := q.msgs[:0]
		for _, m := range batch {
			ms = append(ms, routing.Message{Onward: l.remote, Return: l.ret, Payload: *m.bp, Lane: m.lane})
		}
		err := c.mgr.n.SendAll(context.Background(), ms, wait)
		clear(ms)
		q.msgs = ms[:0]
		for i, m := range batch {
			*m.bp = (*m.bp)[:0]
			bufPool.Put(m.bp)
			batch[i] = sealed{}
		}
		if err != nil && first == nil {
			first = err
		}
		q.mu.Lock()
		q.spare = batch[:0]
		q.mu.Unlock()
	}
}
